"""A table for live data: fed whole row lists, patched in place by row key, and drawn a line at a time.

Textual's ``DataTable`` renders every visible cell through Rich again after any update (its caches are
keyed by a table-wide update counter) and adds rows one by one at ~0.4 ms each; with 1,000 agents whose
heartbeat ages change every second that is 50-100 ms a tick on its own. This one is a Line API widget
(``ScrollView.render_line``): it keeps the rows as plain tuples, turns a row into one strip of segments
only when it changed, and repaints only the changed lines that are on screen. What it supports is what the
dashboard needs: a fixed header, auto-sized columns, a row cursor that stays on its row's key across
patches, zebra stripes, keyboard and mouse, and two messages (:class:`Table.Highlighted`,
:class:`Table.Selected`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from progressive_cli.errors import one_line

MAX_WIDTH = 80
"""A column grows with its widest cell up to this many cells; longer values end in '…'."""
PAD = 1
"""Blank cells either side of a value."""


@lru_cache(maxsize=256)
def _style(style: str | Style) -> Style:
    return style if isinstance(style, Style) else Style.parse(style) if style else Style()


def _plain(value: Any) -> str:
    """A cell's text on one line: control characters (a newline in an error message, a tab) escaped, as
    a terminal would otherwise act on them."""
    return one_line(value.plain if isinstance(value, Text) else str(value))


def _fit(text: str, width: int) -> str:
    """``text`` exactly ``width`` cells wide: padded, or cut with an ellipsis."""
    if len(text) == width and text.isascii():  # cell_len of ASCII is its length
        return text
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    return set_cell_size(text, width - 1) + "…"


def _differs(old: tuple[Any, ...] | None, new: tuple[Any, ...]) -> bool:
    """Whether a row must be drawn again (rich's ``Text ==`` compares the text, not the style)."""
    if old is None or old != new:
        return True
    for a, b in zip(old, new, strict=True):  # noqa: SIM110 (a loop, not any(): it runs for every unchanged row of a tick)
        if a is not b and type(a) is Text and a.style != b.style:
            return True
    return False


class Table(ScrollView, can_focus=True):
    """Rows of cells (``str`` or :class:`rich.text.Text`) under a header, one per key.

    ``patch(rows)`` replaces the rows with ``[(key, cells), ...]``: unchanged rows keep their drawn strip,
    changed rows are redrawn when on screen, and the cursor stays on its key (or the nearest row when its
    key is gone).
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"table--header", "table--cursor", "table--even-row"}
    DEFAULT_CSS = """
    Table {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;
        &:focus { background-tint: $foreground 5%; }
        & > .table--header { text-style: bold; background: $panel; color: $foreground; }
        &:ansi > .table--header { background: ansi_bright_blue; color: ansi_default; }
        & > .table--even-row { background: $surface-lighten-1 50%; }
        &:dark > .table--even-row { background: $surface-darken-1 40%; }
        & > .table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "up", show=False, id="table.up"),
        Binding("down", "cursor(1)", "down", show=False, id="table.down"),
        Binding("pageup", "page(-1)", "page up", show=False, id="table.page_up"),
        Binding("pagedown", "page(1)", "page down", show=False, id="table.page_down"),
        Binding("home", "edge(0)", "first row", show=False, id="table.first"),
        Binding("end", "edge(1)", "last row", show=False, id="table.last"),
        Binding("enter", "select", "details", show=False, id="table.select"),
    ]

    class RowMessage(Message):
        """About one row of ``table``: its ``key``."""

        def __init__(self, table: Table, key: str) -> None:
            super().__init__()
            self.table, self.key = table, key

        @property
        def control(self) -> Table:
            return self.table

    class Highlighted(RowMessage):
        """The cursor is on another row (``key``), or on the first row of a table that had none."""

    class Selected(RowMessage):
        """``enter`` (or a click on the cursor's row) on the row ``key``."""

    def __init__(self, columns: list[tuple[str, str]], *, id: str | None = None, classes: str | None = None,
                 zebra: bool = True) -> None:
        super().__init__(id=id, classes=classes)
        self.spec = columns
        self.labels = [label for _, label in columns]
        self.zebra = zebra
        self.order: list[str] = []
        self.cells: dict[str, tuple[Any, ...]] = {}
        self.index: dict[str, int] = {}
        self.widths = [cell_len(label) for label in self.labels]
        self.cursor_row = 0
        self.pending_key: str | None = None
        """A row to put the cursor on once it is there (a jump to a row not read yet)."""
        self._highlighted: str | None = None
        self._segments: dict[str, list[Segment]] = {}  # a row's cells drawn (no row style), by key
        self._lines: dict[str, tuple[tuple[Any, ...], Strip]] = {}  # a row's last screen line, and how it was drawn
        self._header: tuple[tuple[Any, ...], Strip] | None = None
        self._paint: tuple[Style, ...] = (Style(),) * 5
        self._resize()

    # --- data ----------------------------------------------------------------------------------------------
    @property
    def current_key(self) -> str | None:
        """The key of the row under the cursor (None for an empty table)."""
        return self.order[self.cursor_row] if 0 <= self.cursor_row < len(self.order) else None

    def patch(self, rows: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        """Show ``rows`` (key and cells, in order), redrawing only what changed."""
        current = self.current_key
        cells = dict(rows)
        order = list(cells)
        old = self.cells
        changed = [k for k, v in cells.items() if _differs(old.get(k), v)]
        same_keys = order == self.order
        if not changed and same_keys:
            return
        for key in changed:
            self._segments.pop(key, None)
            self._lines.pop(key, None)
        self.cells = cells
        if len(cells) < len(old) or any(k not in cells for k in self.order):
            # rows went: the widths may shrink
            self._segments = {k: v for k, v in self._segments.items() if k in cells}
            self._lines = {k: v for k, v in self._lines.items() if k in cells}
            widths = self._widths(cells.values(), [cell_len(label) for label in self.labels])
        else:
            widths = self._widths((cells[k] for k in changed), list(self.widths))
        if not same_keys:
            self.order = order
            self.index = {k: n for n, k in enumerate(order)}
        if widths != self.widths:
            self.widths = widths
            self._segments.clear()
            self._lines.clear()
            same_keys = False  # every line moves: repaint all
        self._resize()
        if self.pending_key in self.index:
            current, self.pending_key = self.pending_key, None
            self.call_after_refresh(self._go_to, current)
        if current is not None and current in self.index:
            self.cursor_row = self.index[current]
        else:
            self.cursor_row = max(0, min(self.cursor_row, len(order) - 1))
        if same_keys and len(changed) <= 8:
            for key in changed:
                self.refresh_line(self.index[key] + 1)
        else:
            self.refresh()
        self._announce()

    def _widths(self, rows: Iterable[tuple[Any, ...]], widths: list[int]) -> list[int]:
        for row in rows:
            for n, value in enumerate(row):
                width = cell_len(_plain(value))
                if width > widths[n]:
                    widths[n] = min(width, MAX_WIDTH)
        return widths

    def _resize(self) -> None:
        self.virtual_size = Size(sum(self.widths) + 2 * PAD * len(self.widths), len(self.order) + 1)

    # --- drawing -------------------------------------------------------------------------------------------
    def _cell(self, value: Any, width: int) -> list[Segment]:
        pad = " " * PAD
        if isinstance(value, Text):
            if value.spans:  # rare: render it (styles within the value)
                text = value.copy()
                if not text.plain.isprintable():
                    text.plain = one_line(text.plain)  # escapes lengthen the text: the styles after them shift
                text.truncate(width, overflow="ellipsis", pad=True)
                return [Segment(pad), *text.render(self.app.console), Segment(pad)]
            return [Segment(pad + _fit(_plain(value), width) + pad, _style(value.style))]
        return [Segment(pad + _fit(_plain(value), width) + pad)]

    def _row_segments(self, key: str) -> list[Segment]:
        segments = self._segments.get(key)
        if segments is None:
            segments = self._segments[key] = [s for value, width in zip(self.cells[key], self.widths, strict=True)
                                              for s in self._cell(value, width)]
        return segments

    def _line(self, segments: list[Segment], style: Style, scroll_x: int, width: int) -> Strip:
        """One screen line: ``segments`` over ``style``, padded to the widget's width, scrolled by ``scroll_x``."""
        line = list(Segment.apply_style(segments, style))
        total = self.virtual_size.width
        if total < scroll_x + width:
            line.append(Segment(" " * (scroll_x + width - total), style))
            total = scroll_x + width
        strip = Strip(line, total)
        return strip.crop(scroll_x, scroll_x + width) if scroll_x or total > width else strip

    def render_lines(self, crop: Region) -> list[Strip]:
        base = self.rich_style  # computed from the ancestors' styles: once per paint, not per line
        even = self.get_component_rich_style("table--even-row")
        cursor = self.get_component_rich_style("table--cursor")
        self._paint = (base + self.get_component_rich_style("table--header"), base, base + even, base + cursor,
                       base + even + cursor)
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        header, plain, even, cursor, even_cursor = self._paint
        if y == 0:
            signature: tuple[Any, ...] = (header, scroll_x, width, self.widths)
            if self._header is None or self._header[0] != signature:
                segments = [Segment(" " * PAD + _fit(label, w) + " " * PAD)
                            for label, w in zip(self.labels, self.widths, strict=True)]
                self._header = (signature, self._line(segments, header, scroll_x, width))
            return self._header[1]
        row = scroll_y + y - 1
        if row >= len(self.order):
            return Strip.blank(width, plain)
        striped = self.zebra and row % 2
        style = (even_cursor if striped else cursor) if row == self.cursor_row else even if striped else plain
        key = self.order[row]
        signature = (style, scroll_x, width)
        cached = self._lines.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        line = self._line(self._row_segments(key), style, scroll_x, width)
        self._lines[key] = (signature, line)
        return line

    # --- the cursor ----------------------------------------------------------------------------------------
    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def move_cursor(self, row: int, *, scroll: bool = True) -> None:
        """Put the cursor on row ``row`` (clamped); ``scroll``: bring it on screen."""
        if not self.order:
            return
        row = max(0, min(row, len(self.order) - 1))
        if row != self.cursor_row:
            self.refresh_line(self.cursor_row + 1)
            self.cursor_row = row
            self.refresh_line(row + 1)
        if scroll:
            top = self.scroll_offset.y  # the line drawn at the top (scroll_y may be fractional mid-drag)
            if row < top:
                self.scroll_to(y=row, animate=False, immediate=True)
            elif row >= top + self._page:
                self.scroll_to(y=row - self._page + 1, animate=False, immediate=True)
        self._announce()

    def _go_to(self, key: str) -> None:
        if key in self.index:  # where it is now: patches may have moved it since
            self.move_cursor(self.index[key])

    def _announce(self) -> None:
        key = self.current_key
        if key is None:
            self._highlighted = None  # emptied: the next first row is announced again
        elif key != self._highlighted:
            self._highlighted = key
            self.post_message(self.Highlighted(self, key))

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * self._page)

    def action_edge(self, end: int) -> None:
        self.move_cursor(len(self.order) - 1 if end else 0)

    def action_select(self) -> None:
        key = self.current_key
        if key is not None:
            self.post_message(self.Selected(self, key))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        row = self.scroll_offset.y + offset.y - 1
        if row >= len(self.order):
            return
        if row == self.cursor_row:
            self.action_select()
        else:
            self.move_cursor(row)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


__all__ = ["Table"]
