#!/usr/bin/env bash
# Lint and type checks that CI runs: ruff on all Python, mypy --strict on the
# server's packages. The folders install as sftd.<folder>; mypy sees that
# namespace through a tree of symlinks so it checks imports as users write them.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check econn controller signalling bpf sftclient sftload engine tests benchmarks
tree=build/lint
mkdir -p "$tree/sftd"
for pkg in controller signalling bpf sftclient sftload econn engine; do
    [ -d "$pkg" ] && ln -sfn "$PWD/$pkg" "$tree/sftd/$pkg"
done
typed=(-p sftd.controller -p sftd.signalling -p sftd.bpf -p sftd.engine)
[ -d econn ] && typed+=(-p sftd.econn)
MYPYPATH="$tree" .venv/bin/mypy "${typed[@]}"
