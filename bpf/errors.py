"""The kernel data plane's own error."""

from __future__ import annotations


class KernelDataPlaneError(RuntimeError):
    """The kernel data plane cannot do what was asked; the message says why."""
