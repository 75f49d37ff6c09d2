"""State stores: the embedded SQLite file by default; PostgreSQL arrives with the distributed backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from progressive_cli.errors import UnavailableError

if TYPE_CHECKING:
    from progressive_cli.config.project import Project
    from progressive_cli.store.base import StateStore


def project_store(project: Project) -> StateStore:
    """The store a project's settings name."""
    state = project.settings.state
    return open_store(state.url, project.root, durability=state.durability)


def open_store(url: str, root: Path, *, durability: str = "normal") -> StateStore:
    """Open the store named by ``state.url`` (resolving ``${env:...}``), relative paths under ``root``."""
    from progressive_cli.config.secrets import MissingSecretError, resolve

    try:
        resolved = resolve(url)
    except MissingSecretError as exc:
        raise UnavailableError(f"state.url: {exc}") from None
    if resolved.startswith("sqlite:///"):
        from progressive_cli.store.sqlite import SQLiteStore, path_from_url

        return SQLiteStore(path_from_url(resolved, root), durability=durability)
    scheme = resolved.split(":", 1)[0]
    raise UnavailableError(f"state.url: the '{scheme}' backend is not available yet; use sqlite:///PATH")
