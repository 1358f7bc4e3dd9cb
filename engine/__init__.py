"""The native data plane: a C SRTP fan-out engine (``engine/src``) behind the
DataPlane verbs (``engine/dataplane.py``), built with ``python -m sftd.engine.build``."""
