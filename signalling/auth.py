"""CONFCONN admission checks: client version blacklist (-b) and auth tokens (-a -s).

Token: username ``d=<expiry>.v=1.k=<key index>.s=<0|1>.r=<random>``, credential
``base64(HMAC-SHA512(secret, username))``. ``s=0`` may join but not start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from sftd import econn

_USERNAME = re.compile(r"^d=(\d+)\.v=1\.k=(\d+)\.s=([01])\.r=([a-z0-9]*)$")


@dataclass(frozen=True)
class AuthResult:
    status: int  # econn.STATUS_*
    may_start: bool = True


def make_token(secret: bytes, expiry: int, may_start: bool = True, key: int = 0,
               rand: str = "0") -> tuple[str, str]:
    """(username, credential) for a token; what the Wire backend hands out."""
    username = f"d={expiry}.v=1.k={key}.s={1 if may_start else 0}.r={rand}"
    digest = hmac.new(secret, username.encode(), hashlib.sha512).digest()
    return username, base64.b64encode(digest).decode()


def check_token(secret: bytes, username: object, credential: object,
                now: float | None = None) -> AuthResult:
    if not isinstance(username, str) or not isinstance(credential, str):
        return AuthResult(econn.STATUS_AUTH_INVALID)
    match = _USERNAME.match(username)
    if not match:
        return AuthResult(econn.STATUS_AUTH_INVALID)
    expected = base64.b64encode(
        hmac.new(secret, username.encode(), hashlib.sha512).digest()).decode()
    if not hmac.compare_digest(expected.encode(), credential.encode()):
        return AuthResult(econn.STATUS_AUTH_INVALID)
    if int(match.group(1)) < (time.time() if now is None else now):
        return AuthResult(econn.STATUS_AUTH_EXPIRED)
    return AuthResult(econn.STATUS_OK, may_start=match.group(3) == "1")


def _version(text: str) -> tuple[int, ...]:
    parts = text.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"bad version {text!r}: expected digits separated by dots")
    return tuple(int(p) for p in parts)


class Blacklist:
    """``-b "<6.2.9,6.2.11"``: ``<X`` blocks every version older than X, a bare
    X blocks exactly X. Version 0.0.x (development builds) is never blocked."""

    def __init__(self, spec: str = "") -> None:
        self.older_than: list[tuple[int, ...]] = []
        self.exact: set[tuple[int, ...]] = set()
        for item in filter(None, (s.strip() for s in spec.split(","))):
            if item.startswith("<"):
                self.older_than.append(_version(item[1:]))
            else:
                self.exact.add(_version(item))

    def blocks(self, toolver: object) -> bool:
        if not isinstance(toolver, str):
            return False
        try:
            version = _version(toolver)
        except ValueError:
            return False
        if version[:2] == (0, 0):
            return False
        return version in self.exact or any(version < limit for limit in self.older_than)
