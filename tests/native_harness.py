"""Builds a small cffi module from some of the engine's C files and a test's own
harness source, for tests that call engine internals the engine's module does
not export (engine/src/sha1x.c, engine/src/aesctr.c)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest

ENGINE_SOURCES = Path(__file__).resolve().parents[1] / "engine" / "src"


def build(name: str, cdef: str, harness: str, c_files: tuple[str, ...], tmpdir: Path,
          libraries: tuple[str, ...] = ()) -> Any:
    """The loaded module ``name`` (its ``ffi`` and ``lib``); skips without a compiler."""
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler")
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(cdef)
    ffi.set_source(name, harness, sources=[str(ENGINE_SOURCES / f) for f in c_files],
                   include_dirs=[str(ENGINE_SOURCES)], extra_compile_args=["-O2"],
                   libraries=list(libraries))
    built = Path(ffi.compile(tmpdir=str(tmpdir)))
    spec = importlib.util.spec_from_file_location(name, built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
