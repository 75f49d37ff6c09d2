"""`progressive init`: the files of a new project, shipped as package data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from progressive_cli.errors import UsageError
from progressive_cli.util import atomic_write

FILES = ("agents.yaml", "integrations.yaml", "progressive.yaml", "workflows/hello.yaml", ".gitignore")


def write_scaffold(directory: Path, *, force: bool = False) -> list[Path]:
    """Write every scaffold file, or none: existing files stop it unless ``force``."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"init DIRECTORY {directory}: exists and is not a directory")
    targets = [directory / name for name in FILES]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        names = ", ".join(str(t) for t in existing)
        raise UsageError(f"init: {names} already exist(s); use --force to overwrite")
    package = resources.files(__package__)
    contents = [(t, package.joinpath(name.replace(".gitignore", "gitignore")).read_text("utf-8"))
                for t, name in zip(targets, FILES, strict=True)]
    for target, text in contents:
        atomic_write(target, text)
    return targets
