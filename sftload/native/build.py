"""Build the fast path (``sftload/native/fastpath.c``) into ``sftload/_fastpath*.so``
with cffi (API mode: calls release the GIL).

    .venv/bin/python -m sftd.sftload.native.build      # or: python sftload/native/build.py
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
ROOT = PACKAGE.parent


def cdef_text() -> str:
    text = (HERE / "fastpath.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = [ln for ln in text.splitlines() if not ln.startswith("#include")]
    return "\n".join(lines)


def _source(path: Path, absolute: bool) -> str:
    """setuptools (pip wheel) refuses absolute source paths and runs from the
    project root; ffi.compile() changes into its tmpdir and needs them absolute."""
    return str(path) if absolute else os.path.relpath(path)


def ffibuilder(absolute_paths: bool = False):  # type: ignore[no-untyped-def]
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(cdef_text())
    ffi.set_source(
        "sftd.sftload._fastpath", '#include "fastpath.h"',
        sources=[_source(HERE / "fastpath.c", absolute_paths)],
        include_dirs=[str(HERE)],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
        libraries=["pthread"])
    return ffi


def build(verbose: bool = False) -> Path:
    ffi = ffibuilder(absolute_paths=True)
    out = Path(ffi.compile(tmpdir=str(HERE / "_build"), verbose=verbose))
    dest = PACKAGE / out.name
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(out.read_bytes())
    tmp.replace(dest)  # atomic: a running generator keeps its mapped copy
    return dest


if __name__ == "__main__":
    print(build(verbose="-v" in sys.argv))
