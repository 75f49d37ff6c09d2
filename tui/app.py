"""`progressive dashboard`: a Textual app over the state store, with k9s-style keys.

Views: overview, agents, executions, queues, breakers, health, events (``1``-``7``, or ``:`` and a name).
Every tick (``--refresh``, 1 s) a worker thread reads a :class:`~tui.data.Snapshot` of what the view on
screen shows (``tui/data.py``), and that view's tables (``tui/table.py``) are patched by row key: a changed
row is drawn again, new rows come in, gone rows go, the cursor stays on its row. Views are mounted when
first shown.

Actions never change state here: each is a control written to the store (``progressive_cli/controls.py``)
for the daemon to apply; with no daemon alive the dashboard applies it itself, as the CLI does. The
status line shows each action from "requested" to "applied by ..." (or its error). ``--readonly``
disables every action.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from functools import cache, partial
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Input, Label, Static

from tui.data import EVENTS_KEPT, FAULTY, Snapshot, Source
from tui.keybar import KeyBar
from tui.table import Table

VIEWS = ("overview", "agents", "executions", "queues", "breakers", "health", "events")
MARKS = {  # state -> (symbol, style): colour is never the only signal
    "healthy": ("✓", "green"), "online": ("●", "green"), "completed": ("✓", "green"), "closed": ("●", "green"),
    "applied": ("✓", "green"), "resolved": ("✓", "green"), "firing": ("▲", "red"),
    "degraded": ("!", "yellow"), "half-open": ("◐", "yellow"), "waiting": ("…", "yellow"), "queued": ("…", "cyan"),
    "running": ("▶", "cyan"), "pending": ("…", "cyan"), "applying": ("…", "cyan"),
    "unhealthy": ("✗", "red"), "offline": ("○", "red"), "failed": ("✗", "red"), "open": ("○", "red"),
    "timed_out": ("✗", "red"), "cancelled": ("■", "magenta"), "unknown": ("?", "magenta"),
    "disabled": ("-", "dim"),
}


@cache
def mark(state: str | None) -> Text:
    """A state as symbol and word, coloured (NO_COLOR keeps the symbol and the word). One shared Text per state:
    never change it in place."""
    symbol, style = MARKS.get(state or "", ("?", ""))
    return Text(f"{symbol} {state or '-'}", style=style)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def num(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def bar(fraction: float | None, width: int = 12) -> str:
    if fraction is None:
        return ""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled) + f" {fraction:4.0%}"


# --- modal screens -----------------------------------------------------------------------------------------
class Confirm(ModalScreen[bool]):
    """Yes or no, for actions that change state."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "answer(True)", "yes", id="confirm.yes"),
                                             Binding("n,escape", "answer(False)", "no", id="confirm.no")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question)
            yield Label("y: yes    n / esc: no", classes="hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Jump(ModalScreen[str | None]):
    """``:`` then a view name (k9s): ``:breakers``, ``:ex`` (a prefix will do)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "back", id="jump.cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("jump to: " + " ".join(VIEWS))
            yield Input(placeholder="view", id="jump-input")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip().lstrip(":").lower()
        match = next((v for v in VIEWS if v.startswith(text)), None) if text else None
        self.dismiss(match)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Detail(Screen[None]):
    """One item in full: a title, an optional table, and text below it. ``esc`` goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "back", id="detail.back")]

    def __init__(self, title: str, body: str, table: tuple[list[tuple[str, str]], list[tuple[str, tuple[Any, ...]]]]
                 | None = None, on_select: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.title_text, self.body, self.table, self.on_select = title, body, table, on_select

    def compose(self) -> ComposeResult:
        yield Static(self.title_text, id="detail-title")
        if self.table is not None:
            yield Table(self.table[0], id="detail-table")
        yield Static(self.body, id="detail-body", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        if self.table is not None:
            self.query_one(Table).patch(self.table[1])

    @on(Table.Highlighted)
    def highlighted(self, event: Table.Highlighted) -> None:
        if self.on_select is not None:
            self.query_one("#detail-body", Static).update(self.on_select(event.key))


class Help(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "app.pop_screen", "close",
                                                     id="help.close")]

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("\n".join(self.lines), markup=False)


# --- the command palette -----------------------------------------------------------------------------------
class Commands(Provider):
    """Jump to a view, an agent, a workflow's runs or an execution; run a workflow."""

    executions: list[dict[str, Any]] = []  # replaced when the palette opens, never changed in place

    async def startup(self) -> None:
        """The runs to offer, read when the palette opens (whatever view is on screen)."""
        app = self.app
        assert isinstance(app, Dashboard)
        self.executions = await asyncio.to_thread(app.read_quietly, app.source.recent_executions) or []

    def _items(self) -> list[tuple[str, Callable[[], Any], str]]:
        app = self.app
        assert isinstance(app, Dashboard)
        items: list[tuple[str, Callable[[], Any], str]] = [
            (f"view {v}", partial(app.show_view, v), "switch view") for v in VIEWS]
        for agent in app.project.agents.agents:
            items.append((f"agent {agent.id}", partial(app.jump_to, "agents", agent.id), "show the agent"))
        for name in sorted(app.project.workflows):
            items.append((f"workflow {name}: runs", partial(app.filter_executions, name), "its executions"))
            if not app.readonly:
                items.append((f"workflow {name}: run", partial(app.run_workflow, name), "queue a run"))
        for e in self.executions:
            items.append((f"execution {e['id'][:12]} {e['workflow']} {e['status']}",
                          partial(app.open_execution, e["id"]), "show the run"))
        return items

    async def discover(self) -> Hits:
        for text, command, help_text in self._items()[:len(VIEWS)]:
            yield DiscoveryHit(text, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, command, help_text in self._items():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), command, help=help_text)


