"""The keys that work on the screen now, on one line at the bottom.

Textual's ``Footer`` mounts a widget per key and composes them again whenever the bindings change: about
50 ms of the dashboard's first frame here, and again on each view switch. This is one ``Static`` whose
text is rebuilt from ``Screen.active_bindings`` (the same source the Footer reads, ``check_action``
included), so a remapped key shows as remapped and a disabled action (read-only mode) is not offered.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.screen import Screen
from textual.widgets import Static


class KeyBar(Static):
    COMPONENT_CLASSES: ClassVar[set[str]] = {"keybar--key"}
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-foreground;
        padding: 0 1;
        & > .keybar--key { color: $footer-key-foreground; text-style: bold; }
    }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)
        self.bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def on_resize(self) -> None:
        self._draw()

    def bindings_changed(self, screen: Screen[object]) -> None:
        if screen is self.screen:
            self.call_after_refresh(self._draw)

    def _draw(self) -> None:
        if not self.is_attached:
            return
        key_style = self.get_component_rich_style("keybar--key", partial=True)
        text = Text(no_wrap=True, overflow="ellipsis")
        seen: set[str] = set()
        palette = None
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if binding.action == "app.command_palette" or binding.key == self.app.COMMAND_PALETTE_BINDING:
                palette = binding
                continue
            if not binding.show or not active.enabled or binding.action in seen:
                continue
            seen.add(binding.action)
            if text:
                text.append("  ")
            text.append(self.app.get_key_display(binding), key_style)
            text.append(f" {binding.description}")
        if palette is not None and self.app.ENABLE_COMMAND_PALETTE:
            hint = Text.assemble((self.app.get_key_display(palette), key_style), f" {palette.description}")
            room = self.size.width - text.cell_len - hint.cell_len
            text.append(" " * max(2, room))
            text.append_text(hint)
        self.update(text)


__all__ = ["KeyBar"]
