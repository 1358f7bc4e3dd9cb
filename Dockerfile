# syntax=docker/dockerfile:1
# sftd image: the server, its virtualenv and the prebuilt BPF objects.
#   docker build -t sftd-ebpf:0.1.0 .
# The builder compiles the BPF programs with clang (make -C bpf -> bpf/build/*.o)
# and installs the package into /opt/sftd/venv, objects included as package
# data; the final stage copies only that venv onto a slim Debian 12 with the
# runtime libraries: no compiler, no headers.
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
# Objects first: `pip install .` packs bpf/build/*.o only if they exist.
RUN make -C bpf \
    && ls bpf/build/*.o
# The installed package must hold the objects and the preprocessed ABI header
# (bpf/build/sft_abi.cdef; without it bpf.abi would need cpp at run time). The
# copy covers package-data patterns that miss a generated file; -I keeps /src
# off sys.path so the installed package is the one inspected.
# The native keystream fill (bpf/_keystream*.so, cffi + AES-NI/OpenSSL) and the
# native data plane's engine (engine/_engine*.so, OpenSSL) are built before the
# install so that package data picks them up.
RUN python3 -m venv /opt/sftd/venv \
    && /opt/sftd/venv/bin/pip install --no-cache-dir --upgrade pip cffi \
    && /opt/sftd/venv/bin/python -m sftd.bpf.native.build \
    && /opt/sftd/venv/bin/python engine/build.py \
    && /opt/sftd/venv/bin/pip install --no-cache-dir . \
    && pkg=$(/opt/sftd/venv/bin/python -I -c "import bpf, pathlib; print(pathlib.Path(bpf.__file__).parent)") \
    && mkdir -p "$pkg/build" \
    && cp bpf/build/*.o bpf/build/*.cdef "$pkg/build/" \
    && ls "$pkg"/build/*.o "$pkg/build/sft_abi.cdef"

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
# Non-root by default (the userspace data plane needs no privilege). The kernel
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
