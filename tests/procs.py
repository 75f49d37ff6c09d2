"""Helpers for tests that drive the installed ``progressive`` entry point in subprocesses (importable from
any test: pytest puts ``tests/`` on sys.path for its conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRESSIVE = str(Path(sys.executable).parent / "progressive")


def clean_env() -> dict[str, str]:
    """The environment without the developer's PROGRESSIVE_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_")}


def cli(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROGRESSIVE, "-p", str(root), *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_env())


def start_daemon(root: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``progressive daemon run`` in the background, its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen([PROGRESSIVE, "-p", str(root), "daemon", "run", *args], stdout=out, stderr=out,
                                env=clean_env())


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something true, and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")
