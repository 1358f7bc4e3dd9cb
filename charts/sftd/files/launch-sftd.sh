# Starts sftd with the arguments Kubernetes passes ($@, built from the chart's
# values) plus those only known once the pod runs. Run as: sh -ec <this> sftd ARGS...
# exec: sftd becomes PID 1 and receives SIGTERM itself, which starts its drain.
external_ip=$(cat /external-ip/ip 2>/dev/null || true)
if [ -n "$external_ip" ]; then
    set -- "$@" -A "$external_ip"
fi
if [ -f /multi-sft-config/turn_server ]; then
    set -- "$@" -t "$(cat /multi-sft-config/turn_server)" \
        -x "$(cat /multi-sft-config/username)" -c "$(cat /multi-sft-config/password)"
fi
