"""SRTP sessions in user space (libsrtp through pylibsrtp): the userspace data
plane protects and unprotects media with them, a leg its own RTCP."""

from __future__ import annotations

import pylibsrtp
from aiortc.rtcdtlstransport import SRTP_PROFILES

# OpenSSL's profile name (what DTLS negotiates, SrtpKeys.profile) -> libsrtp's id
LIBSRTP_PROFILE = {p.openssl_profile.decode(): p.libsrtp_profile for p in SRTP_PROFILES}


def srtp_session(profile: str, key: bytes, inbound: bool) -> pylibsrtp.Session:
    """A session for one direction of a leg; ``key`` is master key + salt."""
    policy = pylibsrtp.Policy(
        key=key, srtp_profile=LIBSRTP_PROFILE[profile],
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound
        else pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return pylibsrtp.Session(policy)
