"""Helpers the connector tests share (test_postgres, test_redis, test_mongo, test_vector).

Tests in this folder import it by name (``from connectors import closed_port, fails, go``): pytest
puts the folder on ``sys.path``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from serverproc import free_port

from progressive_cli.errors import StepError
from progressive_cli.integrations.base import Connector

__all__ = ["closed_port", "fails", "go", "never_shown"]

C = TypeVar("C", bound=Connector)


def go(conn: C, body: Callable[[C], Awaitable[Any]]) -> Any:
    """Run ``body(conn)`` in a fresh event loop and close the connector however it ends."""

    async def main() -> Any:
        try:
            return await body(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


async def fails(coro: Awaitable[Any], kind: str) -> StepError:
    """Await *coro*, which must raise a StepError of *kind*; return it."""
    with pytest.raises(StepError) as info:
        await coro
    assert info.value.kind == kind, info.value.message
    return info.value


def never_shown(secret: str, *errors: StepError) -> None:
    """*secret* is in no form of the errors: message, str, repr, details, as_dict() and cause."""
    for e in errors:
        for text in (e.message, str(e), repr(e), repr(e.details), repr(e.as_dict()), repr(e.__cause__)):
            assert secret not in text


def closed_port() -> int:
    """A local port nobody listens on: connecting to it is refused."""
    return free_port()