# --- the app -----------------------------------------------------------------------------------------------
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "agents": [("id", "AGENT"), ("kind", "KIND"), ("status", "STATUS"), ("heartbeat", "HEARTBEAT"),
               ("instances", "INST"), ("in_flight", "IN FLIGHT"), ("ok", "OK %"), ("p95", "P95 MS"),
               ("breakers", "BREAKERS"), ("capabilities", "CAPABILITIES")],
    "executions": [("id", "ID"), ("workflow", "WORKFLOW"), ("status", "STATUS"), ("progress", "PROGRESS"),
                   ("duration", "DURATION"), ("failed_step", "FAILED STEP"), ("error", "ERROR")],
    "queues": [("queue", "QUEUE"), ("depth", "DEPTH"), ("rate", "RATE /S"), ("spark", "TREND")],
    "dlq": [("seq", "EVENT #"), ("subscription", "SUBSCRIPTION"), ("type", "TYPE"), ("attempts", "ATTEMPTS"),
            ("error", "ERROR")],
    "breakers": [("breaker", "BREAKER"), ("state", "STATE"), ("failures", "FAILURES"), ("successes", "SUCCESSES"),
                 ("opened", "OPENED"), ("half_open", "HALF-OPEN IN"), ("last_error", "LAST ERROR")],
    "health": [("name", "CHECK"), ("status", "STATUS"), ("ms", "MS"), ("spark", "LATENCY"), ("avail", "AVAIL %"),
               ("age", "AGE"), ("detail", "DETAIL")],
    "events": [("seq", "SEQ"), ("time", "TIME"), ("type", "TYPE"), ("subject", "SUBJECT"), ("data", "DATA")],
    "alerts": [("check", "ALERT"), ("state", "STATE"), ("status", "STATUS"), ("detail", "DETAIL")],
}
ACTIONS = {"cancel", "retry", "resume", "replay", "replay_all", "purge", "reset", "force_open", "run_workflow"}


