"""`progressive dashboard`'s start-up helper: work done in a forked child and handed back through a pipe,
or nothing when the child fails or hangs (the caller then does the work itself)."""

from __future__ import annotations

import os
import time

import pytest

from progressive_cli.cli.dashboard import _collect, _fork

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")


def test_the_childs_result_comes_back_whatever_its_size() -> None:
    big = {"rows": ["x" * 100] * 20_000}  # ~2 MB: more than a pipe holds, so the child waits for the reader
    child = _fork(lambda: big)
    assert child is not None
    assert _collect(child) == big


def test_a_child_that_fails_gives_nothing_and_says_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    def fail() -> None:
        raise ValueError("broken config")

    child = _fork(fail)
    assert child is not None and _collect(child) is None
    assert capfd.readouterr() == ("", "")  # no traceback from the child
    assert _collect(_fork(lambda: lambda: None)) is None  # a result that cannot be pickled: nothing either


def test_a_child_that_hangs_is_killed_and_reaped() -> None:
    child = _fork(lambda: time.sleep(60))
    assert child is not None
    started = time.monotonic()
    assert _collect(child, timeout=0.3) is None
    assert time.monotonic() - started < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(child[0], os.WNOHANG)  # already reaped: no zombie left
    with pytest.raises(OSError):
        os.fstat(child[1])  # and the pipe is closed
