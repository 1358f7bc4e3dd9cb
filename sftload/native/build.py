"""Build the fast path (``sftload/native/fastpath.c``) into ``sftload/_fastpath*.so``
with cffi (API mode: calls release the GIL).

    .venv/bin/python -m sftd.sftload.native.build      # or: python sftload/native/build.py
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
ROOT = PACKAGE.parent
ENGINE_SOURCES = ROOT / "engine" / "src"
ENGINE_SRTP = ("srtp.c", "sha1x.c", "aesctr.c")

if TYPE_CHECKING:
    from sftd.bpf.native import build as shared
else:  # setup.py's cffi_modules run this file before the sftd namespace exists
    shared = SimpleNamespace(**runpy.run_path(str(ROOT / "bpf" / "native" / "build.py")))


def ffibuilder(absolute_paths: bool = False) -> Any:
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(shared.cdef_text(HERE / "fastpath.h"))
    ffi.set_source(
        "sftd.sftload._fastpath", '#include "fastpath.h"',
        # the mix is protected with the native engine's SRTP (OpenSSL)
        sources=shared.source_paths([HERE / "fastpath.c", HERE / "mix.c",
                                     *(ENGINE_SOURCES / name for name in ENGINE_SRTP)],
                                    absolute_paths),
        include_dirs=[str(HERE), str(ENGINE_SOURCES)],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
        libraries=["crypto", "pthread", "m"])
    return ffi


def build(verbose: bool = False) -> Path:
    return shared.compile_into(ffibuilder(absolute_paths=True), HERE / "_build", PACKAGE, verbose)


if __name__ == "__main__":
    print(build(verbose="-v" in sys.argv))
