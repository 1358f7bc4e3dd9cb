"""econn messages as JSON: decoding (checked against the typed models) and
the messages an SFT sends."""

from __future__ import annotations

import json
import re
import reprlib
from typing import Any

import msgspec

from .models import ID_FIELDS, Envelope, Incoming
from .vocabulary import (
    BACKEND_ONLY,
    CONFCONN,
    KNOWN_TYPES,
    MAX_MESSAGE_BYTES,
    SETUP,
    SFT_CLIENTID,
    SFT_USERID,
    UPDATE,
    VERSION,
)

_ENVELOPE = frozenset(("version", "type", "resp", *ID_FIELDS))


class EconnError(ValueError):
    """A message that cannot be decoded; ``str()`` says why."""


class Message(Envelope, kw_only=True):
    """One econn message: the envelope, every other field as sent (``fields``),
    and, for a decoded message, the same checked and typed (``body``)."""

    type: str
    fields: dict[str, Any] = {}
    body: Incoming | None = None

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

    def text(self) -> str:
        """The encoded message as a data-channel string."""
        return self.encode().decode()


def decode(data: bytes | str) -> Message:
    """Decode one econn JSON message; raises EconnError with the reason."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise EconnError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = msgspec.json.decode(data.encode() if isinstance(data, str) else data)
    except UnicodeEncodeError:  # str input holding "\ud800" (surrogatepass)
        raise EconnError("body is not valid JSON: a string holds a lone UTF-16 surrogate") \
            from None
    except msgspec.MsgspecError as exc:
        raise EconnError(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. "[[[[…" nested deeper than the interpreter allows
        raise EconnError("body is not valid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise EconnError("body must be a JSON object")
    version = obj.get("version")
    if version != VERSION:
        raise EconnError(f"unsupported version {reprlib.repr(version)}, expected {VERSION!r}")
    msg_type = obj.get("type")
    if msg_type is None:
        raise EconnError("missing field 'type'")
    if not isinstance(msg_type, str):
        raise EconnError(f"field 'type' must be a string, got {type(msg_type).__name__}")
    if msg_type not in KNOWN_TYPES:
        if msg_type in BACKEND_ONLY:
            raise EconnError(f"message type {msg_type} is for the Wire backend, not an SFT")
        raise EconnError(f"unknown message type {reprlib.repr(msg_type)}")
    for name in ID_FIELDS:
        if name in obj and obj[name] is None:
            obj[name] = ""
    try:
        body: Incoming = msgspec.convert(obj, Incoming)
    except msgspec.ValidationError as exc:
        raise EconnError(_explain(str(exc))) from None
    return Message(type=msg_type, sessid=body.sessid, resp=body.resp,
                   src_userid=body.src_userid, src_clientid=body.src_clientid,
                   dest_userid=body.dest_userid, dest_clientid=body.dest_clientid,
                   fields={k: v for k, v in obj.items() if k not in _ENVELOPE}, body=body)


_AT = re.compile(r"^(.*) - at `\$\.?(.*)`$")
_MISSING = re.compile(r"^Object missing required field `(.*)`$")


def _explain(problem: str) -> str:
    """msgspec's wording, in the terms of the JSON message: which field, what it
    must be. A model's own check (``__post_init__``) already says so."""
    where = ""
    if match := _AT.match(problem):
        problem, where = match.groups()
    if match := _MISSING.match(problem):
        name = f"{where}.{match.group(1)}" if where else match.group(1)
        return f"missing field '{name}'"
    problem = problem.replace("`", "")
    if not where:
        return problem
    return f"field '{where}': {problem[:1].lower()}{problem[1:]}"


def prop_is_true(props: Any, name: str) -> bool:
    """Props values are the strings "true"/"false"."""
    return isinstance(props, dict) and props.get(name) == "true"


def confconn_status(sessid: str, status: int, **extra: Any) -> Message:
    """The CONFCONN reply that rejects (status != 0) or acknowledges a join."""
    return Message(type=CONFCONN, sessid=sessid, resp=True, src_userid=SFT_USERID,
                   src_clientid=SFT_CLIENTID, fields={"status": status, **extra})


def sft_message(msg_type: str, sessid: str, resp: bool, *, dest_userid: str = "",
                dest_clientid: str = "", **fields: Any) -> Message:
    """A message from the SFT itself (answers to PING and HANGUP, CONFPART)."""
    return Message(type=msg_type, sessid=sessid, resp=resp, src_userid=SFT_USERID,
                   src_clientid=SFT_CLIENTID, dest_userid=dest_userid,
                   dest_clientid=dest_clientid, fields=fields)


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
