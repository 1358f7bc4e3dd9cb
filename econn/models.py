"""Typed econn messages: one Struct per message type an SFT receives, a
tagged union on ``type``. What each type must carry is said here and nowhere
else; fields not named here pass through untouched (Wire's clients send more
than an SFT reads)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from . import vocabulary as names

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
PropText = Annotated[str, msgspec.Meta(max_length=names.MAX_PROP_CHARS)]
Props = Annotated[dict[PropText, PropText], msgspec.Meta(max_length=names.MAX_PROPS)]


ID_FIELDS = ("sessid", "src_userid", "src_clientid", "dest_userid", "dest_clientid")


class Envelope(msgspec.Struct, kw_only=True):
    """What every message has: ``sessid`` must be present, ids may be absent
    (decode() reads a null id as "")."""

    sessid: str
    resp: bool
    src_userid: str = ""
    src_clientid: str = ""
    dest_userid: str = ""
    dest_clientid: str = ""


class Body(Envelope, tag_field="type", kw_only=True):
    """A received message, checked: the subclass named by its ``type``."""


class IceServer(msgspec.Struct):
    urls: str | list[str] = []
    username: str | None = None
    credential: str | None = None


class Confconn(Body, tag=names.CONFCONN, kw_only=True):
    vstreams: int = 0
    update: bool = False  # true: the client rejoins (ICE restart or new connection)
    toolver: str | None = None
    username: str | None = None  # token (-a)
    credential: str | None = None
    sft_url: str | None = None
    ice_servers: list[IceServer] = []

    def __post_init__(self) -> None:
        if not 0 <= self.vstreams <= names.MAX_VSTREAMS:
            raise ValueError(f"vstreams must be an integer 0–{names.MAX_VSTREAMS}")
        if not self.resp and not (self.src_userid and self.src_clientid):
            raise ValueError("CONFCONN needs src_userid and src_clientid")


class Setup(Body, tag=names.SETUP, kw_only=True):
    sdp: NonEmptyStr
    props: dict[str, Any]

    def short_props(self) -> dict[str, str] | None:
        """The props if they are what PROPSYNC may carry, else None (the
        answer still counts)."""
        try:
            return msgspec.convert(self.props, Props)
        except msgspec.ValidationError:
            return None


class Update(Setup, tag=names.UPDATE, kw_only=True):
    pass


class ConfpartEntry(msgspec.Struct):
    userid: str
    clientid: str
    authorized: bool = False


class Confpart(Body, tag=names.CONFPART, kw_only=True):
    participants: list[ConfpartEntry] = []


class StreamEntry(msgspec.Struct):
    userid: str
    clientid: str | None = None  # absent: any client of the user
    quality: int = 0

    @property
    def layer_wanted(self) -> int:
        """0 (any), 1 (low) or 2 (high); other numbers read as 0."""
        return self.quality if self.quality in (0, 1, 2) else 0


class Confstreams(Body, tag=names.CONFSTREAMS, kw_only=True):
    mode: Literal["list", "level"] = "list"
    streams: list[StreamEntry] | None = None


class Propsync(Body, tag=names.PROPSYNC, kw_only=True):
    props: Props


class Ping(Body, tag=names.PING, kw_only=True):
    pass


class Hangup(Body, tag=names.HANGUP, kw_only=True):
    pass


Incoming = Confconn | Setup | Update | Confpart | Confstreams | Propsync | Ping | Hangup
