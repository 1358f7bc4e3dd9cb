"""Bounded fuzzing (issue 6, item 1): hypothesis profiles and the input tally.

Profiles: ``ci`` (default; every fuzz test together stays well under three
minutes here) and ``long`` (``FUZZ_PROFILE=long``, for nightly or local runs).
Every target counts the inputs it really tried in ``tally``; the session ends
with one summary line per target on the terminal and in
``tests/fuzz/.last-run.json`` (gitignored, like the example database in
``tests/fuzz/.hypothesis``).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

HERE = Path(__file__).resolve().parent
LAST_RUN = HERE / ".last-run.json"

_common = dict(  # noqa: C408 - keyword form reads as settings
    deadline=None,
    database=DirectoryBasedExampleDatabase(str(HERE / ".hypothesis")),
    # The server fixtures are built once per test and shared by its examples on
    # purpose (a call takes seconds to set up); inputs are large by design.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.large_base_example],
    print_blob=True,
)
# max_examples is the unit; each test scales it with SCALE[...] below.
settings.register_profile("ci", max_examples=100, **_common)
settings.register_profile("long", max_examples=2000, **_common)
PROFILE = os.environ.get("FUZZ_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(ci: int, long: int) -> settings:
    """Per-test example budget for the active profile."""
    return settings(max_examples=long if PROFILE == "long" else ci)


# target name -> inputs tried (every call of the code under test counts once)
tally: Counter[str] = Counter()
_started = time.monotonic()

def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not tally:
        return
    terminalreporter.section(f"fuzz inputs tried (profile {PROFILE})")
    for target, count in sorted(tally.items()):
        terminalreporter.write_line(f"  {target:<58} {count:>8}")
    terminalreporter.write_line(f"  {'total':<58} {sum(tally.values()):>8}  "
                                f"in {time.monotonic() - _started:.0f} s")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not tally:
        return
    LAST_RUN.write_text(json.dumps({
        "profile": PROFILE, "exitstatus": int(exitstatus),
        "seconds": round(time.monotonic() - _started, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": dict(sorted(tally.items())), "total": sum(tally.values()),
    }, indent=2) + "\n")
