"""SVG snapshots of each view against the seeded store (pytest-textual-snapshot), at a fixed clock; and
one with NO_COLOR, where state still reads as a symbol and a word. Update with ``--snapshot-update``."""

from __future__ import annotations

import pytest
from seeding import NOW

from progressive_cli.config.project import load_project
from tui.app import Dashboard

SIZE = (150, 36)


def app_for(root) -> Dashboard:
    return Dashboard(load_project(root), refresh=60, clock=lambda: NOW)


async def loaded(pilot) -> None:
    for _ in range(50):
        await pilot.pause(0.1)
        if pilot.app.snapshot is not None:
            break
    await pilot.pause(0.1)


@pytest.mark.parametrize("key", ["1", "2", "3", "4", "5", "6", "7"])
def test_view(snap_compare, seeded, key) -> None:
    async def run_before(pilot) -> None:
        await loaded(pilot)
        await pilot.press(key)
        await pilot.pause(0.1)

    assert snap_compare(app_for(seeded), run_before=run_before, terminal_size=SIZE)


def test_execution_detail(snap_compare, seeded) -> None:
    async def run_before(pilot) -> None:
        await loaded(pilot)
        await pilot.press("3")
        table = pilot.app.query_one("#executions-table")
        table.move_cursor(row=table.order.index("e-failed-0002"))
        await pilot.press("enter")
        await pilot.pause(0.5)

    assert snap_compare(app_for(seeded), run_before=run_before, terminal_size=SIZE)


def test_breakers_without_colour(snap_compare, seeded, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")

    async def run_before(pilot) -> None:
        await loaded(pilot)
        await pilot.press("5")
        await pilot.pause(0.1)

    assert snap_compare(app_for(seeded), run_before=run_before, terminal_size=SIZE)
