# syntax=docker/dockerfile:1
# sftd image: the server, its virtualenv and the prebuilt BPF objects.
#   docker build -t sftd-ebpf:0.1.0 .
# The builder installs the package into /opt/sftd/venv; the install compiles the
# BPF programs with clang and the cffi modules with gcc (setup.py). The final
# stage copies only that venv onto a slim Debian 12 with the runtime libraries:
# no compiler, no headers.
# The BPF build may read the build host's /sys/kernel/btf/vmlinux (CO-RE types);
# docker build exposes the host's sysfs read-only, which is enough.
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS builder
ARG DEBIAN_FRONTEND=noninteractive
# Debian 12's versions (stable: security fixes only), as scripts/setup.sh installs them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv python3-dev gcc make pkg-config libssl-dev \
        clang-19 llvm-19 libbpf-dev bpftool \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# `pip install .` builds every native part (setup.py: make -C bpf, then the cffi
# modules) and installs them as package data; the check below fails the image
# build if one is missing. -I keeps /src off sys.path so the installed package
# is the one inspected.
RUN python3 -m venv /opt/sftd/venv \
    && /opt/sftd/venv/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/sftd/venv/bin/pip install --no-cache-dir . \
    && pkg=$(/opt/sftd/venv/bin/python -I -c "import sftd.bpf as bpf, pathlib; print(pathlib.Path(bpf.__file__).parent)") \
    && ls "$pkg"/build/sft.bpf.o "$pkg/build/sft_abi.cdef" "$pkg"/_keystream*.so "$pkg"/_libbpf*.so "$pkg"/../engine/_engine*.so

FROM ${DEBIAN_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# Runtime libraries only: libbpf (loaded through cffi), codecs/SRTP used by the media stack.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates python3 libbpf1 libssl3 libsrtp2-1 libopus0 libvpx7 iproute2 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 31337 sftd \
    && useradd --system --uid 31337 --gid 31337 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin sftd
COPY --from=builder /opt/sftd/venv /opt/sftd/venv
ENV PATH=/opt/sftd/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root by default (the native engine on UDP sockets, which --dataplane auto
# takes, and the userspace plane need no privilege). The kernel
# data plane needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, which Kubernetes
# and Docker only hand to uid 0: the Helm chart runs it as 0 with exactly
# those three; with Docker: --user 0 --cap-drop ALL --cap-add BPF
# --cap-add NET_ADMIN --cap-add PERFMON --network host -v /sys/fs/bpf:/sys/fs/bpf.
USER 31337:31337
EXPOSE 8585/tcp 49090/tcp
# SIGTERM starts the drain: running calls go on, sftd exits after the last one.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sftd"]
CMD ["-I", "0.0.0.0", "-M", "0.0.0.0"]
