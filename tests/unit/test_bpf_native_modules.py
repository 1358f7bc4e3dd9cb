"""The kernel plane's native modules (bpf/native/build.py) are built at setup time;
without one, the error names the command that builds it."""

from __future__ import annotations

import pytest

from sftd.bpf import libbpf


def test_libbpf_binding_is_built() -> None:
    assert libbpf.lib() is not None, "run: .venv/bin/python -m sftd.bpf.native.build"


def test_missing_libbpf_binding_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libbpf, "_binding", None)
    monkeypatch.setattr(libbpf, "_binding_error", "No module named 'sftd.bpf._libbpf'")
    with pytest.raises(libbpf.LibbpfMissing, match=r"python -m sftd\.bpf\.native\.build"):
        libbpf.lib()

