"""A hand-written SFT offer following docs/protocol.md §4, for offline checks
of the client's SDP handling (no server needed)."""

from __future__ import annotations

ICE = "a=ice-ufrag:Abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
FP = ("a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n")


def _common(mid: str, direction: str) -> str:
    return (f"c=IN IP4 127.0.0.1\r\na=rtcp:9 IN IP4 0.0.0.0\r\n{ICE}{FP}a=setup:actpass\r\n"
            f"a=mid:{mid}\r\na={direction}\r\na=rtcp-mux\r\n")


def sample_offer(vstreams: int = 9, port: int = 40000) -> str:
    mids = ["audio", "video", "data"] + [str(i) for i in range(1, 6 + vstreams)]
    out = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=extmap-allow-mixed\r\n"
           f"a=group:BUNDLE {' '.join(mids)}\r\na=ice-options:trickle\r\n")
    out += (f"m=audio {port} UDP/TLS/RTP/SAVPF 111\r\n" + _common("audio", "sendrecv")
            + f"a=candidate:1 1 udp 2113937151 127.0.0.1 {port} typ host\r\n"
            "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
            "a=ptime:40\r\na=rtcp-fb:111 transport-cc\r\n"
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\n"
            "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
            "a=ssrc:1001 cname:sft\r\n")
    out += (f"m=video {port} UDP/TLS/RTP/SAVPF 100\r\n" + _common("video", "sendrecv")
            + "a=rtpmap:100 VP8/90000\r\na=rtcp-fb:100 transport-cc\r\na=rtcp-rsize\r\n"
            "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
            "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n"
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
            "a=extmap:5 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n"
            "a=extmap:11 http://www.webrtc.org/experiments/rtp-hdrext/generic-frame-descriptor-00\r\n"
            "a=rid:l recv\r\na=rid:h recv\r\na=simulcast:recv l;h\r\n"
            "a=ssrc:1002 cname:sft\r\n")
    out += (f"m=application {port} DTLS/SCTP 5000\r\n" + f"c=IN IP4 127.0.0.1\r\n{ICE}{FP}"
            "a=setup:actpass\r\na=mid:data\r\na=sctpmap:5000 webrtc-datachannel 16\r\n")
    for i in range(1, 6):
        out += (f"m=audio {port} UDP/TLS/RTP/SAVPF 111\r\n" + _common(str(i), "sendonly")
                + "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
                "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\n"
                f"a=ssrc:{2000 + i} cname:sft\r\n")
    for i in range(6, 6 + vstreams):
        out += (f"m=video {port} UDP/TLS/RTP/SAVPF 100\r\n" + _common(str(i), "sendonly")
                + "a=rtpmap:100 VP8/90000\r\na=rtcp-rsize\r\n"
                "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
                f"a=ssrc:{3000 + i} cname:sft\r\n")
    return out
