"""Python's view of ``bpf/include/sft_abi.h`` — read from the header, never restated.

``make -C bpf`` preprocesses the header once (``clang -E -P -dD``) into
``bpf/build/sft_abi.cdef``; this module keeps the integer ``#define`` lines of
that file, drops the other directives (cffi cannot parse them), declares the
fixed-width kernel types and hands the result to ``cffi.FFI.cdef``. Nodes
running a built package therefore need no C preprocessor. When the generated
file is missing (a fresh checkout), a ``cpp`` on the PATH is used instead.

Struct layouts come out identical to the compiled BPF object's BTF;
``tests/kernel/test_abi.py`` checks every field's offset and size.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cffi

PACKAGE_DIR = Path(__file__).resolve().parent
HEADER = PACKAGE_DIR / "include" / "sft_abi.h"
BUILD_DIR = PACKAGE_DIR / "build"
GENERATED_CDEF = BUILD_DIR / "sft_abi.cdef"

_KERNEL_TYPES = """
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef uint16_t __be16;
typedef uint32_t __be32;
"""
_INTEGER_DEFINE = re.compile(r"#define\s+(SFT_\w+)\s+(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*$")

# Every struct shared with the kernel; the BTF test walks this list.
SHARED_STRUCTS = (
    "sft_config", "sft_addr_key", "sft_sha1_state", "sft_hmac_key", "sft_leg",
    "sft_leg_state", "sft_stream_key", "sft_stream", "sft_stream_state", "sft_slot",
    "sft_slot_state", "sft_fanout", "sft_keystream", "sft_event", "sft_twcc_record",
    "sft_twcc_ring",
)
SHARED_ENUMS = ("sft_counter", "sft_kcounter", "sft_stream_kind", "sft_event_type")
# The same for the steering object (steer.bpf.o) and the load generator's sink (sink.bpf.o).
STEER_STRUCTS = ("sft_addr_key", "sft_steer_config", "sft_steer_leg")
STEER_ENUMS = ("sft_steer_counter",)
SINK_STRUCTS = ("sft_sink_config", "sft_sink_leg", "sft_sink_leg_slots",
                "sft_sink_slot", "sft_sink_csrc_key")


class AbiUnavailable(RuntimeError):
    """The preprocessed ABI header is missing and cannot be produced here."""


def _preprocessed_header() -> str:
    if GENERATED_CDEF.exists():
        return GENERATED_CDEF.read_text()
    cpp = shutil.which("cpp")
    if cpp is None:
        raise AbiUnavailable(
            f"{GENERATED_CDEF} is missing and no cpp is installed: run `make -C {PACKAGE_DIR}`")
    return subprocess.run(
        [cpp, "-P", "-dD", "-undef", "-nostdinc", "-DSFT_ABI_CFFI", str(HEADER)],
        check=True, capture_output=True, text=True).stdout


def cdef_source(preprocessed: str) -> str:
    """The cffi-digestible declarations: integer #defines of ours, C without directives."""
    lines = []
    for line in preprocessed.splitlines():
        if line.startswith("#"):
            match = _INTEGER_DEFINE.match(line)
            if match:
                lines.append(f"#define {match.group(1)} {int(match.group(2), 0)}")
            continue
        lines.append(line)
    return _KERNEL_TYPES + "\n".join(lines)


@dataclass(frozen=True)
class Abi:
    ffi: cffi.FFI
    consts: Any  # the header's #defines and enum members, as attributes

    def new(self, struct: str, **fields: Any) -> Any:
        value = self.ffi.new(f"struct {struct} *")
        for name, field_value in fields.items():
            setattr(value, name, field_value)
        return value

    def pack(self, struct: str, **fields: Any) -> bytes:
        return bytes(self.ffi.buffer(self.new(struct, **fields)))

    def unpack(self, struct: str, data: bytes) -> Any:
        value = self.ffi.new(f"struct {struct} *")
        self.ffi.memmove(value, data, self.sizeof(struct))
        return value

    def sizeof(self, struct: str) -> int:
        return int(self.ffi.sizeof(f"struct {struct}"))

    def enum_members(self, enum: str) -> dict[str, int]:
        return {name: value for value, name in
                self.ffi.typeof(f"enum {enum}").elements.items()}


@functools.cache
def load() -> Abi:
    ffi = cffi.FFI()
    ffi.cdef(cdef_source(_preprocessed_header()))
    return Abi(ffi=ffi, consts=ffi.dlopen(None))
