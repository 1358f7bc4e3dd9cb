"""Fixtures of the Helm chart tests: helm, the schema validator, rendering.

helm is taken from $HELM, else .cache/chart-tools/helm (filled by
scripts/get-chart-tools.sh), else PATH. Missing tools skip these tests on a
developer's machine and fail them in CI (CI=true), so CI cannot pass without
having run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sftd"
VALUES = Path(__file__).resolve().parent / "values"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    msg = f"{what} not found: run scripts/get-chart-tools.sh"
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def helm() -> str:
    for candidate in (os.environ.get("HELM"), str(REPO / ".cache/chart-tools/helm"), shutil.which("helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    missing("helm")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def yaml():
    try:
        import yaml as mod  # installed with kubernetes-validate
    except ImportError:
        missing("PyYAML")
    return mod


@pytest.fixture(scope="session")
def kubernetes_validate():
    try:
        import kubernetes_validate as mod
    except ImportError:
        missing("kubernetes-validate")
    return mod


@pytest.fixture(scope="session")
def umbrella_chart(helm, tmp_path_factory) -> Path:
    """A minimal wire-server-like umbrella chart with sftd as a file:// dependency."""
    root = tmp_path_factory.mktemp("umbrella") / "wire-server"
    (root / "templates").mkdir(parents=True)
    (root / "values.yaml").write_text("sftd: {}\n")
    (root / "Chart.yaml").write_text(
        "apiVersion: v2\n"
        "name: wire-server\n"
        "version: 0.0.1\n"
        "dependencies:\n"
        "  - name: sftd\n"
        '    version: ">=0.0.0-0"\n'
        f'    repository: "file://{CHART}"\n'
    )
    run = subprocess.run([helm, "dependency", "build", str(root)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return root
