"""Builds the transmit benchmark's loops (``bpf/native/txpaths.c``, with the
engine's AF_XDP port code ``engine/src/xsk.c`` compiled in, read-only) into
``bpf/_txpaths*.so`` with cffi in API mode. Only benchmarks/tx_bench.py and
tests/kernel/test_tx_live.py use it.

    .venv/bin/python -m sftd.bpf.native.txpaths_build
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent  # bpf/native/
PACKAGE = HERE.parent  # bpf/
ENGINE_SRC = PACKAGE.parent / "engine" / "src"
TMPDIR = PACKAGE / "build" / "txpaths"

if TYPE_CHECKING:
    from sftd.bpf.native import build as shared
else:  # setup.py's cffi_modules run this file before the sftd namespace exists
    shared = SimpleNamespace(**runpy.run_path(str(HERE / "build.py")))


def ffibuilder(absolute_paths: bool = False) -> Any:
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(shared.cdef_text(HERE / "txpaths.h"))
    ffi.set_source(
        "sftd.bpf._txpaths", '#include "txpaths.h"',
        sources=shared.source_paths([HERE / "txpaths.c", ENGINE_SRC / "xsk.c"], absolute_paths),
        include_dirs=[str(HERE), str(PACKAGE / "include"), str(ENGINE_SRC)],
        libraries=["bpf"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])
    return ffi


def build(verbose: bool = False) -> Path:
    return shared.compile_into(ffibuilder(absolute_paths=True), TMPDIR, PACKAGE, verbose)


if __name__ == "__main__":
    print(build(verbose="-v" in sys.argv))
