"""Build steps pyproject.toml cannot declare: the BPF objects (clang, make -C bpf)
and the cffi extension modules, so that `pip install .` or a wheel built from a
clean checkout holds every native part and needs no compiler at run time."""

import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithBpf(build_py):
    """Compile the BPF programs before package data (bpf/build/*.o) is collected."""

    def run(self) -> None:
        subprocess.run(["make", "-s", "-C", "bpf"], check=True)
        super().run()


setup(
    cmdclass={"build_py": BuildPyWithBpf},
    cffi_modules=[
        "bpf/native/build.py:keystream_builder",
        "bpf/native/build.py:libbpf_builder",
        "sftload/native/build.py:ffibuilder",
        "engine/build.py:ffibuilder",
        "engine/xsk_build.py:ffibuilder",
        "bpf/native/txpaths_build.py:ffibuilder",
    ],
)
