"""econn messages: Wire's calling protocol envelope (version 3.0), as JSON.

Used by the HTTP API, the data channel and the client. Decoding is strict about
what sftd requires (``version``, ``type``, ``sessid``, ``resp``; ``sdp`` and
``props`` on SETUP/UPDATE) and raises ``EconnError`` with a message naming the
problem; everything else is passed through as the ``fields`` dict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

VERSION = "3.0"

CONFCONN = "CONFCONN"
SETUP = "SETUP"
UPDATE = "UPDATE"
CONFPART = "CONFPART"
CONFSTREAMS = "CONFSTREAMS"
PROPSYNC = "PROPSYNC"
PING = "PING"
HANGUP = "HANGUP"
# Types that go through the Wire backend only and never reach an SFT.
BACKEND_ONLY = frozenset({"CONFSTART", "CONFCHECK", "CONFKEY", "CONFEND", "REJECT"})
KNOWN_TYPES = frozenset({CONFCONN, SETUP, UPDATE, CONFPART, CONFSTREAMS, PROPSYNC, PING, HANGUP})

# CONFCONN status codes (docs/protocol.md §2).
STATUS_OK = 0
STATUS_BLACKLISTED = 1
STATUS_AUTH_INVALID = 2
STATUS_AUTH_EXPIRED = 3
STATUS_LIMIT = 4
STATUS_JOIN_ONLY = 5

SFT_USERID = "sft"
SFT_CLIENTID = "sft"

MAX_MESSAGE_BYTES = 256 * 1024


class EconnError(ValueError):
    """A message that cannot be decoded; ``str()`` says why."""


@dataclass
class Message:
    type: str
    sessid: str
    resp: bool
    src_userid: str = ""
    src_clientid: str = ""
    dest_userid: str = ""
    dest_clientid: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": VERSION, "type": self.type, "sessid": self.sessid}
        for name in ("src_userid", "src_clientid", "dest_userid", "dest_clientid"):
            value = getattr(self, name)
            if value:
                out[name] = value
        out["resp"] = self.resp
        out.update(self.fields)
        return out

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


def _string(obj: dict[str, Any], key: str, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise EconnError(f"missing field '{key}'")
        return ""
    if not isinstance(value, str):
        raise EconnError(f"field '{key}' must be a string, got {type(value).__name__}")
    return value


def decode(data: bytes | str) -> Message:
    """Decode one econn JSON message; raises EconnError with the reason."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise EconnError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EconnError(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. "[[[[…" nested deeper than the interpreter allows
        raise EconnError("body is not valid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise EconnError("body must be a JSON object")
    try:  # "\ud800" escapes (or surrogatepass input) give strings no UTF-8 can carry
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise EconnError("body is not valid JSON: a string holds a lone UTF-16 surrogate") \
            from None
    except RecursionError:
        raise EconnError("body is not valid JSON: nested too deeply") from None
    version = obj.get("version")
    if version != VERSION:
        raise EconnError(f"unsupported version {version!r}, expected {VERSION!r}")
    msg_type = _string(obj, "type", required=True)
    if msg_type not in KNOWN_TYPES:
        if msg_type in BACKEND_ONLY:
            raise EconnError(f"message type {msg_type} is for the Wire backend, not an SFT")
        raise EconnError(f"unknown message type {msg_type!r}")
    if "sessid" not in obj:
        raise EconnError("missing field 'sessid'")
    sessid = _string(obj, "sessid")
    resp = obj.get("resp")
    if not isinstance(resp, bool):
        raise EconnError("missing or non-boolean field 'resp'")
    msg = Message(
        type=msg_type,
        sessid=sessid,
        resp=resp,
        src_userid=_string(obj, "src_userid"),
        src_clientid=_string(obj, "src_clientid"),
        dest_userid=_string(obj, "dest_userid"),
        dest_clientid=_string(obj, "dest_clientid"),
        fields={k: v for k, v in obj.items() if k not in _ENVELOPE},
    )
    if msg_type in (SETUP, UPDATE):
        if not isinstance(obj.get("sdp"), str) or not obj["sdp"]:
            raise EconnError(f"{msg_type} needs a non-empty string 'sdp'")
        props = obj.get("props")
        if not isinstance(props, dict):
            raise EconnError(f"{msg_type} needs an object 'props'")
    return msg


_ENVELOPE = frozenset(
    {"version", "type", "sessid", "resp", "src_userid", "src_clientid", "dest_userid",
     "dest_clientid"}
)


def prop_is_true(props: Any, name: str) -> bool:
    """Props values are the strings "true"/"false"."""
    return isinstance(props, dict) and props.get(name) == "true"


def confconn_status(sessid: str, status: int, **extra: Any) -> Message:
    """The CONFCONN reply that rejects (status != 0) or acknowledges a join."""
    return Message(
        type=CONFCONN,
        sessid=sessid,
        resp=True,
        src_userid=SFT_USERID,
        src_clientid=SFT_CLIENTID,
        fields={"status": status, **extra},
    )


def setup_offer(sessid: str, sdp: str, url: str, dest_userid: str = "",
                dest_clientid: str = "", update: bool = False) -> Message:
    """The SFT's offer: SETUP, or UPDATE when the client asked with
    CONFCONN ``update:true`` (its engine then expects an UPDATE)."""
    return Message(
        type=UPDATE if update else SETUP,
        sessid=sessid,
        resp=False,
        src_userid=SFT_USERID,
        src_clientid=SFT_CLIENTID,
        dest_userid=dest_userid,
        dest_clientid=dest_clientid,
        fields={"sdp": sdp, "props": {"videosend": "true", "screensend": "false",
                                      "audiocbr": "false"}, "url": url},
    )
