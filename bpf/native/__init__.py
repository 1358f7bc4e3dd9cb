"""Native helpers of the kernel data plane's controller (cffi, API mode).

``keystream()`` returns the compiled ``bpf._keystream`` module (``keystream.c``:
the AES-CM keystream fill of the mmapped ``sft_keystream`` map), or None, with a
warning logged once, when it was not built (``python -m sftd.bpf.native.build``) —
callers then use the numpy implementation in ``bpf/srtp.py``.
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import Any

log = logging.getLogger(__name__)


@functools.cache
def keystream() -> Any | None:
    try:
        return importlib.import_module("sftd.bpf._keystream")
    except ImportError as exc:
        log.warning("native keystream fill unavailable (%s): using the numpy fallback, "
                    "several µs of controller CPU per keystream entry; build it with "
                    "'python -m sftd.bpf.native.build'", exc)
        return None
