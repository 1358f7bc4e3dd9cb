"""Wire SFT client library (aiortc) and the ``sft-probe`` command.

``WireClient`` joins a conference through an SFT the way Wire clients do
(CONFCONN, SETUP answer, data-channel CONFPART/CONFSTREAMS/PING/PROPSYNC/HANGUP),
publishes a tone and a moving VP8 pattern, and counts what it receives per
sender, resolved from each packet's CSRC through the latest CONFPART.
"""

from .client import (
    JoinError,
    JoinRejected,
    Person,
    PersonStats,
    Received,
    WireClient,
)
from .media import PatternTrack, ToneTrack

__all__ = ["JoinError", "JoinRejected", "PatternTrack", "Person", "PersonStats", "Received",
           "ToneTrack", "WireClient"]
