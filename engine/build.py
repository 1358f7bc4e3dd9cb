"""Build the native SRTP fan-out engine (``engine/src/*.c``) into
``engine/_engine*.so`` with cffi (API mode: calls release the GIL), linked to
OpenSSL's libcrypto (``libssl-dev`` at build time, ``libssl3`` at run time).

    .venv/bin/python -m sftd.engine.build      # or: python engine/build.py
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent  # engine/
SOURCES = HERE / "src"
TMPDIR = HERE / "build"
C_FILES = ("engine.c", "srtp.c", "io_udp.c", "io_xdp.c", "xsk.c")


def cdef_text() -> str:
    """engine.h as cffi reads it: comments and #-lines dropped, enums kept."""
    text = (SOURCES / "engine.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    defines = re.findall(r"^#define (SFTE_\w+) (\d+)", text, flags=re.M)
    body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
    return "\n".join(f"#define {name} {value}" for name, value in defines) + "\n" + body


def ffibuilder(absolute_paths: bool = False) -> Any:
    """The engine's cffi module; setuptools (setup.py) builds it with the paths
    relative to the project root, build() with absolute ones (cffi compiles in
    its tmpdir)."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(cdef_text())
    ffi.set_source(
        "sftd.engine._engine", '#include "engine.h"',
        sources=[str(SOURCES / name) if absolute_paths else os.path.relpath(SOURCES / name)
                 for name in C_FILES],
        include_dirs=[str(SOURCES)],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                            "-fno-strict-aliasing"],
        libraries=["crypto", "pthread"])
    return ffi


def build(verbose: bool = False) -> Path:
    from sftd.bpf.native.build import compile_into

    return compile_into(ffibuilder(absolute_paths=True), TMPDIR, HERE, verbose)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    print(build(verbose="-v" in sys.argv))
