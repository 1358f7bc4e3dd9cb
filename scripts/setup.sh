#!/usr/bin/env bash
# Installs everything sftd needs on Debian 12 (run as root): apt packages,
# the virtualenv in .venv, the BPF objects, and the bpffs mount.
#   scripts/setup.sh           server only
#   scripts/setup.sh --test    also what the tests need (chromium, playwright, hypothesis)
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

apt_packages=(python3 python3-venv python3-dev gcc make pkg-config libssl-dev
    clang-19 llvm-19 libbpf-dev libbpf1 bpftool iproute2 ethtool
    libsrtp2-1 libopus0 libvpx7)
[ "$with_tests" = 1 ] && apt_packages+=(chromium tcpdump janus coturn)
# The AVS interop tests install Wire's calling engine with npm (Debian 12 has no npm by default).
if [ "$with_tests" = 1 ] && ! command -v npm >/dev/null; then
    apt_packages+=(nodejs npm)
fi

missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing apt packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
extras=""
[ "$with_tests" = 1 ] && extras="[test]"
.venv/bin/pip install -q --upgrade pip "setuptools>=77" wheel cffi >/dev/null
.venv/bin/pip install -q -e ".${extras}"

# Native parts built with cffi and gcc: the load generator's sender/receiver, the
# kernel data plane's keystream fill (AES-NI or OpenSSL) and libbpf binding
# (compiled against libbpf-dev's headers), the native data plane's engine
# (--dataplane native, OpenSSL), the AF_XDP ports and the transmit benchmark's
# loops (benchmarks/tx_bench.py, tests/kernel/test_tx_live.py).
.venv/bin/python -m sftd.sftload.native.build >/dev/null
.venv/bin/python -m sftd.bpf.native.build >/dev/null
.venv/bin/python -m sftd.engine.build >/dev/null
.venv/bin/python -m sftd.engine.xsk_build >/dev/null
.venv/bin/python -m sftd.bpf.native.txpaths_build >/dev/null

# BPF objects are built here, once; nodes running a built package or image need no compiler.
if [ -f bpf/Makefile ]; then
    make -s -C bpf
fi

# Wire's calling engine for tests/interop, pinned by its lockfile; no install
# scripts run and no browser is downloaded.
if [ "$with_tests" = 1 ] && \
        [ ! tests/interop/node_modules/.package-lock.json -nt tests/interop/package-lock.json ]; then
    npm ci --prefix tests/interop --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
fi

# bpffs is not mounted at boot on every kernel; the kernel data plane pins under it.
if [ "$(id -u)" = 0 ] && ! mountpoint -q /sys/fs/bpf; then
    mount -t bpf bpf /sys/fs/bpf || echo "setup: could not mount bpffs; the kernel data plane will be unavailable" >&2
fi
echo "setup: done (.venv ready)"
