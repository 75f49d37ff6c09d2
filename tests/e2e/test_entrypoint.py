"""The installed `progressive` console script, run as a user would: in subprocesses."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "progressive"
HEAVY = ("textual", "chromadb", "httpx", "psycopg", "redis", "pymongo", "pybreaker", "apscheduler.schedulers")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSIVE_") and k != "NO_COLOR"}
    full_env.update(env or {})
    return subprocess.run([str(BIN), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: install the package (pip install -e .) before running the tests")


def test_version_and_help() -> None:
    r = run("--version")
    assert r.returncode == 0 and re.fullmatch(r"progressive \d+\.\d+\.\d+\n", r.stdout)
    r = run("--help")
    assert r.returncode == 0 and "Exit codes:" in r.stdout and r.stderr == ""


def test_python_dash_m_works() -> None:
    r = subprocess.run([sys.executable, "-m", "progressive_cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("progressive ")


def _imported_modules(*args: str, env: dict[str, str] | None = None) -> set[str]:
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('\\nMODULES=' + ','.join(sorted(sys.modules)) + '\\n'))\n"
        f"sys.argv = ['progressive', *{list(args)!r}]\n"
        "from progressive_cli.cli.main import main\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2],
                       env=env)
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("MODULES="))
    return set(line.removeprefix("MODULES=").split(","))


@pytest.mark.parametrize("args", [("--help",), ("validate",), ("agents", "list"), ("workflows", "show", "hello")])
def test_import_hygiene(args: tuple[str, ...]) -> None:
    modules = _imported_modules(*args)
    leaked = sorted(m for m in modules for heavy in HEAVY if m == heavy or m.startswith(heavy + "."))
    assert not leaked, f"`progressive {' '.join(args)}` imported {leaked}"


def test_health_import_hygiene(repo_root: Path, tmp_path: Path) -> None:
    """`health` on the shipped project, with no server configured, loads no driver or client library, no
    TUI, and not importlib.metadata (pydantic's plugin scan; ~15 ms of every start)."""
    for name in ("agents.yaml", "integrations.yaml"):
        shutil.copy(repo_root / name, tmp_path / name)
    shutil.copytree(repo_root / "workflows", tmp_path / "workflows")
    secrets = set(re.findall(r"\$\{env:(\w+)\}", (repo_root / "integrations.yaml").read_text()))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PROGRESSIVE_") and k not in secrets and k != "PYDANTIC_DISABLE_PLUGINS"}
    modules = _imported_modules("-p", str(tmp_path), "health", "-o", "json", env=env)
    leaked = sorted(m for m in modules for heavy in (*HEAVY, "importlib.metadata", "apscheduler")
                    if m == heavy or m.startswith(heavy + "."))
    assert not leaked, f"`progressive health -o json` imported {leaked}"
    assert "progressive_cli.health.monitor" in modules  # it did run the checks


def test_help_does_not_load_config_stack() -> None:
    modules = _imported_modules("--help")
    for heavy in ("pydantic", "yaml", "rich", "asyncio", "sqlite3"):
        assert heavy not in modules, f"--help imported {heavy}"


def test_validate_shipped_project(repo_root: Path) -> None:
    r = run("validate", cwd=repo_root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: ")


def test_broken_project_exit_2_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "a.yaml").write_bytes(b"name: a\nsteps:\n  - {id: x, type: wait, duration: 5x}\n")
    (tmp_path / "workflows" / "b.yaml").write_bytes(b"\xff\xfe\x00garbage")
    r = run("validate", cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        "workflows/a.yaml:3:35: steps[0].duration: '5x' is not a duration; use e.g. 500ms, 30s, 5m, 1h or 1m30s",
        "workflows/b.yaml:1:1: binary file (NUL byte); expected UTF-8 YAML text",
    ]


def test_dashboard_on_a_broken_project_is_the_same_one_line_errors(tmp_path: Path) -> None:
    """The child that loads the project ahead fails quietly; this process reports the errors (exit 2)."""
    (tmp_path / "agents.yaml").write_text("agents:\n  - id: npa\n    kind: builtin\n    colour: blue\n")
    r = run("dashboard", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert "Traceback" not in r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("agents.yaml:4:5: agents[0].colour: unknown key 'colour'"), r.stderr
    assert run("validate", cwd=tmp_path).stderr == r.stderr  # word for word what validate says
    assert not (tmp_path / ".progressive").exists()  # nothing written, no store made


def test_json_goes_to_stdout_only(repo_root: Path) -> None:
    r = run("integrations", "list", "-o", "json", cwd=repo_root)
    assert r.returncode == 0 and r.stderr == ""
    assert len(json.loads(r.stdout)) == 11


def test_init_then_validate(tmp_path: Path) -> None:
    r = run("init", "proj", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == ""
    r = run("validate", cwd=tmp_path / "proj")
    assert r.returncode == 0 and r.stdout.startswith("ok: 4 agents, 1 integrations, 1 workflow")


def test_broken_pipe_is_quiet(repo_root: Path) -> None:
    r = subprocess.run(f"'{BIN}' schema | head -c 10", shell=True, cwd=repo_root, capture_output=True, text=True)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


def _tty_output(args: list[str], env: dict[str, str], cwd: Path) -> str:
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.execve(str(BIN), [str(BIN), *args], {**{k: v for k, v in os.environ.items() if k != "NO_COLOR"}, **env})
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX system")
def test_no_color_on_a_tty(repo_root: Path) -> None:
    colour = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|9[0-7]|38;)")
    coloured = _tty_output(["validate"], {"TERM": "xterm-256color"}, repo_root)
    assert colour.search(coloured), "warnings should be coloured on a terminal"
    plain = _tty_output(["validate"], {"TERM": "xterm-256color", "NO_COLOR": "1"}, repo_root)
    assert not colour.search(plain) and "USDA_API_KEY" in plain
    plain = _tty_output(["--no-color", "agents", "list"], {"TERM": "xterm-256color"}, repo_root)
    assert not colour.search(plain) and "npa" in plain
