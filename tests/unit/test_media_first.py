"""sftd's event-loop thread yields to the native engine's workers on a shared core."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import os, threading
from sftd.engine.dataplane import NativeDataPlane
from sftd.signalling.cli import CONTROLLER_NICE, media_first

def nice_of_threads():
    nice = {}
    for tid in os.listdir("/proc/self/task"):
        stat = open(f"/proc/self/task/{tid}/stat").read()
        nice[int(tid)] = int(stat[stat.rindex(")") + 2:].split()[16])
    return nice

main = threading.get_native_id()
before = os.getpriority(os.PRIO_PROCESS, main)
plane = NativeDataPlane(workers=1)
try:
    media_first(plane)
    nice = nice_of_threads()
    workers = [n for tid, n in nice.items() if tid != main]
    assert nice[main] == min(19, before + CONTROLLER_NICE), (before, nice)
    assert workers and all(n == before for n in workers), (before, nice)
finally:
    plane.close()
"""


def test_the_controller_thread_runs_nicer_than_the_engine_workers() -> None:
    # in a child: a raised nice cannot be lowered again without privilege
    subprocess.run([sys.executable, "-c", CHILD], check=True, timeout=60)


def test_without_worker_threads_nothing_changes() -> None:
    child = """
import os, threading
from sftd.engine.dataplane import NativeDataPlane
from sftd.signalling.cli import media_first
before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
plane = NativeDataPlane(workers=0)
media_first(plane)
assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
plane.close()
"""
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
