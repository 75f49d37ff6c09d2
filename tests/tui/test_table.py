"""The line-drawn ``Table`` (patched by row key) and the one-line ``KeyBar``, each in a tiny app driven by
Textual's pilot: what a patch stores and draws, the cursor across patches, its messages, keyboard and mouse,
which strips a patch keeps, and which keys the bar offers (hidden, disabled and remapped bindings)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from rich.segment import Segment
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.geometry import Size

from tui.keybar import KeyBar
from tui.table import MAX_WIDTH, Table

COLUMNS = [("name", "Name"), ("state", "State")]
Rows = list[tuple[str, tuple[Any, ...]]]


def rows(n: int, *, prefix: str = "k") -> Rows:
    return [(f"{prefix}{i}", (f"n{i}", "ok")) for i in range(n)]


class TableApp(App[None]):
    """One ``Table`` (focused, as the only focusable widget); its messages recorded in ``events``."""

    def __init__(self, columns: list[tuple[str, str]] | None = None, *, height: int | None = None,
                 zebra: bool = True) -> None:
        super().__init__()
        self.columns = columns or COLUMNS
        self.height = height
        self.zebra = zebra
        self.events: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        self.table = Table(self.columns, id="t", zebra=self.zebra)
        if self.height is not None:
            self.table.styles.height = self.height
        yield self.table

    def on_table_highlighted(self, event: Table.Highlighted) -> None:
        assert event.control is self.table and event.table is self.table
        self.events.append(("highlighted", event.key))

    def on_table_selected(self, event: Table.Selected) -> None:
        assert event.control is self.table and event.table is self.table
        self.events.append(("selected", event.key))


async def until(pilot: Any, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await pilot.pause(0.02)
    assert condition()


def run(app: App[None], body: Callable[[Any], Any], size: tuple[int, int] = (60, 20)) -> None:
    async def go() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await body(pilot)

    asyncio.run(go())


def line(table: Table, y: int) -> str:
    return table.render_line(y).text


def segment_with(table: Table, y: int, text: str) -> Segment:
    """The one segment of screen line ``y`` whose text contains ``text``."""
    [segment] = [s for s in table.render_line(y) if text in s.text]
    return segment


def backgrounds(table: Table, y: int) -> set[Any]:
    return {s.style.bgcolor for s in table.render_line(y) if s.style is not None}


def visible(table: Table) -> range:
    """The rows on screen (the header takes the first line)."""
    top = int(table.scroll_y)
    return range(top, top + table.scrollable_content_region.height - 1)


# --- patch: what it stores -------------------------------------------------------------------------------
def test_patch_stores_order_cells_index_and_sizes() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        assert table.order == [] and table.current_key is None
        assert table.virtual_size == Size(4 + 5 + 2 * 2, 1)  # only the header: the labels' widths
        data = [("a", ("alpha", "ok")), ("b", ("b", "running")), ("c", ("gamma-ray", "x"))]
        table.patch(data)
        assert table.order == ["a", "b", "c"]
        assert table.cells == dict(data)
        assert table.index == {"a": 0, "b": 1, "c": 2}
        assert table.widths == [9, 7]  # the widest cell of each column ("gamma-ray", "running")
        assert table.virtual_size == Size(9 + 7 + 2 * 2, 3 + 1)  # 1 blank either side of a cell; the header
        table.patch([*data, ("d", ("d", "a-much-longer-state"))])
        assert table.widths == [9, 19]
        assert table.virtual_size == Size(9 + 19 + 4, 5)
        assert table.index["d"] == 3

    run(app, body)


def test_a_changed_row_widens_its_column_without_any_row_going() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch([("a", ("a", "ok")), ("b", ("b", "ok"))])
        assert table.widths == [4, 5]  # the labels
        table.patch([("a", ("a", "ok")), ("b", (Text("a-long-name"), "ok"))])  # a Text is measured by its text
        assert table.widths == [11, 5]
        assert table.virtual_size.width == 11 + 5 + 4
        await pilot.pause()
        assert line(app.table, 2).startswith(" a-long-name  ok    ")

    run(app, body)


def test_column_widths_are_capped_with_an_ellipsis_and_shrink_when_rows_go() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        long = "x" * (MAX_WIDTH + 20)
        table.patch([("a", ("short", "ok")), ("b", (long, "ok"))])
        assert table.widths == [MAX_WIDTH, 5]
        assert table.virtual_size.width == MAX_WIDTH + 5 + 4
        await pilot.pause()
        assert line(table, 2).startswith(" " + "x" * (MAX_WIDTH - 1) + "…" + "  ok    ")
        assert line(table, 1).startswith(" short" + " " * (MAX_WIDTH - 5) + "  ok    ")
        assert line(table, 0).startswith(" Name" + " " * (MAX_WIDTH - 4) + "  State ")
        table.patch([("a", ("short", "ok"))])  # the long row goes: back to what is left
        assert table.widths == [5, 5]
        assert table.virtual_size == Size(5 + 5 + 4, 2)
        await pilot.pause()
        assert line(table, 0).startswith(" Name   State ")
        assert line(table, 1).startswith(" short  ok    ")
        assert line(table, 2).strip() == ""
        table.patch([])
        assert table.widths == [4, 5]
        assert table.virtual_size == Size(4 + 5 + 4, 1)

    run(app, body, size=(120, 10))


# --- the cursor across patches -------------------------------------------------------------------------
def test_cursor_stays_on_its_key_when_rows_are_inserted_above_or_reordered() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch([("a", ("a", "1")), ("b", ("b", "1")), ("c", ("c", "1"))])
        table.move_cursor(1)
        assert table.current_key == "b"
        table.patch([("y", ("y", "1")), ("z", ("z", "1")), ("a", ("a", "1")), ("b", ("b", "1")), ("c", ("c", "1"))])
        assert (table.cursor_row, table.current_key) == (3, "b")
        table.patch([("c", ("c", "1")), ("b", ("b", "2")), ("a", ("a", "1"))])  # reordered (and b changed)
        assert (table.cursor_row, table.current_key) == (1, "b")
        table.patch([("b", ("b", "2")), ("c", ("c", "1")), ("a", ("a", "1"))])
        assert (table.cursor_row, table.current_key) == (0, "b")
        await pilot.pause()
        assert line(table, 1).startswith(" b     2 ")

    run(app, body)


def test_cursor_is_clamped_when_its_key_goes() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch([(k, (k, "1")) for k in "abcd"])
        table.move_cursor(2)
        assert table.current_key == "c"
        table.patch([(k, (k, "1")) for k in "abd"])  # c goes: the row that took its place
        assert (table.cursor_row, table.current_key) == (2, "d")
        table.patch([(k, (k, "1")) for k in "ab"])  # d (the last row) goes: the new last row
        assert (table.cursor_row, table.current_key) == (1, "b")
        table.patch([])
        assert (table.cursor_row, table.current_key) == (0, None)
        table.patch([(k, (k, "1")) for k in "xy"])
        assert (table.cursor_row, table.current_key) == (0, "x")
        table.move_cursor(99)  # clamped too
        assert table.current_key == "y"
        table.move_cursor(-5)
        assert table.current_key == "x"

    run(app, body)


def test_move_cursor_on_an_empty_table_does_nothing() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        app.table.move_cursor(3)
        await pilot.press("down", "end", "enter")
        await pilot.pause()
        assert (app.table.cursor_row, app.table.current_key, app.events) == (0, None, [])

    run(app, body)


# --- messages ------------------------------------------------------------------------------------------
def test_highlighted_only_when_the_key_under_the_cursor_changes() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch([(k, (k, "1")) for k in "abc"])  # the first rows of an empty table
        await until(pilot, lambda: app.events == [("highlighted", "a")])
        table.patch([(k, (k, "2")) for k in "abc"])  # changed cells, the cursor still on a
        table.patch([(k, (k, "2")) for k in "zabc"])  # a row above: the cursor moves with a
        table.patch([(k, (k, "2")) for k in "zabc"])  # nothing changed
        table.move_cursor(table.cursor_row)  # the same row
        await pilot.press("down")  # now b: the only other message, and after none of the above
        await until(pilot, lambda: len(app.events) > 1)
        await pilot.pause()
        assert app.events == [("highlighted", "a"), ("highlighted", "b")]
        table.patch([(k, (k, "2")) for k in "zac"])  # b goes: the cursor clamps onto c
        await until(pilot, lambda: len(app.events) > 2)
        assert app.events[-1] == ("highlighted", "c")

    run(app, body)


def test_selected_on_enter() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        app.table.patch([(k, (k, "1")) for k in "abc"])
        await pilot.press("down", "enter")
        await until(pilot, lambda: ("selected", "b") in app.events)
        assert app.events == [("highlighted", "a"), ("highlighted", "b"), ("selected", "b")]

    run(app, body)


def test_a_click_moves_the_cursor_and_a_click_on_the_cursor_row_selects() -> None:
    app = TableApp(height=10)

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch([(k, (k, "1")) for k in "abcd"])
        await pilot.pause()
        await pilot.click(Table, offset=(2, 0))  # the header: nothing
        await pilot.click(Table, offset=(2, 7))  # below the last row: nothing
        await pilot.pause()
        assert table.current_key == "a"
        await pilot.click(Table, offset=(2, 3))  # screen line 3: the third row
        await until(pilot, lambda: table.current_key == "c")
        await pilot.click(Table, offset=(5, 3))
        await until(pilot, lambda: ("selected", "c") in app.events)
        assert app.events == [("highlighted", "a"), ("highlighted", "c"), ("selected", "c")]
        assert table.current_key == "c"

    run(app, body)


def test_a_click_on_a_scrolled_table_counts_from_the_top_row_shown() -> None:
    app = TableApp(height=10)

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch(rows(200))
        await pilot.pause()
        table.scroll_to(y=50, animate=False)
        await until(pilot, lambda: table.scroll_y == 50)
        await pilot.click(Table, offset=(2, 4))
        await until(pilot, lambda: table.current_key == "k53")
        assert table.scroll_y == 50  # already on screen: no scroll
        await pilot.pause()
        assert line(table, 4).startswith(" n53 ")

    run(app, body)


# --- keyboard and scrolling ------------------------------------------------------------------------------
def test_keys_move_the_cursor_and_keep_it_on_screen() -> None:
    app = TableApp(height=10)

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch(rows(200))
        await pilot.pause()
        assert table.has_focus
        page = table.scrollable_content_region.height - 1
        assert page == 9  # 10 lines, less the header

        async def check(keys: Iterable[str], row: int, scroll_y: int) -> None:
            await pilot.press(*keys)
            await pilot.pause()
            assert (table.cursor_row, table.scroll_y) == (row, scroll_y)
            assert table.cursor_row in visible(table)
            assert line(table, 1 + row - scroll_y).startswith(f" n{row} ")  # on screen, where it should be
            assert line(table, 0).startswith(" Name ")  # the header stays

        await check(["down"] * 8, 8, 0)  # the last row of the first page: no scroll yet
        await check(["down"], 9, 1)
        await check(["down"] * 3, 12, 4)
        await check(["up"] * 3, 9, 4)  # still on screen: no scroll
        await check(["pagedown"], 18, 10)
        await check(["pagedown"], 27, 19)
        await check(["pageup"], 18, 18)
        await check(["end"], 199, 191)
        assert table.scroll_y == table.max_scroll_y
        await check(["down"], 199, 191)  # clamped
        await check(["up"], 198, 191)
        await check(["pageup"], 189, 189)
        await check(["home"], 0, 0)
        await check(["up"], 0, 0)
        await check(["pageup"], 0, 0)
        await check(["end", "pagedown"], 199, 191)

    run(app, body)


def test_scroll_is_clamped_when_rows_go() -> None:
    app = TableApp(height=10)

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch(rows(200))
        await pilot.press("end")
        await pilot.pause()
        assert table.scroll_y == 191
        table.patch(rows(3))
        await pilot.pause()
        assert (table.scroll_y, table.cursor_row, table.current_key) == (0, 2, "k2")
        assert [line(table, y)[:4] for y in range(5)] == [" Nam", " n0 ", " n1 ", " n2 ", "    "]

    run(app, body)


# --- pending_key ----------------------------------------------------------------------------------------
def test_pending_key_moves_the_cursor_once_a_patch_brings_it() -> None:
    app = TableApp(height=10)

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch(rows(3))
        table.pending_key = "k150"
        table.patch(rows(100))  # not there yet: nothing happens, and it stays pending
        assert table.current_key == "k0" and table.pending_key == "k150"
        table.patch(rows(200))
        assert table.pending_key is None
        assert table.current_key == "k150"
        await until(pilot, lambda: table.cursor_row in visible(table))
        await until(pilot, lambda: ("highlighted", "k150") in app.events)
        assert table.current_key == "k150"
        assert line(table, 1 + 150 - int(table.scroll_y)).startswith(" n150 ")

    run(app, body)


def test_pending_key_holds_when_a_second_patch_comes_before_the_refresh() -> None:
    app = TableApp(height=10)

    async def body(pilot: Any) -> None:
        table = app.table
        table.pending_key = "x"
        table.patch([("a", ("a", "1")), ("x", ("x", "1"))])  # x is row 1 now ...
        table.patch([("z", ("z", "1")), ("a", ("a", "1")), ("x", ("x", "1"))])  # ... and row 2 now
        assert table.current_key == "x"
        await pilot.pause()
        await pilot.pause()
        assert table.current_key == "x"  # the deferred move_cursor(1) puts it on "a"

    run(app, body)


# --- drawing --------------------------------------------------------------------------------------------
def test_header_and_rows_are_drawn_padded_by_one_blank() -> None:
    app = TableApp([("name", "Name"), ("state", "State"), ("n", "#")])

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch([("a", ("alpha", "ok", 7)), ("b", ("b", "running", 12))])  # not a str: drawn as str()
        await pilot.pause()
        width = table.size.width
        assert line(table, 0) == " Name   State    #  ".ljust(width)
        assert line(table, 1) == " alpha  ok       7  ".ljust(width)
        assert line(table, 2) == " b      running  12 ".ljust(width)
        assert line(table, 3) == " " * width
        header = table.render_line(0)
        assert all(s.style is not None and s.style.bold for s in header if s.text.strip())

    run(app, body)


def test_a_styled_text_cell_keeps_its_style() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch([("a", ("a", "ok")), ("b", ("b", Text("down", style="red")))])  # b is not under the cursor
        await pilot.pause()
        down = segment_with(table, 2, "down")
        assert down.style is not None and down.style.color is not None and down.style.color.name == "red"
        assert down.style.bgcolor is not None  # over the row's background
        ok = segment_with(table, 1, "ok")
        assert ok.style is not None and ok.style.color is not None and ok.style.color.name != "red"
        assert line(table, 2).startswith(" b     down  ")

    run(app, body)


def test_a_text_cell_with_spans_keeps_its_text_and_styles() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        long = Text.assemble(("y" * 50, "green"), ("z" * 50, "blue"))
        table.patch([("a", ("a", "ok")), ("b", ("b", Text.assemble(("a", "red"), "b"))), ("c", ("c", long))])
        await pilot.pause()
        assert table.widths == [4, MAX_WIDTH]
        assert line(table, 2).startswith(" b     ab" + " " * (MAX_WIDTH - 2) + " ")
        [red] = [s for s in table.render_line(2) if s.text == "a"]
        assert red.style is not None and red.style.color is not None and red.style.color.name == "red"
        [b] = [s for s in table.render_line(2) if s.text.startswith("b ")]  # the rest of the cell
        assert b.style is not None and b.style.color is not None and b.style.color.name != "red"
        assert line(table, 3).startswith(" c     " + "y" * 50 + "z" * (MAX_WIDTH - 51) + "… ")
        green = segment_with(table, 3, "yyy")
        assert green.style is not None and green.style.color is not None and green.style.color.name == "green"
        blue = segment_with(table, 3, "zzz")
        assert blue.style is not None and blue.style.color is not None and blue.style.color.name == "blue"

    run(app, body, size=(120, 10))


def test_horizontal_scroll_shifts_the_header_and_the_rows() -> None:
    app = TableApp([("a", "A"), ("b", "B"), ("c", "C")])

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch([("r", ("a" * 20, "b" * 20, "c0"))])
        await pilot.pause()
        width = table.size.width
        header = " A" + " " * 19 + "  B" + " " * 19 + "  C  "
        row = " " + "a" * 20 + "  " + "b" * 20 + "  c0 "
        assert table.virtual_size.width == len(row) == 48 > width
        assert line(table, 0) == header[:width]
        assert line(table, 1) == row[:width]
        assert table.max_scroll_x == 48 - width
        table.scroll_to(x=6, animate=False)
        await until(pilot, lambda: table.scroll_x == 6)
        await pilot.pause()
        assert line(table, 0) == header[6:6 + width]
        assert line(table, 1) == row[6:6 + width]
        assert line(table, 1).startswith("a" * 15 + "  bbb")
        table.scroll_to(x=0, animate=False)
        await until(pilot, lambda: table.scroll_x == 0)
        await pilot.pause()
        assert line(table, 1) == row[:width]

    run(app, body, size=(40, 10))


def test_the_cursor_row_and_zebra_stripes_are_drawn() -> None:
    def check(zebra: bool) -> None:
        app = TableApp(zebra=zebra)

        async def body(pilot: Any) -> None:
            table = app.table
            table.patch(rows(4))
            await pilot.pause()
            cursor, odd, even = backgrounds(table, 1), backgrounds(table, 2), backgrounds(table, 3)
            assert len(cursor) == len(odd) == len(even) == 1
            assert cursor != odd and cursor != even
            assert (odd != even) is zebra
            await pilot.press("down")
            await pilot.pause()
            assert backgrounds(table, 2) == cursor  # the cursor moved, and the old row is plain again
            assert backgrounds(table, 1) == even

        run(app, body)

    check(True)
    check(False)


# --- what a patch redraws --------------------------------------------------------------------------------
def test_an_identical_patch_keeps_the_drawn_strips_and_a_changed_row_gets_a_new_one() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        data = rows(5)
        table.patch(data)
        await pilot.pause()
        before = [table.render_line(y) for y in range(6)]
        assert [table.render_line(y) for y in range(6)] == before  # drawn once
        assert all(a is b for a, b in zip(before, [table.render_line(y) for y in range(6)], strict=True))
        table.patch(list(data))  # the same rows again (a new list)
        await pilot.pause()
        assert all(a is table.render_line(y) for y, a in enumerate(before))
        table.patch([*data[:2], ("k2", ("n2", "gone")), *data[3:]])  # one row changed, no width change
        await pilot.pause()
        after = [table.render_line(y) for y in range(6)]
        assert after[3] is not before[3] and after[3].text.startswith(" n2    gone ")
        assert all(after[y] is before[y] for y in (0, 1, 2, 4, 5))
        table.patch([*data[:2], ("k2", ("n2", "a-wider-state")), *data[3:]])  # a wider column: all redrawn
        await pilot.pause()
        wider = [table.render_line(y) for y in range(6)]
        assert all(wider[y] is not after[y] for y in range(5))
        assert wider[1].text.startswith(" n0    ok            ")

    run(app, body)


def screen_text(app: App[None], width: int) -> list[str]:
    """What the compositor shows (its cached strips per widget: a line not refreshed stays as it was)."""
    return [strip.text[:width].rstrip() for strip in app.screen._compositor.render_strips()]


def test_a_patch_repaints_what_changed_on_screen() -> None:
    app = TableApp(height=6)  # the header and 5 rows

    async def body(pilot: Any) -> None:
        table = app.table
        data = rows(10)
        table.patch(data)
        await pilot.pause()
        assert screen_text(app, 13)[:6] == [" Name  State", " n0    ok", " n1    ok", " n2    ok", " n3    ok",
                                             " n4    ok"]
        data[2] = ("k2", ("n2", "up"))  # one row: only its line is refreshed
        table.patch(data)
        await pilot.pause()
        assert screen_text(app, 13)[1:6] == [" n0    ok", " n1    ok", " n2    up", " n3    ok", " n4    ok"]
        data[8] = ("k8", ("n8", "down"))  # off screen: drawn once scrolled to
        table.patch(data)
        await pilot.pause()
        assert screen_text(app, 13)[1:6] == [" n0    ok", " n1    ok", " n2    up", " n3    ok", " n4    ok"]
        await pilot.press("end")
        await pilot.pause()
        assert screen_text(app, 13)[1:6] == [" n5    ok", " n6    ok", " n7    ok", " n8    down", " n9    ok"]
        table.patch([(k, (n, "v2")) for k, (n, _) in data])  # every row: the whole table
        await pilot.pause()
        assert screen_text(app, 13)[1:6] == [f" n{i}    v2" for i in range(5, 10)]
        table.patch([(k, (n, "v2")) for k, (n, _) in reversed(data)])  # reordered
        await pilot.pause()
        assert table.current_key == "k9" and table.cursor_row == 0
        assert screen_text(app, 13)[1:6] == [f" n{i}    v2" for i in range(4, -1, -1)]  # still scrolled to 5

    run(app, body, size=(30, 8))


def test_a_text_cell_whose_style_alone_changed_is_redrawn() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch([("a", ("a", "1")), ("b", ("b", Text("stale", style="red")))])
        await pilot.pause()
        assert segment_with(table, 2, "stale").style.color.name == "red"  # type: ignore[union-attr]
        table.patch([("a", ("a", "1")), ("b", ("b", Text("stale", style="blue")))])
        await pilot.pause()
        assert table.cells["b"][1].style == "blue"
        assert segment_with(table, 2, "stale").style.color.name == "blue"  # type: ignore[union-attr]

    run(app, body)


# --- KeyBar -------------------------------------------------------------------------------------------
class KeyBarApp(App[None]):
    BINDINGS = [
        Binding("a", "alpha", "Alpha", id="t.alpha"),
        Binding("b", "beta", "Beta", show=False, id="t.beta"),
        Binding("c", "gamma", "Gamma", id="t.gamma"),  # check_action: False until gamma_on
        Binding("ctrl+d", "delta", "Delta", id="t.delta"),
        Binding("e", "eps", "Eps", id="t.eps"),  # check_action: None (shown disabled by Footer)
        Binding("y", "delta", "Delta again", id="t.delta2"),  # the same action: offered once
    ]

    def __init__(self) -> None:
        super().__init__()
        self.gamma_on = False
        self.ran: list[str] = []

    def compose(self) -> ComposeResult:
        yield Table(COLUMNS)
        yield KeyBar()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "gamma":
            return self.gamma_on
        if action == "eps":
            return None
        return True

    def action_alpha(self) -> None:
        self.ran.append("alpha")

    def action_beta(self) -> None: ...
    def action_gamma(self) -> None: ...
    def action_delta(self) -> None: ...
    def action_eps(self) -> None: ...


def bar(app: App[None]) -> str:
    return str(app.query_one(KeyBar).render())


def test_keybar_lists_the_shown_enabled_bindings() -> None:
    app = KeyBarApp()

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: "Alpha" in bar(app))
        text = bar(app)
        keybar = app.query_one(KeyBar)
        assert isinstance(keybar.content, Text) and str(keybar.content) == text
        assert "a Alpha" in text and "^d Delta" in text
        for absent in ("Beta", "Gamma", "Eps", "again", "y Delta", "up", "details", "quit"):
            assert absent not in text, absent
        assert text.count("Delta") == 1
        assert text.endswith("^p palette")  # the command palette, at the right
        assert len(text) == keybar.size.width
        spans = {text[s.start:s.end]: s.style for s in keybar.content.spans}
        assert "a" in spans and "^d" in spans and "^p" in spans  # the keys styled (keybar--key: bold)
        assert all(getattr(style, "bold", False) for style in spans.values())

    run(app, body, size=(80, 12))


def test_keybar_follows_check_action_and_the_keymap() -> None:
    app = KeyBarApp()

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: "Alpha" in bar(app))
        assert "Gamma" not in bar(app)
        app.gamma_on = True
        app.refresh_bindings()
        await until(pilot, lambda: "c Gamma" in bar(app))
        app.set_keymap({"t.alpha": "f"})
        await until(pilot, lambda: "f Alpha" in bar(app))
        text = bar(app)
        assert "a Alpha" not in text and "c Gamma" in text and "^d Delta" in text
        await pilot.press("a")  # the old key no longer runs the action, the remapped one does
        await pilot.pause()
        assert app.ran == []
        await pilot.press("f")
        await until(pilot, lambda: app.ran == ["alpha"])
        app.gamma_on = False
        app.refresh_bindings()
        await until(pilot, lambda: "Gamma" not in bar(app))
        assert "f Alpha" in bar(app)

    run(app, body, size=(80, 12))


def test_control_characters_in_a_cell_are_escaped_not_sent_to_the_terminal() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch([("e", ("ValueError: line1\nline2\tcol", Text("a\x1b[2Jb", style="red")))])
        await pilot.pause()
        drawn = line(table, 1)
        assert "\n" not in drawn and "\t" not in drawn and "\x1b" not in drawn
        assert "ValueError: line1\\nline2\\tcol" in drawn and "a\\x1b[2Jb" in drawn
        assert table.widths[0] == len("ValueError: line1\\nline2\\tcol")  # measured as drawn

    run(app, body)


def test_a_click_mid_scroll_picks_the_row_drawn_there() -> None:
    app = TableApp(height=10)

    async def body(pilot: Any) -> None:
        table = app.table
        table.patch(rows(100))
        await pilot.pause()
        table.scroll_to(y=4.6, animate=False, immediate=True)  # a scrollbar drag leaves fractions
        await pilot.pause()
        top = table.scroll_offset.y
        assert line(table, 1).startswith(f" n{top} ")
        await pilot.click(table, offset=(2, 1))
        assert table.current_key == f"k{top}"

    run(app, body)


def test_the_first_row_is_announced_again_after_the_table_was_empty() -> None:
    app = TableApp()

    async def body(pilot: Any) -> None:
        app.table.patch(rows(2))
        await pilot.pause()
        app.table.patch([])
        await pilot.pause()
        app.table.patch(rows(2))
        await pilot.pause()
        assert app.events == [("highlighted", "k0"), ("highlighted", "k0")]

    run(app, body)
