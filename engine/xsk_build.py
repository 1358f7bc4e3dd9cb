"""Build the AF_XDP port module (``engine/src/xsk.c``) into ``engine/_xsk*.so``
with cffi in API mode (calls release the GIL; no compiler needed at run time).

    .venv/bin/python -m sftd.engine.xsk_build      # scripts/setup.sh runs it
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent  # engine/
SRC = PACKAGE / "src"
TMPDIR = PACKAGE / "build" / "xsk"
_INT_DEFINE = re.compile(r"#define\s+\w+\s+\d+\s*$")


HEADERS = ("xsk.h", "xsk_loop.h")


def cdef_text() -> str:
    """The headers without comments and directives, except their integer #defines."""
    text = "\n".join((SRC / h).read_text() for h in HEADERS)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(ln for ln in text.splitlines()
                     if not ln.startswith("#") or _INT_DEFINE.match(ln))


def ffibuilder(absolute_paths: bool = False) -> Any:
    """setup.py builds it with source paths relative to the project root,
    build() with absolute ones (cffi compiles in its tmpdir)."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(cdef_text())
    ffi.set_source(
        "sftd.engine._xsk", '#include "xsk.h"\n#include "xsk_loop.h"',
        sources=[str(SRC / name) if absolute_paths else os.path.relpath(SRC / name)
                 for name in ("xsk.c", "xsk_loop.c")],
        include_dirs=[str(SRC)],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])
    return ffi


def build(verbose: bool = False) -> Path:
    from sftd.bpf.native.build import compile_into

    return compile_into(ffibuilder(absolute_paths=True), TMPDIR, PACKAGE, verbose)


if __name__ == "__main__":
    print(build(verbose="-v" in sys.argv))
