"""libbpf for the controller: objects, maps, pins, test runs, attach.

The calls go through ``sftd.bpf._libbpf``, a cffi API-mode module compiled at
setup time against ``<bpf/libbpf.h>`` (``bpf/native/build.py``,
``bpf/native/libbpf_cdef.h``): libbpf's option structs are laid out by the C
compiler, so a libbpf whose structs differ fails that build, not a call.

Everything that can fail raises a ``BpfError`` subclass naming the operation,
the errno text and what to do about it; every failure is counted in
``error_counts()`` so the controller can export it as a metric.

Reading order: ``BpfObject.open`` → ``load`` → ``program``/``map`` → ``Map``
verbs (update/lookup/delete, per-CPU, mmap) → ``attach_xdp``/``attach_tc`` →
``Attachment.detach`` → ``BpfObject.close``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import ctypes
import errno as errno_mod
import importlib
import logging
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .native.build import BUILD_COMMAND

T = TypeVar("T")
log = logging.getLogger(__name__)

BPFFS = Path("/sys/fs/bpf")

_errors: collections.Counter[str] = collections.Counter()
_binding_error = ""
try:
    _binding: Any = importlib.import_module("sftd.bpf._libbpf")
except ImportError as exc:  # reported by lib(), with what to do
    _binding = None
    _binding_error = str(exc)
ffi: Any = _binding.ffi if _binding is not None else None

if _binding is not None:
    _lib = _binding.lib
    BPF_ANY, BPF_NOEXIST, BPF_EXIST = _lib.BPF_ANY, _lib.BPF_NOEXIST, _lib.BPF_EXIST
    XDP_FLAGS_UPDATE_IF_NOEXIST = _lib.XDP_FLAGS_UPDATE_IF_NOEXIST
    XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = _lib.XDP_FLAGS_SKB_MODE, _lib.XDP_FLAGS_DRV_MODE
    BPF_TC_INGRESS, BPF_TC_EGRESS = _lib.BPF_TC_INGRESS, _lib.BPF_TC_EGRESS
    BPF_MAP_TYPE_PERCPU_HASH = _lib.BPF_MAP_TYPE_PERCPU_HASH
    BPF_MAP_TYPE_PERCPU_ARRAY = _lib.BPF_MAP_TYPE_PERCPU_ARRAY
    _PERCPU_TYPES = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
                     _lib.BPF_MAP_TYPE_LRU_PERCPU_HASH}


class BpfError(OSError):
    """A libbpf or bpf(2) call failed."""

    def __init__(self, operation: str, err: int, advice: str = "", detail: str = "") -> None:
        _errors[operation] += 1
        text = os.strerror(err) if err else "unknown error"
        message = f"{operation} failed: {text} (errno {err})"
        if advice:
            message += f"; {advice}"
        if detail:
            message += f"\n{detail}"
        super().__init__(err, message)
        self.operation = operation

    def __str__(self) -> str:
        return str(self.args[1])


class LibbpfMissing(BpfError):
    """libbpf.so.1 cannot be loaded."""


class ProgramRejected(BpfError):
    """The verifier refused a program; the message ends with the verifier log."""


class MapOperationFailed(BpfError):
    """A map update, lookup or delete failed."""


class AttachFailed(BpfError):
    """XDP or TC attach/detach failed."""


class PinFailed(BpfError):
    """Pinning under bpffs failed."""


def error_counts() -> dict[str, int]:
    """Failed BPF calls since start, by operation."""
    return dict(_errors)


_messages_routed = False


def lib() -> Any:
    """The compiled libbpf binding; raises LibbpfMissing, saying what to do, without it."""
    global _messages_routed
    if _binding is None:
        raise LibbpfMissing("import of sftd.bpf._libbpf", errno_mod.ENOENT,
                            f"build it with `{BUILD_COMMAND}` (needs libbpf-dev) and install "
                            "libbpf1 to run it", _binding_error)
    if not _messages_routed:
        _binding.lib.sft_libbpf_route_messages()
        _messages_routed = True
    return _binding.lib


_libbpf_log = logging.getLogger("sftd.bpf.libbpf.raw")
_last_kernel_message = ""


def _on_libbpf_message(_level: int, text_ptr: Any) -> None:
    """libbpf's own messages go to our log at debug level: every failure that
    matters is raised as a BpfError (or logged) with what to do about it."""
    global _last_kernel_message
    text = ffi.string(text_ptr).decode(errors="replace").rstrip()
    if "Kernel error message:" in text:
        _last_kernel_message = text.split("Kernel error message:", 1)[1].strip()
    _libbpf_log.debug("%s", text)


def _on_ring_buffer_record(ctx: Any, data: Any, size: int) -> int:
    ring: RingBuffer = ffi.from_handle(ctx)
    ring.deliver(bytes(ffi.buffer(data, size)))
    return 0


if ffi is not None:
    ffi.def_extern(name="sft_libbpf_message")(_on_libbpf_message)
    ffi.def_extern(name="sft_ring_buffer_record")(_on_ring_buffer_record)


def _check(ret: int, operation: str, advice: str = "",
           error: type[BpfError] = BpfError) -> int:
    if ret < 0:
        raise error(operation, -ret if ret != -1 else ffi.errno, advice)
    return ret


def num_possible_cpus() -> int:
    return _check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


class Map:
    """One BPF map by fd, with byte-level verbs (structs are packed by bpf.abi)."""

    def __init__(self, name: str, fd: int, key_size: int, value_size: int, max_entries: int,
                 map_type: int, handle: Any = None) -> None:
        self.name = name
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.percpu = map_type in _PERCPU_TYPES
        self.handle = handle
        self._cpus = num_possible_cpus() if self.percpu else 1
        self._stride = (value_size + 7) & ~7

    def _key(self, key: bytes) -> Any:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(key)} bytes, expected {self.key_size}")
        return ffi.from_buffer(key)

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        expected = self._stride * self._cpus if self.percpu else self.value_size
        if len(value) != expected:
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, expected {expected}")
        ret = lib().bpf_map_update_elem(self.fd, self._key(key), ffi.from_buffer(value), flags)
        if ret < 0:
            raise MapOperationFailed(f"update of map {self.name}", -ret,
                                     "check map size limits (E2BIG/ENOMEM) and flags (EEXIST)")

    def lookup(self, key: bytes) -> bytes | None:
        size = self._stride * self._cpus if self.percpu else self.value_size
        out = ffi.new("char[]", size)
        ret = lib().bpf_map_lookup_elem(self.fd, self._key(key), out)
        if ret < 0:
            if -ret == errno_mod.ENOENT:
                return None
            raise MapOperationFailed(f"lookup in map {self.name}", -ret)
        return bytes(ffi.buffer(out, size))

    def lookup_all(self, chunk: int = 0) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of a non-per-CPU map, in as few syscalls as its size
        allows (``BPF_MAP_LOOKUP_BATCH``); a map changing meanwhile may be read
        partly before and partly after the change."""
        ks, vs = self.key_size, self.value_size
        return [(kb[i * ks:(i + 1) * ks], vb[i * vs:(i + 1) * vs])
                for kb, vb, count in self.lookup_batches(chunk) for i in range(count)]

    def lookup_batches(self, chunk: int = 0) -> Iterator[tuple[bytes, bytes, int]]:
        """``lookup_all`` as it comes from the kernel: (keys, values, count) per
        syscall, keys and values packed back to back."""
        assert not self.percpu
        chunk = chunk or max(64, min(self.max_entries, 4096))
        keys = ffi.new("char[]", chunk * self.key_size)
        values = ffi.new("char[]", chunk * self.value_size)
        token_in, token_out = ffi.new("char[]", 8), ffi.new("char[]", 8)  # a u32 bucket index
        count = ffi.new("__u32 *")
        opts = ffi.new("struct bpf_map_batch_opts *",
                       {"sz": ffi.sizeof("struct bpf_map_batch_opts")})
        first = True
        while True:
            count[0] = chunk
            ret = lib().bpf_map_lookup_batch(self.fd, ffi.NULL if first else token_in, token_out,
                                             keys, values, count, opts)
            if ret < 0 and -ret != errno_mod.ENOENT:
                raise MapOperationFailed(f"batch lookup in map {self.name}", -ret)
            n = int(count[0])
            yield (bytes(ffi.buffer(keys, n * self.key_size)),
                   bytes(ffi.buffer(values, n * self.value_size)), n)
            if ret < 0:  # ENOENT: that was the last batch
                return
            ffi.memmove(token_in, token_out, 8)
            first = False

    def lookup_percpu(self, key: bytes) -> list[bytes]:
        """One value per possible CPU."""
        raw = self.lookup(key)
        if raw is None:
            return []
        return [raw[i * self._stride:i * self._stride + self.value_size]
                for i in range(self._cpus)]

    def percpu_value(self, value: bytes) -> bytes:
        """The same value for every CPU, as a per-CPU update wants it."""
        return (value + bytes(self._stride - self.value_size)) * self._cpus

    def delete(self, key: bytes) -> bool:
        ret = lib().bpf_map_delete_elem(self.fd, self._key(key))
        if ret < 0:
            if -ret == errno_mod.ENOENT:
                return False
            raise MapOperationFailed(f"delete from map {self.name}", -ret)
        return True

    def keys(self) -> Iterator[bytes]:
        prev: Any = ffi.NULL
        nxt = ffi.new("char[]", self.key_size)
        while True:
            ret = lib().bpf_map_get_next_key(self.fd, prev, nxt)
            if ret < 0:
                if -ret == errno_mod.ENOENT:
                    return
                raise MapOperationFailed(f"iteration of map {self.name}", -ret)
            key = bytes(ffi.buffer(nxt, self.key_size))
            yield key
            prev = ffi.new("char[]", key)

    def mmap(self) -> mmap.mmap:
        """The whole value area of a BPF_F_MMAPABLE array, writable."""
        length = self._stride * self.max_entries
        length = (length + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
        try:
            return mmap.mmap(self.fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise MapOperationFailed(
                f"mmap of map {self.name}", exc.errno or 0,
                "the map must be an array created with BPF_F_MMAPABLE") from exc

    @property
    def entry_stride(self) -> int:
        return self._stride


@dataclass
class TestRun:
    retval: int
    data_out: bytes
    duration_ns: int


class Program:
    def __init__(self, name: str, handle: Any) -> None:
        self.name = name
        self.handle = handle

    @property
    def fd(self) -> int:
        return _check(lib().bpf_program__fd(self.handle), f"fd of program {self.name}",
                      "the object must be loaded first")

    @property
    def id(self) -> int:
        return prog_id_of_fd(self.fd)

    def test_run(self, data: bytes, repeat: int = 1, ctx: bytes | None = None,
                 data_out_size: int = 4096) -> TestRun:
        """BPF_PROG_TEST_RUN: the program's verdict and the packet it left behind."""
        out = ffi.new("char[]", data_out_size)
        data_in = ffi.from_buffer(data)
        opts = ffi.new("struct bpf_test_run_opts *")
        opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        opts.data_in = data_in
        opts.data_size_in = len(data)
        opts.data_out = out
        opts.data_size_out = data_out_size
        opts.repeat = repeat
        ctx_in = None
        if ctx is not None:
            ctx_in = ffi.from_buffer(ctx)
            opts.ctx_in = ctx_in
            opts.ctx_size_in = len(ctx)
        ret = lib().bpf_prog_test_run_opts(self.fd, opts)
        if ret < 0:
            raise BpfError(f"test run of program {self.name}", -ret,
                           "packets must be 14..~3700 bytes; TC programs need an Ethernet frame")
        return TestRun(retval=opts.retval, data_out=bytes(ffi.buffer(out, opts.data_size_out)),
                       duration_ns=opts.duration)


def prog_id_of_fd(fd: int) -> int:
    info = ffi.new("struct bpf_prog_info *")
    length = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
    _check(lib().bpf_obj_get_info_by_fd(fd, info, length), "bpf_obj_get_info_by_fd")
    return int(info.id)


class BpfObject:
    """A BPF ELF object: open → load → programs and maps → close."""

    def __init__(self, path: Path, handle: Any) -> None:
        self.path = path
        self.handle = handle
        self._log_bufs: dict[str, Any] = {}

    @classmethod
    def open(cls, path: str | Path) -> BpfObject:
        path = Path(path)
        handle = lib().bpf_object__open_file(str(path).encode(), ffi.NULL)
        if handle == ffi.NULL:
            raise BpfError(f"open of BPF object {path}", ffi.errno,
                           "build it with `make -C bpf` (clang-19, bpftool)")
        return cls(path, handle)

    def load(self, programs: tuple[str, ...] = ()) -> None:
        """Loads into the kernel; verifier logs of ``programs`` are kept for errors."""
        for name in programs:
            prog = self._find_program(name)
            buf = ffi.new("char[]", 1 << 20)
            self._log_bufs[name] = buf
            # level 0: libbpf fills the buffer only when the verifier refuses
            lib().bpf_program__set_log_buf(prog, buf, 1 << 20)
        ret = lib().bpf_object__load(self.handle)
        if ret < 0:
            logs = "\n".join(f"--- {name} ---\n" + ffi.string(buf).decode(errors="replace")[-4000:]
                             for name, buf in self._log_bufs.items() if buf[0] != b"\0")
            hint = "needs root (CAP_BPF, CAP_NET_ADMIN) and a kernel >= 6.8; see the verifier log"
            if -ret == errno_mod.ENOSPC and logs:
                # the verifier's log outgrew the buffer, which hides the verifier's own errno
                hint = "the verifier refused a program; its last lines below say why"
            raise ProgramRejected(f"load of BPF object {self.path}", -ret, hint, logs)
        self._log_bufs.clear()  # drop the 1 MB buffers once loaded

    def _find_program(self, name: str) -> Any:
        handle = lib().bpf_object__find_program_by_name(self.handle, name.encode())
        if handle == ffi.NULL:
            raise BpfError(f"find program {name} in {self.path}", errno_mod.ENOENT,
                           "the object is stale: rebuild with `make -C bpf`")
        return handle

    def program(self, name: str) -> Program:
        return Program(name, self._find_program(name))

    def map(self, name: str) -> Map:
        handle = lib().bpf_object__find_map_by_name(self.handle, name.encode())
        if handle == ffi.NULL:
            raise BpfError(f"find map {name} in {self.path}", errno_mod.ENOENT,
                           "the object is stale: rebuild with `make -C bpf`")
        binding = lib()
        return Map(name, _check(binding.bpf_map__fd(handle), f"fd of map {name}"),
                   binding.bpf_map__key_size(handle), binding.bpf_map__value_size(handle),
                   binding.bpf_map__max_entries(handle), binding.bpf_map__type(handle), handle)

    def set_max_entries(self, name: str, max_entries: int) -> None:
        """Resize a map before load."""
        handle = lib().bpf_object__find_map_by_name(self.handle, name.encode())
        if handle == ffi.NULL:
            raise BpfError(f"find map {name} in {self.path}", errno_mod.ENOENT)
        _check(lib().bpf_map__set_max_entries(handle, max_entries),
               f"resize of map {name} to {max_entries}", "only before load")

    def pin_program(self, name: str, path: Path) -> None:
        _check(lib().bpf_program__pin(self._find_program(name), str(path).encode()),
               f"pin of program {name} at {path}", "is bpffs mounted at /sys/fs/bpf?", PinFailed)

    def pin_map(self, m: Map, path: Path) -> None:
        _check(lib().bpf_map__pin(m.handle, str(path).encode()),
               f"pin of map {m.name} at {path}", "is bpffs mounted at /sys/fs/bpf?", PinFailed)

    def close(self) -> None:
        if self.handle is not None:
            lib().bpf_object__close(self.handle)
            self.handle = None


# ---- attachments ----

@dataclass
class Attachment:
    """One program attached to one interface; ``detach`` undoes exactly it."""

    kind: str  # "xdp" | "tc"
    ifindex: int
    prog_id: int
    flags: int = 0
    handle: int = 0
    priority: int = 0
    created_hook: bool = False
    fallback: str = ""  # XDP: why driver mode was refused ("" when it was not)

    def detach(self) -> None:
        if self.kind == "xdp":
            detach_xdp(self.ifindex, self.prog_id, self.flags)
        else:
            detach_tc(self.ifindex, self.handle, self.priority, self.prog_id, self.created_hook)


def attach_xdp(ifindex: int, prog: Program, native: bool = True) -> Attachment:
    """Attach in driver mode, falling back to generic (skb) mode; refuses to replace
    another XDP program. ``Attachment.fallback`` says why driver mode was refused."""
    modes = [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE] if native else [XDP_FLAGS_SKB_MODE]
    last = 0
    global _last_kernel_message
    refused = ""
    for mode in modes:
        _last_kernel_message = ""
        flags = XDP_FLAGS_UPDATE_IF_NOEXIST | mode
        ret = lib().bpf_xdp_attach(ifindex, prog.fd, flags, ffi.NULL)
        if ret == 0:
            return Attachment("xdp", ifindex, prog.id, flags=mode, fallback=refused)
        last = -ret
        if mode == XDP_FLAGS_DRV_MODE:
            refused = _last_kernel_message or os.strerror(last)
        if last == errno_mod.EBUSY or last == errno_mod.EEXIST:
            break
    raise AttachFailed(f"XDP attach of {prog.name} to ifindex {ifindex}", last,
                       "another XDP program may be attached (ip link show); remove it or "
                       "run without XDP")


def xdp_prog_id(ifindex: int, mode: int) -> int:
    prog_id = ffi.new("__u32 *")
    _check(lib().bpf_xdp_query_id(ifindex, mode, prog_id), f"XDP query on ifindex {ifindex}",
           error=AttachFailed)
    return int(prog_id[0])


def detach_xdp(ifindex: int, prog_id: int, mode: int) -> None:
    """Detach the XDP program of ifindex, only if it is still ``prog_id``."""
    try:
        current = xdp_prog_id(ifindex, mode)
    except AttachFailed as exc:
        if exc.errno == errno_mod.ENODEV:
            return
        raise
    if current != prog_id or current == 0:
        return
    _check(lib().bpf_xdp_detach(ifindex, mode, ffi.NULL), f"XDP detach from ifindex {ifindex}",
           error=AttachFailed)


def _tc_hook(ifindex: int) -> Any:
    hook = ffi.new("struct bpf_tc_hook *")
    hook.sz = ffi.sizeof("struct bpf_tc_hook")
    hook.ifindex = ifindex
    hook.attach_point = BPF_TC_INGRESS
    return hook


def _tc_opts(handle: int, priority: int, prog_fd: int = 0) -> Any:
    opts = ffi.new("struct bpf_tc_opts *")
    opts.sz = ffi.sizeof("struct bpf_tc_opts")
    opts.handle = handle
    opts.priority = priority
    opts.prog_fd = prog_fd
    return opts


def attach_tc(ifindex: int, prog: Program, handle: int, priority: int) -> Attachment:
    """cls_bpf direct-action filter on the clsact ingress hook (created if missing)."""
    hook = _tc_hook(ifindex)
    ret = lib().bpf_tc_hook_create(hook)
    if ret < 0 and -ret != errno_mod.EEXIST:
        raise AttachFailed(f"clsact qdisc creation on ifindex {ifindex}", -ret,
                           "needs CAP_NET_ADMIN")
    created = ret == 0
    opts = _tc_opts(handle, priority, prog.fd)
    ret = lib().bpf_tc_attach(hook, opts)
    if ret < 0:
        raise AttachFailed(f"TC ingress attach of {prog.name} to ifindex {ifindex}", -ret,
                           f"a filter with handle {handle:#x} priority {priority} may exist")
    return Attachment("tc", ifindex, int(opts.prog_id), handle=handle, priority=priority,
                      created_hook=created)


def tc_prog_id(ifindex: int, handle: int, priority: int) -> int:
    """Program id of our filter slot, 0 when empty."""
    opts = _tc_opts(handle, priority)
    ret = lib().bpf_tc_query(_tc_hook(ifindex), opts)
    if ret < 0:
        return 0
    return int(opts.prog_id)


def detach_tc(ifindex: int, handle: int, priority: int, prog_id: int | None = None,
              destroy_hook: bool = False) -> None:
    """Remove our filter (only if it still runs ``prog_id`` when given); destroy the
    clsact qdisc only when we created it and nothing else is left on it."""
    current = tc_prog_id(ifindex, handle, priority)
    if current and (prog_id is None or current == prog_id):
        _check(lib().bpf_tc_detach(_tc_hook(ifindex), _tc_opts(handle, priority)),
               f"TC detach from ifindex {ifindex}", error=AttachFailed)
    if destroy_hook:
        hook = _tc_hook(ifindex)
        hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS  # both: the qdisc itself
        if not _tc_has_filters(ifindex):
            lib().bpf_tc_hook_destroy(hook)


def call_on_loopless_thread(fn: Callable[..., T], *args: Any) -> T:
    """Calls ``fn`` on a thread without a running asyncio loop, and waits for it:
    pyroute2's synchronous API refuses to run on the loop's thread. From the
    loop's thread the call runs on a short-lived helper thread while the loop
    stays blocked, so ``fn`` must be short (one netlink request)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netlink") as pool:
        return pool.submit(fn, *args).result()


def _tc_has_filters(ifindex: int) -> bool:
    return call_on_loopless_thread(_tc_has_filters_now, ifindex)


def _tc_has_filters_now(ifindex: int) -> bool:
    # libbpf cannot list filters; ask the kernel through pyroute2.
    try:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            for parent in (0xFFFFFFF2, 0xFFFFFFF3):  # clsact ingress, egress
                if ipr.get_filters(index=ifindex, parent=parent):
                    return True
    except Exception:  # noqa: BLE001 - when unsure, keep the qdisc
        return True
    return False


# ---- pins ----

def ensure_bpffs() -> None:
    if not os.path.ismount(BPFFS):
        raise PinFailed("bpffs check", errno_mod.ENOENT,
                        "mount it: mount -t bpf bpf /sys/fs/bpf")


def obj_get(path: Path) -> int:
    return _check(lib().bpf_obj_get(str(path).encode()), f"open pinned object {path}",
                  error=PinFailed)


class NetnsHome:
    """The network namespace an object was created in, to re-enter for interface
    work (attach, detach, route lookups) from whatever namespace the caller is in."""

    _CLONE_NEWNET = 0x40000000

    def __init__(self) -> None:
        self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        libc = ctypes.CDLL(None, use_errno=True)
        current = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if os.path.samestat(os.fstat(current), os.fstat(self.fd)):
                yield
                return
            if libc.setns(self.fd, self._CLONE_NEWNET) != 0:
                raise BpfError("setns into the data plane's network namespace",
                               ctypes.get_errno())
            try:
                yield
            finally:
                libc.setns(current, self._CLONE_NEWNET)
        finally:
            os.close(current)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---- ring buffer ----

class RingBuffer:
    """Consumes a BPF_MAP_TYPE_RINGBUF; ``handler`` gets each record's bytes."""

    def __init__(self, m: Map, handler: Callable[[bytes], None]) -> None:
        self._handler = handler
        self._name = m.name
        self.handler_failures = 0  # records whose handler raised
        self._self_handle = ffi.new_handle(self)  # kept alive as long as the ring buffer
        binding = lib()
        self.handle = binding.ring_buffer__new(m.fd, binding.sft_ring_buffer_record,
                                               self._self_handle, ffi.NULL)
        if self.handle == ffi.NULL:
            raise BpfError(f"ring buffer on map {m.name}", ffi.errno)

    def deliver(self, record: bytes) -> None:
        """One record to the handler; a failure is logged once and counted, never
        raised into libbpf."""
        try:
            self._handler(record)
        except Exception:  # noqa: BLE001 - never unwind through C
            _errors["ring buffer handler"] += 1
            self.handler_failures += 1
            if self.handler_failures == 1:  # once: a broken handler fails every record
                log.exception("handling a record of ring buffer %s failed (further "
                              "failures are only counted): this is a bug, please "
                              "report it with this traceback", self._name)

    @property
    def epoll_fd(self) -> int:
        return int(lib().ring_buffer__epoll_fd(self.handle))

    def poll(self, timeout_ms: int = 0) -> int:
        return _check(lib().ring_buffer__poll(self.handle, timeout_ms), "ring buffer poll")

    def consume(self) -> int:
        return _check(lib().ring_buffer__consume(self.handle), "ring buffer consume")

    def close(self) -> None:
        if self.handle is not None:
            lib().ring_buffer__free(self.handle)
            self.handle = None
