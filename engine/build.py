"""Build the native SRTP fan-out engine (``engine/src/*.c``) into
``engine/_engine*.so`` with cffi (API mode: calls release the GIL), linked to
OpenSSL's libcrypto (``libssl-dev`` at build time, ``libssl3`` at run time).

    .venv/bin/python -m sftd.engine.build      # or: python engine/build.py
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent  # engine/
SOURCES = HERE / "src"
TMPDIR = HERE / "build"
C_FILES = ("engine.c", "srtp.c", "sha1x.c", "aesctr.c", "io_udp.c", "io_xdp.c", "xsk.c", "twcc.c")

if TYPE_CHECKING:
    from sftd.bpf.native import build as shared
else:  # setup.py's cffi_modules run this file before the sftd namespace exists
    shared = SimpleNamespace(**runpy.run_path(str(HERE.parent / "bpf" / "native" / "build.py")))


def ffibuilder(absolute_paths: bool = False) -> Any:
    """The engine's cffi module (setup.py builds it, and build())."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(shared.cdef_text(SOURCES / "engine.h", SOURCES / "twcc.h"))
    ffi.set_source(
        "sftd.engine._engine", '#include "engine.h"\n#include "twcc.h"',
        sources=shared.source_paths((SOURCES / name for name in C_FILES), absolute_paths),
        include_dirs=[str(SOURCES)],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                            "-fno-strict-aliasing"],
        libraries=["crypto", "pthread"])
    return ffi


def build(verbose: bool = False) -> Path:
    return shared.compile_into(ffibuilder(absolute_paths=True), TMPDIR, HERE, verbose)


if __name__ == "__main__":
    print(build(verbose="-v" in sys.argv))
