"""Pydantic start-up settings shared by the CLI and the config loader; importing this module applies them.

Pydantic looks for plugins (the ``pydantic`` entry-point group) the first time it builds a
validator. Nothing here uses plugins, and the scan reads every installed distribution's metadata,
so it is off unless ``PYDANTIC_DISABLE_PLUGINS`` is already set to something else.

With plugins off, pydantic's ``pydantic.plugin._loader.get_plugins`` returns ``()`` without
looking, but importing that module still imports :mod:`importlib.metadata` (and with it
``email``, ``zipfile``, ``csv``...), ~15 ms of every command that validates anything (typer
builds a validator per CLI parameter). So, while plugins are off, that module is replaced by one
whose ``get_plugins`` gives the same answer without the import.

Import this module before anything builds a validator: the CLI's main module and the config
loader do. It is kept free of heavy imports, as ``progressive --help`` imports it and must not
import pydantic.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterable
from typing import Any

_LOADER = "pydantic.plugin._loader"
OFF = ("__all__", "1", "true")
"""The values of ``PYDANTIC_DISABLE_PLUGINS`` for which pydantic's ``get_plugins`` returns ``()``."""


def _no_plugins() -> Iterable[Any]:
    return ()


def disable_plugins() -> None:
    """Turn pydantic's plugin discovery off (unless the environment says otherwise), before pydantic
    builds its first validator. Idempotent."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] not in OFF or _LOADER in sys.modules:
        return
    stub = types.ModuleType(_LOADER, "Stand-in for pydantic's plugin loader while plugins are off "
                                     "(progressive_cli.config.pydantic_setup).")
    stub.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[_LOADER] = stub


disable_plugins()
