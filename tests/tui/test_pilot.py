"""The dashboard driven with Textual's pilot against a seeded SQLite store: navigation, filtering, faults
only, each action (asserting the control written and applied), read-only mode, remapped keys, and the
error states (a missing, a locked and a foreign store)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from seeding import NOW
from textual.widgets import OptionList

from progressive_cli.config.project import load_project
from progressive_cli.store.sqlite import SQLiteStore
from tui.app import Dashboard, Table


def app_for(root: Path, **kwargs) -> Dashboard:
    return Dashboard(load_project(root), refresh=0.1, clock=lambda: NOW, **kwargs)


def table(app: Dashboard, name: str) -> Table:
    return app.query_one(f"#{name}-table", Table)


def stored_controls(root: Path) -> list[dict]:
    store = SQLiteStore(root / ".progressive" / "state.db")
    try:
        return asyncio.run(store.controls())
    finally:
        asyncio.run(store.close())


async def settle(pilot, seconds: float = 0.4) -> None:
    """Pause, and for the first snapshot too (or the banner that says why there is none)."""
    await pilot.pause(seconds)
    for _ in range(100):
        app = pilot.app
        if app.snapshot is not None or app.main.query_one("#error").has_class("shown"):
            return
        await pilot.pause(0.1)


async def open_view(pilot, key: str) -> None:
    """Press a view's key and wait for its rows (a view's data is read once it is on screen)."""
    await pilot.press(key)
    await until(pilot, lambda: all(t.order for t in pilot.app.query_one(f"#{pilot.app.view}").query(Table)))


async def until(pilot, condition, timeout: float = 10.0) -> None:
    """Pause until ``condition()`` holds (a loaded machine may take several refreshes)."""
    for _ in range(int(timeout / 0.1)):
        if condition():
            return
        await pilot.pause(0.1)
    assert condition()


def test_views_jump_and_back(seeded) -> None:
    async def go() -> None:
        app = app_for(seeded)
        async with app.run_test(size=(150, 40)) as pilot:
            await until(pilot, lambda: app.snapshot is not None)
            assert app.snapshot is not None and app.snapshot.error is None
            for key, view in zip("2345671", ("agents", "executions", "queues", "breakers", "health", "events",
                                             "overview"), strict=True):
                await pilot.press(key)
                assert app.view == view
            await pilot.press("colon", *"br", "enter")
            assert app.view == "breakers"
            assert table(app, "breakers").order == ["integration:catalog", "integration:payments"]
            await pilot.press("escape")
            assert app.view == "overview"
            await open_view(pilot, "3")
            assert set(table(app, "executions").order) == {"e-done-000001", "e-failed-0002", "e-running-003"}
            await pilot.press("enter")  # the step timeline of the selected run
            await settle(pilot)
            assert type(app.screen).__name__ == "Detail"
            await pilot.press("escape")
            assert type(app.screen).__name__ != "Detail"

    asyncio.run(go())


def test_filter_and_faults_only(seeded) -> None:
    async def go() -> None:
        app = app_for(seeded)
        async with app.run_test(size=(150, 40)) as pilot:
            await settle(pilot)
            await open_view(pilot, "3")
            await pilot.press("slash", *"fail")
            assert table(app, "executions").order == ["e-failed-0002"]
            await pilot.press("enter")  # the filter stays, the box closes
            assert table(app, "executions").order == ["e-failed-0002"]
            await pilot.press("escape")  # clears it
            assert len(table(app, "executions").order) == 3
            await open_view(pilot, "5")
            await pilot.press("ctrl+z")
            assert table(app, "breakers").order == ["integration:payments"]
            await open_view(pilot, "6")
            assert table(app, "health").order == ["external-apis/payments"]
            await pilot.press("ctrl+z")
            assert len(table(app, "health").order) == 2

    asyncio.run(go())


@pytest.mark.parametrize(("key", "row", "keys", "kind", "target"), [
    ("5", "integration:payments", ("r", "y"), "breaker.reset", "integration:payments"),
    ("5", "integration:catalog", ("o", "y"), "breaker.open", "integration:catalog"),
    ("3", "e-running-003", ("ctrl+k", "y"), "execution.cancel", "e-running-003"),
    ("3", "e-failed-0002", ("t", "y"), "execution.retry", "e-failed-0002"),
    ("4", None, ("P", "y"), "dlq.replay", "all"),
    ("4", None, ("ctrl+d", "y"), "dlq.purge", "all"),
])
def test_each_action_writes_a_control_that_is_applied(seeded, key, row, keys, kind, target) -> None:
    async def go() -> None:
        app = app_for(seeded)
        async with app.run_test(size=(150, 40)) as pilot:
            await settle(pilot)
            await open_view(pilot, key)
            if row is not None:
                t = app.query_one(f"#{app.view}").query(Table).first()
                t.move_cursor(row=t.order.index(row))
            await pilot.press(*keys)
            for _ in range(50):
                await pilot.pause(0.1)
                if any(line.endswith("applied by the dashboard") for line in app.actions_log):
                    break
            assert app.actions_log[-1] == f"{kind} {target}: applied by the dashboard", app.actions_log

    if kind == "execution.retry":  # the run is queued for a worker: none may start from a test
        import tui.app as module

        module.Dashboard._ensure_worker = lambda self, store: None  # type: ignore[method-assign]
    asyncio.run(go())
    [control] = stored_controls(seeded)
    assert (control["kind"], control["target"], control["status"]) == (kind, target, "applied")
    assert control["requested_by"].startswith("dashboard:") and control["applied_by"] == control["requested_by"]


def test_declining_the_confirmation_writes_nothing(seeded) -> None:
    async def go() -> None:
        app = app_for(seeded)
        async with app.run_test(size=(150, 40)) as pilot:
            await settle(pilot)
            await pilot.press("5", "r", "n")
            await settle(pilot, 0.3)

    asyncio.run(go())
    assert stored_controls(seeded) == []


def test_readonly_disables_every_action(seeded) -> None:
    async def go() -> None:
        app = app_for(seeded, readonly=True)
        async with app.run_test(size=(150, 40)) as pilot:
            await settle(pilot)
            for view, keys in (("5", ("r", "o")), ("3", ("ctrl+k", "t", "u")), ("4", ("p", "P", "ctrl+d"))):
                await pilot.press(view, *keys)
                assert type(app.screen).__name__ != "Confirm"
            assert "READ-ONLY" in str(app.query_one("#status").render())
            assert not app.check_action("reset", ())

    asyncio.run(go())
    assert stored_controls(seeded) == []


def test_keys_are_remapped_by_id(seeded) -> None:
    (seeded / "progressive.yaml").write_text("dashboard: {keymap: {faults: f, jump: ctrl+g}}\n")

    async def go() -> None:
        app = app_for(seeded)
        async with app.run_test(size=(150, 40)) as pilot:
            await settle(pilot)
            await open_view(pilot, "5")
            await pilot.press("f")
            assert app.faults_only and table(app, "breakers").order == ["integration:payments"]
            await pilot.press("ctrl+g", *"he", "enter")
            assert app.view == "health"

    asyncio.run(go())


def banner(app: Dashboard) -> str:
    error = app.query_one("#error")
    return str(error.render()) if error.has_class("shown") else ""


def test_a_missing_store_is_reported_and_retried(make_project, project_files) -> None:
    root = make_project(project_files)

    async def go() -> None:
        app = app_for(root)
        async with app.run_test(size=(150, 40)) as pilot:
            await until(pilot, lambda: "no state store at" in banner(app))
            assert "no state store at" in banner(app) and "retrying every" in banner(app)
            assert not (root / ".progressive" / "state.db").exists()  # the dashboard never creates one
            from seeding import seed

            await seed(root / ".progressive" / "state.db")
            await until(pilot, lambda: banner(app) == "")
            await open_view(pilot, "3")
            assert banner(app) == "" and len(table(app, "executions").order) == 3

    asyncio.run(go())


def test_a_locked_store_is_reported_then_recovers(seeded) -> None:
    holder = sqlite3.connect(seeded / ".progressive" / "state.db", isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")  # readers wait on an exclusive lock, as with a stuck writer
    holder.execute("BEGIN EXCLUSIVE")

    async def go() -> None:
        app = app_for(seeded)
        async with app.run_test(size=(150, 40)) as pilot:
            await until(pilot, lambda: "locked" in banner(app))
            holder.execute("ROLLBACK")
            await until(pilot, lambda: banner(app) == "" and app.snapshot is not None)

    try:
        asyncio.run(go())
    finally:
        holder.close()


def test_a_foreign_file_is_reported(make_project, project_files) -> None:
    root = make_project(project_files)
    (root / ".progressive").mkdir(exist_ok=True)
    (root / ".progressive" / "state.db").write_text("not a database\n" * 100)

    async def go() -> None:
        app = app_for(root)
        async with app.run_test(size=(150, 40)) as pilot:
            await until(pilot, lambda: "not a usable progressive state store" in banner(app))

    asyncio.run(go())


def test_a_detail_of_a_store_gone_meanwhile_is_a_notice_not_a_crash(seeded) -> None:
    async def go() -> None:
        app = app_for(seeded)
        async with app.run_test(size=(150, 40)) as pilot:
            await settle(pilot)
            await open_view(pilot, "3")
            (seeded / ".progressive" / "state.db").rename(seeded / "moved.db")
            await pilot.press("enter")
            await settle(pilot, 0.5)
            assert type(app.screen).__name__ != "Detail" and app.is_running
            assert any("cannot read the details: no state store at" in str(n.message)
                       for n in app._notifications)

    asyncio.run(go())


def test_the_palette_offers_runs_from_any_view_and_opens_one(seeded) -> None:
    async def go() -> None:
        app = app_for(seeded)
        async with app.run_test(size=(150, 40)) as pilot:
            await settle(pilot)
            assert app.view == "overview" and app.snapshot is not None and app.snapshot.executions is None
            await pilot.press("ctrl+p", *"e-failed")

            def hits() -> list[str]:
                if type(app.screen).__name__ != "CommandPalette":
                    return []
                options = app.screen.query_one(OptionList)
                return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]

            await until(pilot, lambda: any(h.startswith("execution e-failed-000 orders failed") for h in hits()))
            await pilot.press("down", "enter")
            await until(pilot, lambda: type(app.screen).__name__ == "Detail")
            assert "execution e-failed-0002" in str(app.screen.query_one("#detail-title").render())

    asyncio.run(go())


def test_ticks_during_a_slow_read_coalesce_into_one_more_read(seeded) -> None:
    from tui.data import Source

    class Slow(Source):
        reads = 0
        running = 0
        overlapped = False

        async def load(self, views=None):
            Slow.reads += 1
            Slow.running += 1
            Slow.overlapped |= Slow.running > 1
            try:
                await asyncio.sleep(0.3)
                return await super().load(views)
            finally:
                Slow.running -= 1

    async def go() -> None:
        project = load_project(seeded)
        app = Dashboard(project, refresh=3600, clock=lambda: NOW, source=Slow(project, clock=lambda: NOW))
        async with app.run_test(size=(150, 40)) as pilot:
            await settle(pilot)
            await until(pilot, lambda: not app._reading)
            before = Slow.reads
            for _ in range(10):  # ctrl+r held down while the store is slow
                app.tick(force=True)
            await until(pilot, lambda: not app._reading)
            assert Slow.reads - before == 2  # the one under way, and one more for all that came meanwhile
            await open_view(pilot, "7")
            seqs = [e.seq for e in app.events]
            assert len(seqs) == len(set(seqs)) == 4  # the tail read once: no event twice

    asyncio.run(go())
    assert not Slow.overlapped


def test_keys_typed_in_one_burst_with_the_slash_go_into_the_filter(seeded) -> None:
    from textual import events

    async def go() -> None:
        app = app_for(seeded)
        async with app.run_test(size=(150, 40)) as pilot:
            await settle(pilot)
            await open_view(pilot, "3")
            for key, char in (("slash", "/"), ("r", "r"), ("u", "u"), ("n", "n")):  # as a paste arrives
                app.post_message(events.Key(key, char))
            await until(pilot, lambda: app.filters.get("executions") == "run")
            assert table(app, "executions").order == ["e-running-003"]
            assert not app.actions_log  # 'r' and 'u' were text, not the reset and resume keys

    asyncio.run(go())
