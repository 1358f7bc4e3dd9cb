"""Build the native keystream fill (``bpf/native/keystream.c``) into
``bpf/_keystream*.so`` with cffi (API mode: calls release the GIL), linked to
OpenSSL's libcrypto (``libssl-dev`` at build time, ``libssl3`` at run time).

    .venv/bin/python -m sftd.bpf.native.build      # or: python bpf/native/build.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent  # bpf/
TMPDIR = PACKAGE / "build" / "native"  # bpf/build/ holds generated files already


def cdef_text() -> str:
    text = (HERE / "keystream.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))


def ffibuilder() -> Any:
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(cdef_text())
    ffi.set_source(
        "sftd.bpf._keystream", '#include "keystream.h"',
        sources=[str(HERE / "keystream.c")],
        include_dirs=[str(HERE)],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
        libraries=["crypto"])
    return ffi


def compile_into(ffi: Any, tmpdir: Path, package: Path, verbose: bool = False) -> Path:
    """Compiles a cffi API-mode module in tmpdir and moves it into package."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    out = Path(ffi.compile(tmpdir=str(tmpdir), verbose=verbose))
    dest = package / out.name
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(out.read_bytes())
    tmp.replace(dest)  # atomic: a running process keeps its mapped copy
    return dest


def build(verbose: bool = False) -> Path:
    return compile_into(ffibuilder(), TMPDIR, PACKAGE, verbose)


if __name__ == "__main__":
    sys.path.insert(0, str(PACKAGE.parent))
    print(build(verbose="-v" in sys.argv))
