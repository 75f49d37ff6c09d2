"""util.run_async: asyncio.run with the result kept out of the task. On the main thread, with Python's
own SIGINT handler in place (as in the CLI), asyncio.run formats its finished task's repr, result
included, when it checks that handler."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator

import pytest

from progressive_cli.util import run_async


class Counted:
    formatted = 0

    def __repr__(self) -> str:
        Counted.formatted += 1
        return "Counted()"


async def make() -> Counted:
    await asyncio.sleep(0)
    return Counted()


@pytest.fixture(autouse=True)
def _as_in_the_cli() -> Iterator[None]:
    assert threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest has its own
    Counted.formatted = 0
    yield
    signal.signal(signal.SIGINT, before)


def test_the_result_comes_back_without_being_formatted() -> None:
    assert isinstance(run_async(make()), Counted)
    assert Counted.formatted == 0


def test_plain_asyncio_run_formats_it() -> None:
    """What run_async is for (if this fails, a Python release fixed it and run_async can go)."""
    asyncio.run(make())
    assert Counted.formatted >= 1


def test_errors_propagate() -> None:
    async def fail() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        run_async(fail())
