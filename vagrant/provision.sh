#!/usr/bin/env bash
# Provisions a Debian 12 host with the project's own installer, brings sftd up
# on the kernel (eBPF) data plane, and runs the tests. Used by vagrant/Vagrantfile
# inside the VM and by CI directly on its machine, as root. Idempotent.
#
#   vagrant/provision.sh                      setup, smoke test, then all tests
#   vagrant/provision.sh -- -k chart -x       setup, smoke test, tests with these pytest args
#   vagrant/provision.sh --no-tests           setup only (scripts/setup.sh --test, bpffs)
#   vagrant/provision.sh --no-smoke           skip the kernel data plane smoke test
#   vagrant/provision.sh --service IFACE      also install and start sftd.service on IFACE
#                                             (the Vagrant VM's private network; needs systemd)
#
# The smoke test starts sftd with --dataplane kernel bound to a veth pair it
# creates for itself (media programs attach there, never to the host's own
# NICs), checks /metrics (sft_dataplane_info{dataplane="kernel"}), /readyz and
# /sft/url, then sends SIGTERM and expects the drain to end the process.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

run_tests=1 smoke=1 service_if=""
test_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --no-tests) run_tests=0 smoke=0 ;;
        --no-smoke) smoke=0 ;;
        --service) service_if=${2:?--service needs an interface}; shift ;;
        --) shift; test_args=("$@"); break ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "provision: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "provision: $*"; }
die() { echo "provision: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    [ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ] || log "warning: tested on Debian 12, this is ${PRETTY_NAME:-unknown}"
fi
log "kernel $(uname -r)"

# 1. The project's installer: apt packages, .venv (with test extras), BPF objects, bpffs.
scripts/setup.sh --test
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/fs/bpf || die "bpffs is not mounted at /sys/fs/bpf"
sftd=${SFTD_BIN:-$repo/.venv/bin/sftd}   # SFTD_BIN: another build of the server, for the smoke test
[ -x "$sftd" ] || die "$sftd missing after scripts/setup.sh"

# 2. Optional: sftd as a service on the VM's private network.
if [ -n "$service_if" ]; then
    command -v systemctl >/dev/null && [ -d /run/systemd/system ] || die "--service needs systemd"
    addr=$(ip -4 -o addr show dev "$service_if" | awk '{sub(/\/.*/, "", $4); print $4; exit}')
    [ -n "$addr" ] || die "no IPv4 address on $service_if"
    cat > /etc/systemd/system/sftd.service <<EOF
[Unit]
Description=Wire SFT (sftd, eBPF data plane) on $service_if
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$sftd -I $addr -M 127.0.0.1 -O $service_if -u http://$addr:8585 --dataplane kernel --instance vagrant --drain-timeout 60
# SIGTERM drains: running calls go on, the process exits after the last one.
KillSignal=SIGTERM
TimeoutStopSec=75
Restart=on-failure
AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON
CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON

[Install]
WantedBy=multi-user.target
EOF
    systemctl daemon-reload
    systemctl enable sftd.service >/dev/null
    systemctl restart sftd.service
    log "sftd.service started: http://$addr:8585, metrics http://127.0.0.1:49090/metrics"
fi

# 3. Smoke test of the kernel data plane.
smoke_ns=sftsmoke smoke_if=sftsmoke0 http_port=18585 metrics_port=19090
pidfile=/run/sftd-provision-smoke.pid
smoke_log=${TMPDIR:-/tmp}/sftd-provision-smoke.log
smoke_cleanup() {
    if [ -f "$pidfile" ]; then
        pid=$(cat "$pidfile")
        # only our own process, recognised by its instance name
        if kill -0 "$pid" 2>/dev/null && grep -q -- provision-smoke "/proc/$pid/cmdline" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    fi
    ip link del "$smoke_if" 2>/dev/null || true
    ip netns del "$smoke_ns" 2>/dev/null || true
}
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1" || true; }

if [ "$smoke" = 1 ]; then
    command -v curl >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }
    smoke_cleanup   # leftovers of an interrupted run
    trap smoke_cleanup EXIT
    ip netns add "$smoke_ns"
    ip link add "$smoke_if" type veth peer name sftsmoke1
    ip link set sftsmoke1 netns "$smoke_ns"
    ip addr add 192.0.2.1/30 dev "$smoke_if"
    ip link set "$smoke_if" up
    ip -n "$smoke_ns" addr add 192.0.2.2/30 dev sftsmoke1
    ip -n "$smoke_ns" link set sftsmoke1 up

    "$sftd" -I 127.0.0.1 -p "$http_port" -M 127.0.0.1 -r "$metrics_port" -A 192.0.2.1 \
        -O "$smoke_if" -u "http://127.0.0.1:$http_port" --dataplane kernel \
        --instance provision-smoke --drain-timeout 10 >"$smoke_log" 2>&1 &
    echo $! > "$pidfile"
    pid=$!
    metrics=""
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || { cat "$smoke_log" >&2; die "sftd exited during start"; }
        metrics=$(curl -sf --max-time 3 "http://127.0.0.1:$metrics_port/metrics" || true)
        [ -n "$metrics" ] && break
        sleep 1
    done
    [ -n "$metrics" ] || { cat "$smoke_log" >&2; die "no /metrics after 60 s"; }
    grep -q '^sft_dataplane_info{dataplane="kernel"' <<<"$metrics" \
        || { grep '^sft_dataplane_info' <<<"$metrics" >&2 || true; cat "$smoke_log" >&2; die "sftd is not on the kernel data plane"; }
    [ "$(http_code "http://127.0.0.1:$metrics_port/readyz")" = 200 ] || die "/readyz is not 200"
    url=$(curl -sf --max-time 3 "http://127.0.0.1:$http_port/sft/url" | tr -d '\r\n')
    [ "$url" = "http://127.0.0.1:$http_port" ] || die "/sft/url answered '$url'"
    [ -d "/sys/fs/bpf/sftd/provision-smoke" ] || log "note: no pins under /sys/fs/bpf/sftd/provision-smoke"
    # Drain: no calls, so SIGTERM must end the process well before --drain-timeout.
    kill -TERM "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then die "sftd still running 10 s after SIGTERM with no calls"; fi
    status=0; wait "$pid" || status=$?
    [ "$status" = 0 ] || { cat "$smoke_log" >&2; die "sftd exited with status $status after SIGTERM"; }
    rm -f "$pidfile"
    smoke_cleanup
    trap - EXIT
    log "smoke test passed: kernel data plane up, drained and exited on SIGTERM"
fi

# 4. Tests.
if [ "$run_tests" = 1 ]; then
    if [ -x scripts/test.sh ]; then
        scripts/test.sh "${test_args[@]}"
    else
        log "scripts/test.sh not found; running pytest directly"
        .venv/bin/pytest "${test_args[@]}"
    fi
fi
log "done"
