"""`pip wheel .` from a clean checkout builds every native part at build time:
the BPF objects, the preprocessed ABI header and the cffi modules land in the
wheel, and the installed package runs without the source tree or a compiler."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EM_BPF = 247  # ELF e_machine of BPF objects


def _clean_checkout(dest: Path) -> Path:
    """The tracked files only: nothing built by setup.sh comes along."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("the packaging test needs the git checkout (git ls-files)")
    src = _clean_checkout(tmp_path_factory.mktemp("checkout"))
    assert not list(src.glob("bpf/build/*")) and not list(src.glob("**/*.so"))
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the test venv already has setuptools and cffi, and CI
    # must not depend on a package index here.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(src)],
                   check=True, capture_output=True, timeout=600)
    (built,) = out.glob("sftd_ebpf-*.whl")
    return built


def test_wheel_holds_every_native_part(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "sftd/bpf/build/sft_abi.cdef" in names
    for module in ("bpf/_keystream", "bpf/_libbpf", "engine/_engine", "engine/_xsk",
                   "sftload/_fastpath"):
        assert any(n.startswith(f"sftd/{module}") and n.endswith(".so") for n in names), module
    for program in ("sft", "steer", "sink"):
        assert f"sftd/bpf/build/{program}.bpf.o" in names, program
    # one namespace: nothing installs as a top-level `controller`, `bpf`, ...
    top = {n.split("/")[0] for n in names if not n.startswith("sftd_ebpf-")}
    assert top == {"sftd"}, top
    bpf_object = zipfile.ZipFile(wheel).read("sftd/bpf/build/sft.bpf.o")
    assert bpf_object[:4] == b"\x7fELF"
    assert int.from_bytes(bpf_object[18:20], "little") == EM_BPF


def test_installed_wheel_runs_without_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), str(wheel)], check=True, capture_output=True)
    # The project's own dependencies come from the test venv; the project
    # itself only from the installed wheel (-I: no cwd, no PYTHONPATH, no .pth).
    deps = [p for p in sys.path if p.endswith("site-packages")]
    probe = (
        "import sys; target, *deps = sys.argv[1:]; sys.path[:0] = [target, *deps]\n"
        "import sftd.bpf.keystream as ks, sftd.bpf.libbpf, sftd.bpf.abi\n"
        "import sftd.signalling.cli as cli\n"
        "native = ks.native_module()\n"
        "assert native.__file__.startswith(target), native.__file__\n"
        "print(cli.version())\n")
    run = subprocess.run([sys.executable, "-I", "-c", probe, str(target), *deps],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": os.environ.get("PATH", "")}, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()
