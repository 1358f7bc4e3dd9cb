"""econn: Wire's calling protocol envelope (version 3.0) as JSON, the format
the HTTP API, the data channel and the clients speak. Depends on nothing else
of sftd: every other package may use it.

``decode`` checks a message against the typed models (``models``) and raises
``EconnError`` naming the problem; ``Message`` keeps every field as sent and,
once decoded, the typed ``body``."""

from .message import (
    EconnError,
    Message,
    confconn_status,
    decode,
    prop_is_true,
    setup_offer,
    sft_message,
)
from .models import (
    Body,
    Confconn,
    Confpart,
    ConfpartEntry,
    Confstreams,
    Envelope,
    Hangup,
    IceServer,
    Incoming,
    Ping,
    Propsync,
    Setup,
    StreamEntry,
    Update,
)
from .vocabulary import (
    BACKEND_ONLY,
    CONFCONN,
    CONFPART,
    CONFSTREAMS,
    HANGUP,
    KNOWN_TYPES,
    MAX_MESSAGE_BYTES,
    MAX_PROP_CHARS,
    MAX_PROPS,
    MAX_VSTREAMS,
    PING,
    PROPSYNC,
    SETUP,
    SFT_CLIENTID,
    SFT_USERID,
    STATUS_AUTH_EXPIRED,
    STATUS_AUTH_INVALID,
    STATUS_BLACKLISTED,
    STATUS_JOIN_ONLY,
    STATUS_LIMIT,
    STATUS_OK,
    UPDATE,
    VERSION,
)

__all__ = [
    "BACKEND_ONLY", "CONFCONN", "CONFPART", "CONFSTREAMS", "HANGUP", "KNOWN_TYPES",
    "MAX_MESSAGE_BYTES", "MAX_PROP_CHARS", "MAX_PROPS", "MAX_VSTREAMS", "PING", "PROPSYNC",
    "SETUP", "SFT_CLIENTID", "SFT_USERID", "STATUS_AUTH_EXPIRED", "STATUS_AUTH_INVALID",
    "STATUS_BLACKLISTED", "STATUS_JOIN_ONLY", "STATUS_LIMIT", "STATUS_OK", "UPDATE", "VERSION",
    "Body", "Confconn", "Confpart", "ConfpartEntry", "Confstreams", "EconnError", "Envelope",
    "Hangup", "IceServer", "Incoming", "Message", "Ping", "Propsync", "Setup", "StreamEntry",
    "Update",
    "confconn_status", "decode", "prop_is_true", "setup_offer", "sft_message",
]
