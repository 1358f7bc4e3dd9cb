"""Build the AF_XDP port module (``engine/src/xsk.c``) into ``engine/_xsk*.so``
with cffi in API mode (calls release the GIL; no compiler needed at run time).

    .venv/bin/python -m sftd.engine.xsk_build      # scripts/setup.sh runs it
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

PACKAGE = Path(__file__).resolve().parent  # engine/
SRC = PACKAGE / "src"
TMPDIR = PACKAGE / "build" / "xsk"
HEADERS = ("xsk.h", "xsk_loop.h")

if TYPE_CHECKING:
    from sftd.bpf.native import build as shared
else:  # setup.py's cffi_modules run this file before the sftd namespace exists
    shared = SimpleNamespace(**runpy.run_path(str(PACKAGE.parent / "bpf" / "native" / "build.py")))


def ffibuilder(absolute_paths: bool = False) -> Any:
    """The AF_XDP ports' cffi module (setup.py builds it, and build())."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(shared.cdef_text(*(SRC / h for h in HEADERS)))
    ffi.set_source(
        "sftd.engine._xsk", '#include "xsk.h"\n#include "xsk_loop.h"',
        sources=shared.source_paths((SRC / name for name in ("xsk.c", "xsk_loop.c")),
                                    absolute_paths),
        include_dirs=[str(SRC)],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])
    return ffi


def build(verbose: bool = False) -> Path:
    return shared.compile_into(ffibuilder(absolute_paths=True), TMPDIR, PACKAGE, verbose)


if __name__ == "__main__":
    print(build(verbose="-v" in sys.argv))
