"""util.Periodic: the lease keepers' timer (no task until a tick is due)."""

from __future__ import annotations

import asyncio

from progressive_cli.util import Periodic


def test_ticks_until_cancelled_or_told_to_stop() -> None:
    async def go() -> tuple[int, int, int]:
        ticks: list[int] = []

        async def tick() -> bool:
            ticks.append(1)
            await asyncio.sleep(0)
            return True

        keeper = Periodic(0.02, tick)
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]  # a timer, no task yet
        await asyncio.sleep(0.11)
        keeper.cancel()
        seen = len(ticks)
        await asyncio.sleep(0.06)
        after_cancel = len(ticks) - seen

        stops: list[int] = []

        async def once() -> bool:
            stops.append(1)
            return False  # e.g. the lease was lost: no more renewals

        Periodic(0.01, once)
        await asyncio.sleep(0.08)
        return seen, after_cancel, len(stops)

    seen, after_cancel, stops = asyncio.run(go())
    assert seen >= 3 and after_cancel == 0 and stops == 1


def test_cancel_during_a_tick_stops_it() -> None:
    async def go() -> list[str]:
        log: list[str] = []

        async def slow() -> bool:
            log.append("start")
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                log.append("cancelled")
                raise
            return True

        keeper = Periodic(0.01, slow)
        await asyncio.sleep(0.05)
        keeper.cancel()
        await asyncio.sleep(0.05)
        return log

    assert asyncio.run(go()) == ["start", "cancelled"]