class Dashboard(App[None]):
    TITLE = "progressive"
    CSS = """
    #status { height: 1; background: $panel; padding: 0 1; }
    #error { height: auto; background: $error; color: $text; padding: 0 1; display: none; }
    #error.shown { display: block; }
    #filter { display: none; }
    #summary { height: auto; padding: 0 1; }
    #views { height: 1fr; }
    Table { height: 1fr; }
    #overview-queues, #queues-table { height: auto; max-height: 8; }
    .caption { padding: 0 1; text-style: bold; }
    #dialog { width: 80%; height: auto; border: thick $primary; background: $surface; padding: 1 2; }
    Confirm, Jump, Help { align: center middle; }
    #detail-title { padding: 0 1; text-style: bold; }
    #detail-table { height: 50%; }
    #detail-body { padding: 0 1; }
    .hint { color: $text-muted; }
    """
    COMMANDS: ClassVar[set[type[Provider] | Callable[[], type[Provider]]]] = {Commands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "help", id="help"),
        Binding("slash", "filter", "filter", id="filter"),
        Binding("colon", "jump", "jump", id="jump"),
        Binding("escape", "go_back", "back", id="back", show=False),
        Binding("ctrl+r", "refresh", "refresh", id="refresh"),
        Binding("space", "pause", "pause", id="pause"),
        Binding("ctrl+z", "faults", "faults only", id="faults"),
        *(Binding(str(n), f"show_view('{v}')", v, id=f"view.{v}", show=False) for n, v in enumerate(VIEWS, 1)),
        Binding("ctrl+k", "cancel", "cancel run", id="cancel"),
        Binding("t", "retry", "retry", id="retry"),
        Binding("u", "resume", "resume", id="resume"),
        Binding("r", "reset", "reset breaker", id="reset"),
        Binding("o", "force_open", "force open", id="force_open"),
        Binding("p", "replay", "replay", id="replay"),
        Binding("P", "replay_all", "replay all", id="replay_all"),
        Binding("ctrl+d", "purge", "purge DLQ", id="purge"),
        Binding("q", "quit", "quit", id="quit"),
    ]
    VIEW_ACTIONS: ClassVar[dict[str, set[str]]] = {
        "executions": {"cancel", "retry", "resume"}, "queues": {"replay", "replay_all", "purge"},
        "breakers": {"reset", "force_open"},
    }

    def __init__(self, project: Any, *, refresh: float = 1.0, readonly: bool = False,
                 clock: Callable[[], float] = time.time, source: Source | None = None) -> None:
        super().__init__()
        self.project = project
        self.interval = refresh
        self.readonly = readonly
        self.clock = clock
        self.source = source or Source(project, clock=clock)
        self.snapshot: Snapshot | None = None
        self.view = "overview"
        self.paused = False
        self.faults_only = False
        self.filters: dict[str, str] = {}
        self.events: list[Any] = []
        self.actions_log: list[str] = []
        self._reading = False  # a read is on its way (set and cleared on the app's loop only)
        self._again = False

    @property
    def main(self) -> Screen[Any]:
        """The screen the views live on (a detail or a dialog may be on top of it)."""
        return self.screen_stack[0]

    # --- layout ------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield Static(id="error")
        yield Input(placeholder="filter rows (esc clears)", id="filter", disabled=True)
        with ContentSwitcher(initial="overview", id="views"):
            with Vertical(id="overview"):
                yield from self._view_widgets("overview")
            for view in VIEWS[1:]:  # mounted when first shown: the first frame lays out one view
                yield Vertical(id=view)
        yield KeyBar()

    @staticmethod
    def _view_widgets(view: str) -> list[Widget]:
        if view == "overview":
            return [Static(id="summary"), Label("queues", classes="caption"),
                    Table(COLUMNS["queues"], id="overview-queues"), Label("alerts", classes="caption"),
                    Table(COLUMNS["alerts"], id="overview-alerts")]
        if view == "queues":
            return [Table(COLUMNS["queues"], id="queues-table"),
                    Label("dead letters (enter: details)", classes="caption"), Table(COLUMNS["dlq"], id="dlq-table")]
        return [Table(COLUMNS[view], id=f"{view}-table")]

    def on_mount(self) -> None:
        keymap = dict(self.project.settings.dashboard.keymap)
        if keymap:
            self.set_keymap(keymap)
        self.set_interval(self.interval, self.tick)
        self.show_view("overview")
        first = self.source.prefetched(wait=False)  # read while the app started (`progressive dashboard`)
        if first is not None:
            self.show(first)
        else:
            self.tick()
        self.call_after_refresh(self._settled)

    @staticmethod
    def _settled() -> None:
        """After the first frame: what start-up made (Textual, the project, the widgets) lives as long as
        the app, so the cyclic GC need not walk it again at every full collection (a full collection of
        it during a tick took up to ~50 ms of that tick)."""
        import gc

        gc.freeze()

    # --- refresh -----------------------------------------------------------------------------------------
    def tick(self, *, force: bool = False) -> None:
        """Read a snapshot for the view on screen. One read at a time, each shown before the next starts:
        reads share the source's connection and its place in the events (a read's events are those since
        the last one: reads that overlapped, or were shown out of order, would repeat or lose some). A tick
        that comes while a read is on its way asks for one more read after it, however many come."""
        if self.paused and not force:
            return
        if self._reading:
            self._again = True
            return
        self._reading = True
        self.load()

    @work(thread=True, group="load")
    def load(self) -> None:
        snap = self.source.prefetched(wait=True) or asyncio.run(self.source.load(frozenset({self.view})))
        self.call_from_thread(self._loaded, snap)

    def _loaded(self, snap: Snapshot) -> None:
        self._reading = False
        self.show(snap)
        if self._again:
            self._again = False
            self.tick(force=True)

    def show(self, snap: Snapshot) -> None:
        """Patch the view from ``snap`` (a snapshot with an error keeps the last data and says why)."""
        if not self.screen_stack:  # a read that ended while the app shut down: its screens are gone
            return
        try:
            self._show(snap)
        except NoMatches:  # ... or only its widgets
            return

    def _show(self, snap: Snapshot) -> None:
        error = self.main.query_one("#error", Static)
        if snap.error is not None:
            error.update(f"⚠ {snap.error} (retrying every {self.interval:g}s)")
            error.add_class("shown")
            self._status()
            return
        error.remove_class("shown")
        self.snapshot = snap.merged(self.snapshot)
        self.events = (self.events + snap.events)[-EVENTS_KEPT:]
        self._patch_all()
        self._status()

    def _table(self, table_id: str) -> Table:
        return self.main.query_one(f"#{table_id}", Table)

    def _patch_all(self) -> None:
        """Patch the visible view only (the others are patched when shown): a tick costs what one view costs.
        A view whose data has not been read yet (it was just shown) waits for the tick that reads it."""
        snap = self.snapshot
        if snap is None:
            return
        view = self.view
        if view == "overview":
            if snap.agents is not None:
                self._summary(snap)
            self._table("overview-queues").patch(self._queue_rows(snap))
            self._table("overview-alerts").patch(
                (a["check_name"], (a["check_name"], mark("firing" if a["firing"] else "resolved"),
                                   mark(a["status"]), a["detail"] or "")) for a in snap.alerts or [])
        elif view == "agents":
            if snap.agents is not None and snap.agents_full:
                self._table("agents-table").patch(self._rows("agents", snap.agents, "id", self._agent_cells))
        elif view == "executions":
            if snap.executions is not None:
                self._table("executions-table").patch(
                    self._rows("executions", snap.executions, "id", self._execution_cells))
        elif view == "queues":
            self._table("queues-table").patch(self._queue_rows(snap))
            if snap.dead_letters is not None:
                self._table("dlq-table").patch(self._rows("queues", snap.dead_letters, "id", lambda d: (
                    f"#{d['event_seq']}", d["subscription"], d["type"] or "", str(d["attempts"]), d["error"] or "")))
        elif view == "breakers":
            if snap.breakers is not None:
                self._table("breakers-table").patch(self._rows("breakers", snap.breakers, "breaker",
                                                               self._breaker_cells))
        elif view == "health":
            if snap.health is not None:
                self._table("health-table").patch(self._rows("health", snap.health, "name", lambda h: (
                    h["name"], mark(h["status"]), num(h["response_ms"], "{:.1f}"), h["spark"],
                    num(h["availability_pct"], "{:.1f}"), age(h["age_s"]), h["detail"] or "")))
        else:
            events = [e for e in self.events if self._matches("events", f"{e.type} {e.subject or ''}")]
            self._table("events-table").patch(
                (str(e.seq), (str(e.seq), time.strftime("%H:%M:%S", time.gmtime(e.time)), e.type, e.subject or "",
                              _short(e.data))) for e in reversed(events[-500:]))

    def _rows(self, view: str, items: list[dict[str, Any]], key: str,
              cells: Callable[[dict[str, Any]], tuple[Any, ...]]) -> list[tuple[str, tuple[Any, ...]]]:
        out = []
        faulty = FAULTY.get(view) if self.faults_only else None
        needle = self.filters.get(view, "").lower()
        for item in items:
            if faulty is not None and not self._faulty(view, item, faulty):
                continue
            row = cells(item)
            if needle and needle not in " ".join(str(c) for c in row).lower():
                continue
            out.append((str(item[key]), row))
        return out

    @staticmethod
    def _faulty(view: str, item: dict[str, Any], faulty: set[str]) -> bool:
        if view == "agents":
            return item["status"] in faulty or item["breakers_open"] > 0
        return str(item.get("status", item.get("state"))) in faulty

    def _matches(self, view: str, text: str) -> bool:
        needle = self.filters.get(view, "")
        return not needle or needle.lower() in text.lower()

    def _agent_cells(self, a: dict[str, Any]) -> tuple[Any, ...]:
        return (a["id"], a["kind"], mark(a["status"]), age(a["heartbeat_age_s"]), str(a["instances"]),
                str(a["in_flight"]), num(None if a["success_rate"] is None else a["success_rate"] * 100, "{:.1f}"),
                num(a["p95_ms"], "{:.1f}"), "-" if not a["breakers_open"] else f"{a['breakers_open']} open",
                ", ".join(a["capabilities"]))

    def _execution_cells(self, e: dict[str, Any]) -> tuple[Any, ...]:
        return (e["id"][:12], e["workflow"], mark(e["status"]), bar(e["progress"]),
                num(e["duration_s"], "{:.1f}s"), e["failed_step"] or "", (e["error"] or "")[:80])

    def _breaker_cells(self, b: dict[str, Any]) -> tuple[Any, ...]:
        opened = b["opened_at"]
        half = "held" if b["held_open"] else num(b["half_open_in_s"], "{:.0f}s")
        return (b["breaker"], mark(b["state"]), str(b["failures"]), str(b["successes"]),
                "-" if opened is None or b["held_open"] else  # forced open: opened_at is a far-off stamp
                time.strftime("%H:%M:%S", time.gmtime(min(opened, self.clock()))), half, b["last_error"] or "")

    def _queue_rows(self, snap: Snapshot) -> list[tuple[str, tuple[Any, ...]]]:
        return [(q["queue"], (q["queue"], str(q["depth"]), num(q["rate_per_s"], "{:+.2f}"), q["spark"]))
                for q in snap.queues]

    def _summary(self, snap: Snapshot) -> None:
        agents: dict[str, int] = {}
        for a in snap.agents or []:
            agents[a["status"]] = agents.get(a["status"], 0) + 1
        breakers: dict[str, int] = {}
        for b in snap.breakers or []:
            breakers[b["state"]] = breakers.get(b["state"], 0) + 1
        text = Text()
        text.append("health ")
        text.append_text(mark(snap.overall))
        text.append("   agents " + (" ".join(f"{n} {s}" for s, n in sorted(agents.items())) or "none"))
        c = snap.counts or {}
        text.append(f"\nexecutions: {c.get('running', 0)} running, {c.get('queued', 0)} queued, "
                    f"{c.get('failed', 0) + c.get('timed_out', 0)} failed, {c.get('completed', 0)} completed")
        text.append("\nbreakers " + (" ".join(f"{n} {s}" for s, n in sorted(breakers.items())) or "none"))
        daemon = snap.daemon
        text.append("\ndaemon " + (f"pid {daemon['pid']} on {daemon['host']}" if daemon else
                                   "not running (actions are applied by the dashboard)"))
        self.main.query_one("#summary", Static).update(text)

    def _status(self) -> None:
        parts = [f"[{self.view}]"]
        if self.paused:
            parts.append("PAUSED")
        if self.faults_only:
            parts.append("FAULTS ONLY")
        if self.readonly:
            parts.append("READ-ONLY")
        if self.filters.get(self.view):
            parts.append(f"filter: {self.filters[self.view]}")
        if self.actions_log:
            parts.append(self.actions_log[-1])
        self.main.query_one("#status", Static).update(Text("  ".join(parts)))

    # --- navigation --------------------------------------------------------------------------------------
    def show_view(self, view: str) -> None:
        changed = view != self.view
        self.view = view
        box = self.main.query_one(f"#{view}", Vertical)
        if not box.children:
            box.mount_all(self._view_widgets(view))
        self.main.query_one("#views", ContentSwitcher).current = view
        self._patch_all()
        if changed:
            self.tick(force=True)  # what a view shows is read only while it is on screen
        tables = box.query(Table)
        if tables:
            tables.first().focus()
        self._status()
        self.refresh_bindings()

    def action_show_view(self, view: str) -> None:
        self.show_view(view)

    def action_jump(self) -> None:
        def chosen(view: str | None) -> None:
            if view:
                self.show_view(view)
        self.push_screen(Jump(), chosen)

    def action_help(self) -> None:
        lines = ["keys (remap by id with dashboard.keymap in progressive.yaml):", ""]
        for binding in [*self.BINDINGS, *Table.BINDINGS]:
            assert isinstance(binding, Binding)
            keys = self._keys(binding)
            lines.append(f"  {keys:<14} {binding.description or binding.action:<18} id: {binding.id}")
        lines += ["", "ctrl+p: command palette (jump to agent, workflow or execution; run a workflow)"]
        self.push_screen(Help(lines))

    def _keys(self, binding: Binding) -> str:
        keymap = dict(self.project.settings.dashboard.keymap)
        return keymap.get(binding.id or "", binding.key)

    def _filter_box(self, shown: bool) -> Input:
        box = self.main.query_one("#filter", Input)
        box.disabled = not shown
        box.display = shown  # an inline style, in force at once (a class waits for the next style update)
        return box

    def action_filter(self) -> None:
        box = self._filter_box(True)
        box.value = self.filters.get(self.view, "")
        self.main.set_focus(box)  # now, not on the next turn: keys typed right after '/' (a paste) go to the box

    def on_key(self, event: events.Key) -> None:
        """A key typed in the same burst as '/' (a paste, a fast typist) was already on its way to the table
        when the filter box opened: it goes into the box, not nowhere. (A printable key the box took itself
        never gets here: the box stops it.)"""
        box = self.main.query_one("#filter", Input)
        if box.display and event.is_printable and event.character:
            box.insert_text_at_cursor(event.character)
            event.stop()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.filters[self.view] = event.value
        self._patch_all()
        self._status()

    @on(Input.Submitted, "#filter")
    def filter_done(self, event: Input.Submitted) -> None:
        self._filter_box(False)  # the filter stays applied (shown in the status line)
        self.show_view(self.view)

    def action_go_back(self) -> None:
        box = self.main.query_one("#filter", Input)
        if box.display or self.filters.get(self.view):
            self.filters.pop(self.view, None)
            box.value = ""
            self._filter_box(False)
            self._patch_all()
            self.show_view(self.view)
        elif self.view != "overview":
            self.show_view("overview")

    def action_refresh(self) -> None:
        self.tick(force=True)

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._status()

    def action_faults(self) -> None:
        self.faults_only = not self.faults_only
        self._patch_all()
        self._status()

    def jump_to(self, view: str, key: str) -> None:
        """Show ``view`` with the cursor on row ``key`` (now, or once the view's rows have been read)."""
        self.show_view(view)
        table = self.main.query_one(f"#{view}").query(Table).first()
        if key in table.index:
            table.move_cursor(table.index[key])
        else:
            table.pending_key = key

    def filter_executions(self, workflow: str) -> None:
        self.filters["executions"] = workflow
        self._patch_all()
        self.show_view("executions")

    def _selected(self, table_id: str) -> str | None:
        return self._table(table_id).current_key

    # --- details -----------------------------------------------------------------------------------------
    @on(Table.Selected)
    def selected(self, event: Table.Selected) -> None:
        """``enter`` on a row of a view (the table's own key): that item in full."""
        table, key = event.table, event.key
        if table.screen is not self.main:
            return
        if table.id == "executions-table":
            self.open_execution(key)
        elif table.id == "agents-table":
            self.open_agent(key)
        elif table.id == "dlq-table":
            self.open_dead_letter(key)

    @work(thread=True, group="detail")
    def open_execution(self, execution_id: str) -> None:
        self._read_detail(self.source.execution_detail(execution_id), self._push_execution)

    def _push_execution(self, d: dict[str, Any]) -> None:
        steps = {s["key"]: s for s in d["steps"]}
        rows = [(s["key"], (s["key"], s["type"], mark(s["status"]), str(s["attempt"]),
                            num(None if not (s["started_at"] and s["finished_at"]) else
                                (s["finished_at"] - s["started_at"]) * 1000, "{:.1f} ms")))
                for s in d["steps"]]
        graph = _graph(d.get("definition") or {})

        def body(key: str) -> str:
            s = steps[key]
            return (f"input:  {_short(s['input'], 400)}\noutput: {_short(s['output'], 400)}\n"
                    f"error:  {_short(s['error'], 400)}\n\nworkflow graph:\n{graph}")

        title = (f"execution {d['id']}  {d.get('workflow', '')}  {d.get('status', 'missing')}"
                 + (f"  error: {_short(d.get('error'), 200)}" if d.get("error") else ""))
        self.push_screen(Detail(title, f"workflow graph:\n{graph}",
                                ([("key", "STEP"), ("type", "TYPE"), ("status", "STATUS"), ("attempt", "ATTEMPT"),
                                  ("took", "TOOK")], rows), body if steps else None))

    @work(thread=True, group="detail")
    def open_agent(self, agent_id: str) -> None:
        self._read_detail(self.source.agent_detail(agent_id), self._push_agent)

    def _read_detail(self, read: Any, push: Callable[[dict[str, Any]], None]) -> None:
        """Run a detail read (in the calling worker thread) and show it; a store problem is a notice."""
        detail, problem = self._read(read)
        if problem is not None:
            self.call_from_thread(self.notify, f"cannot read the details: {problem}", severity="error")
        else:
            self.call_from_thread(push, detail)

    def read_quietly(self, read: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """``read()`` run in the calling worker thread; None if the store cannot be read."""
        return self._read(read())[0]

    @staticmethod
    def _read(read: Coroutine[Any, Any, Any]) -> tuple[Any, str | None]:
        """(what ``read`` returned, None), or (None, why the store could not be read)."""
        import sqlite3

        from progressive_cli.errors import ProgressiveError

        try:
            return asyncio.run(read), None
        except (ProgressiveError, sqlite3.Error, OSError) as exc:
            return None, exc.message if isinstance(exc, ProgressiveError) else f"state store: {exc}"

    def _push_agent(self, d: dict[str, Any]) -> None:
        lines = []
        for inst in d["instances"]:
            lines.append(f"{inst['instance']}: probe {inst['probe'] or '-'}, calls {inst['calls']}, "
                         f"in flight {inst['in_flight']}, p95 {num(inst['p95_ms'], '{:.1f}')} ms, "
                         f"breaker {inst['breaker']}, last error {inst['last_error'] or '-'}")
        rows = [(m["id"], (m["id"][:12], m["sender"] or "", m["recipient"] or m.get("channel") or "",
                           mark(m["status"]), _short(m["body"], 60)))
                for m in d["messages"]]
        self.push_screen(Detail(f"agent {d['id']}: recent messages and calls", "\n".join(lines) or "no calls yet",
                                ([("id", "MESSAGE"), ("from", "FROM"), ("to", "TO"), ("status", "STATUS"),
                                  ("body", "BODY")], rows)))

    def open_dead_letter(self, letter_id: str) -> None:
        letters = (self.snapshot.dead_letters if self.snapshot else None) or []
        letter = next((d for d in letters if d["id"] == letter_id), None)
        if letter is not None:
            self.push_screen(Detail(f"dead letter {letter_id}", _pretty(letter)))

    # --- actions: controls in the store ------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ACTIONS:
            if self.readonly:
                return False
            return action in self.VIEW_ACTIONS.get(self.view, set()) or action == "run_workflow"
        return True

    def _confirm(self, question: str, then: Callable[[], Any]) -> None:
        self.push_screen(Confirm(question), lambda yes: then() if yes else None)

    def action_cancel(self) -> None:
        key = self._selected("executions-table")
        if key:
            self._confirm(f"Cancel execution {key[:12]}?", lambda: self.submit("execution.cancel", key))

    def action_retry(self) -> None:
        key = self._selected("executions-table")
        if key:
            self._confirm(f"Retry execution {key[:12]} from its failed step?",
                          lambda: self.submit("execution.retry", key, {"from_step": None}))

    def action_resume(self) -> None:
        key = self._selected("executions-table")
        if key:
            self.submit("execution.resume", key)

    def action_replay(self) -> None:
        key = self._selected("dlq-table")
        if key:
            self.submit("dlq.replay", key, {"ids": [key]})

    def action_replay_all(self) -> None:
        self._confirm("Replay every dead letter?", lambda: self.submit("dlq.replay", "all", {"ids": None}))

    def action_purge(self) -> None:
        self._confirm("Delete every dead letter for good?", lambda: self.submit("dlq.purge", "all", {"before": None}))

    def action_reset(self) -> None:
        key = self._selected("breakers-table")
        if key:
            self._confirm(f"Reset breaker {key}?", lambda: self.submit("breaker.reset", key))

    def action_force_open(self) -> None:
        key = self._selected("breakers-table")
        if key:
            timeout = self._reset_timeout(key)
            self._confirm(f"Force breaker {key} open until reset?", lambda: self.submit(
                "breaker.open", key, {"hold": None, "reset_timeout": timeout}))

    def _reset_timeout(self, breaker: str) -> float:
        for item in self.project.integrations.integrations:
            if f"integration:{item.id}" == breaker and getattr(item, "circuit_breaker", None):
                return float(item.circuit_breaker.reset_timeout)
        return 0.0

    def run_workflow(self, name: str) -> None:
        if self.readonly:
            self.notify("read-only: actions are disabled", severity="warning")
            return
        self._confirm(f"Queue a run of workflow {name} (default inputs)?",
                      lambda: self.submit("workflow.run", name, {"inputs": {}}))

    @work(thread=True, group="actions")
    def submit(self, kind: str, target: str, payload: dict[str, Any] | None = None) -> None:
        """Write the control, then follow it to its outcome (see ``controls.settle``)."""
        self.call_from_thread(self._say, f"{kind} {target}: requested")
        try:
            row = asyncio.run(self._submit(kind, target, payload))
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self.call_from_thread(self._say, f"{kind} {target}: failed: {message}", error=True)
            return
        who = "the daemon" if str(row.get("applied_by", "")).startswith("daemon:") else "the dashboard"
        self.call_from_thread(self._say, f"{kind} {target}: applied by {who}")
        self.call_from_thread(self.tick, force=True)

    async def _submit(self, kind: str, target: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        from progressive_cli import controls
        from progressive_cli.store import project_store

        store = project_store(self.project)
        try:
            if kind == "workflow.run":
                return await self._queue_run(store, target, (payload or {}).get("inputs", {}))
            by = controls.whoami("dashboard")
            control_id = await controls.request(store, kind, target, payload, by=by)
            row = await controls.settle(store, control_id, kind, wait=5.0, by=by)
            if kind in ("execution.resume", "execution.retry") and not str(row["applied_by"]).startswith("daemon:"):
                self._ensure_worker(store)
            return row
        finally:
            await store.close()

    async def _queue_run(self, store: Any, workflow: str, inputs: dict[str, Any]) -> dict[str, Any]:
        from progressive_cli.controls import live_daemon
        from progressive_cli.engine.executor import Engine
        from progressive_cli.worker import RUN

        engine = Engine(self.project.workflows, store)
        execution = await engine.start(workflow, inputs, status="queued", queue=RUN)
        daemon = await live_daemon(store)
        if daemon is None:
            self._ensure_worker(store)
        return {"applied_by": f"daemon:{daemon['host']}:{daemon['pid']}" if daemon else "dashboard",
                "execution": execution.id}

    def _ensure_worker(self, store: Any) -> None:
        from progressive_cli.worker import WorkerLock, ensure_worker, worker_paths

        lock_path, log = worker_paths(store, self.project.root)
        ensure_worker(WorkerLock(lock_path), self.project.root, log, [])

    def _say(self, line: str, *, error: bool = False) -> None:
        self.actions_log.append(line)
        self._status()
        self.notify(line, severity="error" if error else "information", timeout=4)

    async def action_quit(self) -> None:
        self.exit()


def _short(value: Any, limit: int = 120) -> str:
    import json

    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _pretty(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, default=str)


def _graph(definition: dict[str, Any]) -> str:
    """The workflow's steps as an indented tree (nested steps under their parent)."""
    lines: list[str] = []

    def walk(steps: list[Any], depth: int) -> None:
        for step in steps:
            if not isinstance(step, dict):
                continue
            deps = step.get("needs") or step.get("depends_on") or []
            after = f"  (after {', '.join(deps)})" if deps else ""
            lines.append(f"{'  ' * depth}└ {step.get('id')} [{step.get('type')}]{after}")
            for child in ("steps", "then", "else", "branches"):
                value = step.get(child)
                if isinstance(value, list):
                    walk([b if isinstance(b, dict) and "id" in b else {"id": f"branch {n}", "type": "branch",
                                                                       "steps": b.get("steps", [])}
                          for n, b in enumerate(value)] if child == "branches" else value, depth + 1)

    walk(definition.get("steps", []), 0)
    return "\n".join(lines) or "(no steps)"


__all__ = ["Dashboard", "Table"]
