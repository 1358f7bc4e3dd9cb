"""Builds the kernel data plane's native modules with cffi (API mode), at setup
time, so that nodes running them need no compiler:

- ``bpf/_keystream*.so``: the keystream fill (``keystream.c``), written against
  ``bpf/include/sft_abi.h``, linked to OpenSSL's libcrypto (``libssl-dev`` to
  build, ``libssl3`` to run); calls release the GIL.
- ``bpf/_libbpf*.so``: the libbpf calls of ``bpf/libbpf.py``, compiled against
  ``<bpf/libbpf.h>`` (``libbpf-dev`` to build, ``libbpf1`` to run), so that a
  layout change of libbpf's option structs fails this build instead of
  corrupting a call.

It also holds what every cffi build script of the project shares
(``cdef_text``, ``source_paths``, ``compile_into``); the others run this file
by path (runpy), because setup.py runs them before the ``sftd`` namespace
exists.

    .venv/bin/python -m sftd.bpf.native.build      # or: python bpf/native/build.py
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cffi import FFI

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent  # bpf/
TMPDIR = PACKAGE / "build" / "native"  # bpf/build/ holds generated files already
BUILD_COMMAND = "python -m sftd.bpf.native.build"
# a field cffi checks that changed type in the real header is a build error
_STRICT = ["-O2", "-Wall", "-Wno-unused-function", "-Werror=incompatible-pointer-types"]


_INT_DEFINE = re.compile(r"#define\s+\w+\s+\d+\s*$")


def cdef_text(*headers: Path) -> str:
    """Headers as cffi's cdef reads them: comments and preprocessor lines dropped,
    except integer #defines (API mode checks their values against the C side)."""
    text = re.sub(r"/\*.*?\*/", "", "\n".join(h.read_text() for h in headers), flags=re.S)
    return "\n".join(ln for ln in text.splitlines()
                     if not ln.startswith("#") or _INT_DEFINE.match(ln))


def source_paths(paths: Iterable[Path], absolute: bool) -> list[str]:
    """C sources for set_source(): setuptools (setup.py's cffi_modules) runs from
    the project root and refuses absolute paths; ffi.compile() (compile_into)
    changes into its tmpdir and needs them absolute."""
    return [str(path) if absolute else os.path.relpath(path) for path in paths]


def keystream_builder(absolute_paths: bool = False) -> FFI:
    ffi = FFI()
    ffi.cdef(cdef_text(HERE / "keystream.h"))
    ffi.set_source(
        "sftd.bpf._keystream", '#include "keystream.h"',
        sources=source_paths([HERE / "keystream.c"], absolute_paths),
        include_dirs=[str(HERE), str(PACKAGE / "include")],
        extra_compile_args=_STRICT,
        libraries=["crypto"])
    return ffi


_LIBBPF_SOURCE = r"""
#include <stdarg.h>
#include <stdio.h>
#include <linux/if_link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static void sft_libbpf_message(int level, const char *text);

static int sft_libbpf_print(enum libbpf_print_level level, const char *format, va_list args)
{
	char text[2048];

	vsnprintf(text, sizeof(text), format, args);
	sft_libbpf_message((int)level, text);
	return 0;
}

static void sft_libbpf_route_messages(void)
{
	libbpf_set_print(sft_libbpf_print);
}
"""


def libbpf_builder() -> FFI:
    ffi = FFI()
    ffi.cdef(cdef_text(HERE / "libbpf_cdef.h"))
    ffi.set_source("sftd.bpf._libbpf", _LIBBPF_SOURCE, libraries=["bpf"],
                   extra_compile_args=_STRICT)
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


def check_layouts(module: Path, name: str, cdef_header: Path) -> None:
    """Lays out every struct the cdef declares, as the first use at run time would:
    a field whose size differs in the real header fails the build here (cffi only
    knows it when the module is loaded)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, module)
    assert spec is not None and spec.loader is not None
    compiled = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compiled)
    for struct in re.findall(r"^struct (\w+) \{", cdef_text(cdef_header), flags=re.M):
        compiled.ffi.sizeof(f"struct {struct}")


def build(verbose: bool = False) -> list[Path]:
    TMPDIR.mkdir(parents=True, exist_ok=True)
    keystream = compile_into(keystream_builder(absolute_paths=True), TMPDIR, PACKAGE, verbose)
    check_layouts(keystream, "sftd.bpf._keystream", HERE / "keystream.h")
    libbpf = compile_into(libbpf_builder(), TMPDIR, PACKAGE, verbose)
    check_layouts(libbpf, "sftd.bpf._libbpf", HERE / "libbpf_cdef.h")
    return [keystream, libbpf]


if __name__ == "__main__":
    sys.path.insert(0, str(PACKAGE.parent))
    for path in build(verbose="-v" in sys.argv):
        print(path)
