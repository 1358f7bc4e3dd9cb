"""Build the native keystream fill (``bpf/native/keystream.c``) into
``bpf/_keystream*.so`` with cffi (API mode: calls release the GIL), linked to
OpenSSL's libcrypto (``libssl-dev`` at build time, ``libssl3`` at run time).

    .venv/bin/python -m sftd.bpf.native.build      # or: python bpf/native/build.py
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent  # bpf/
TMPDIR = PACKAGE / "build" / "native"  # bpf/build/ holds generated files already


def cdef_text() -> str:
    text = (HERE / "keystream.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))


def _source(path: Path, absolute: bool) -> str:
    """setuptools (pip wheel) refuses absolute source paths and runs from the
    project root; ffi.compile() changes into its tmpdir and needs them absolute."""
    return str(path) if absolute else os.path.relpath(path)


def ffibuilder(absolute_paths: bool = False):  # type: ignore[no-untyped-def]
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(cdef_text())
    ffi.set_source(
        "sftd.bpf._keystream", '#include "keystream.h"',
        sources=[_source(HERE / "keystream.c", absolute_paths)],
        include_dirs=[str(HERE)],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
        libraries=["crypto"])
    return ffi


def build(verbose: bool = False) -> Path:
    TMPDIR.mkdir(parents=True, exist_ok=True)
    out = Path(ffibuilder(absolute_paths=True).compile(tmpdir=str(TMPDIR), verbose=verbose))
    dest = PACKAGE / out.name
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(out.read_bytes())
    tmp.replace(dest)  # atomic: a running controller keeps its mapped copy
    return dest


if __name__ == "__main__":
    sys.path.insert(0, str(PACKAGE.parent))
    print(build(verbose="-v" in sys.argv))
