"""Native parts of sftd (C through cffi, API mode): the native data plane, a C
SRTP fan-out engine (``engine/src``) behind the DataPlane verbs
(``engine/dataplane.py``, built with ``python -m sftd.engine.build``), and
AF_XDP ports (``engine/xsk.py``, built with ``python -m sftd.engine.xsk_build``)."""
