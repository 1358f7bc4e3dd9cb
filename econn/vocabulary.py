"""Names and numbers of Wire's calling protocol (econn version 3.0)."""

from __future__ import annotations

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
MAX_VSTREAMS = 32  # video streams one CONFCONN may ask for
MAX_PROPS = 16  # props are a small object of short strings ("videosend": "true", …)
MAX_PROP_CHARS = 64
