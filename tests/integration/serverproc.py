"""What the test servers (servers_pg_redis.py, servers_mongo_chroma.py) have in common: a server as a
child process on a free 127.0.0.1 port, with its files in a ``tempfile.mkdtemp()`` directory.

- :class:`ServerProcess` starts the server (``command()``), waits until it answers (``ready()``),
  stops it (``stop()``, also ``with server.stopped(): ...`` and ``restart()``) and at the end removes
  its directory (``cleanup()``). A stopped server starts again on the same port with the same data.
- On Linux the child gets a parent-death signal, so a killed pytest run leaves no server behind.
- :func:`serving` is the body of a session fixture: start, yield, clean up however the session ends.

Plain Python, no pytest: ``bench/`` starts these servers too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

__all__ = ["ServerProcess", "free_port", "serving"]

_PRCTL: Callable[[int, int], int] | None = None
if sys.platform == "linux":
    with contextlib.suppress(OSError, AttributeError):
        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: between fork and exec only prctl runs
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A 127.0.0.1 port that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The kernel sends the child SIGTERM when the pytest process dies without tearing down (e.g.
    killed). ``subprocess`` calls a ``preexec_fn`` after switching user, which would clear it."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ServerProcess:
    """A server subprocess on a fixed port, restartable; its log is kept in its temporary directory.

    A subclass gives ``command()`` and ``ready()``, and may set the class attributes below, and
    ``user``/``group``/``extra_groups`` (in ``__init__``) to run the server as another user."""

    name = "server"
    start_timeout = 60.0
    stop_timeout = 15.0
    stop_signal: int = signal.SIGTERM
    env_drop: tuple[str, ...] = ()
    """Prefixes of environment variables the server does not inherit from the test run."""

    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.port = free_port()
        self.log_path = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: int | None = None  # run as this user and group, with these supplementary groups
        self.group: int | None = None
        self.extra_groups: list[int] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float | None = None) -> None:
        """Start the server (no-op if it runs) and wait until it answers."""
        if self.running:
            return
        timeout = self.start_timeout if timeout is None else timeout
        env = {k: v for k, v in os.environ.items() if not (self.env_drop and k.startswith(self.env_drop))}
        env["NO_COLOR"] = "1"
        # PDEATHSIG fires when the forking *thread* ends, so only from the main thread
        preexec = _die_with_parent if _PRCTL is not None and threading.current_thread() is threading.main_thread() \
            else None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=preexec, user=self.user, group=self.group,
                extra_groups=self.extra_groups,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode} while starting")
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        self._fail(f"did not answer within {timeout:.0f} s")

    def _fail(self, what: str) -> NoReturn:
        raise RuntimeError(f"{self.name} on 127.0.0.1:{self.port} {what}: {' '.join(self.command())}\n"
                           f"--- log {self.log_path} ---\n{_tail(self.log_path)}")

    def stop(self, sig: int | None = None) -> None:
        """Stop the server with *sig* (default ``stop_signal``; no-op if it is not running), killing it
        after ``stop_timeout``; its data stays for the next start()."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal if sig is None else sig)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.stop_timeout)
        # the port must be free before a restart binds it again
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline and self._port_open():
            time.sleep(0.05)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stop the server for the block, then start it again on the same port."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


S = TypeVar("S", bound=ServerProcess)


def serving(server: S) -> Iterator[S]:
    """The body of a session fixture (``yield from serving(PgServer())``): the started server, stopped
    and removed however the session ends (one per xdist worker; tests may stop and start it)."""
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
