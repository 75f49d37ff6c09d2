"""MongoDB wire protocol and Chroma servers for tests.

- MongoDB: ``secantusd-py`` from the ``secantusdb`` package (a standalone MongoDB-wire server in
  Python on WiredTiger), run as ``python -m secantus --standalone`` in a subprocess on a free port
  with its data in a temporary directory.
- Chroma: ``chroma run --path DIR --host 127.0.0.1 --port PORT`` (the Rust server shipped in the
  ``chromadb`` wheel; the ``chroma`` script sits next to ``sys.executable``).

Both are session-scoped (under pytest-xdist each worker starts its own) and stopped, with their
directories removed, at session end. ``mongo_server`` and ``chroma_http_server`` can be stopped and
started again on the same port with the same data (``.stop()``, ``.start()``, ``.restart()``), for
tests of "server down -> NETWORK_ERROR / unhealthy -> back up -> works". A test that stops one must
start it again before it ends (``try/finally``): later tests in the session share it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "ChromaHttpServer",
    "MongoServer",
    "chroma_http_server",
    "chroma_path",
    "chroma_server",
    "mongo_server",
    "mongo_uri",
]

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_LIBC: ctypes.CDLL | None = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL(None)  # loaded here: between fork and exec the child only calls prctl


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM if pytest dies without tearing down (e.g. killed)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _ServerProcess:
    """A server subprocess on a fixed port, restartable; its log is kept in the temporary directory."""

    name = "server"

    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.port = free_port()
        self.log_path = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server (no-op if it runs) and wait until it answers."""
        if self.running:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHROMA_", "SECANTUS"))}
        env["NO_COLOR"] = "1"
        # PDEATHSIG fires when the forking *thread* ends, so only from the main thread
        preexec = _die_with_parent if _LIBC is not None and threading.current_thread() is threading.main_thread() \
            else None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode} while starting")
            if self.ready():
                return
            time.sleep(0.1)
        self.stop()
        self._fail(f"did not answer within {timeout:.0f}s")

    def _fail(self, what: str) -> None:
        tail = ""
        with contextlib.suppress(OSError):
            tail = self.log_path.read_text(errors="replace")[-3000:]
        pytest.fail(f"{self.name} on 127.0.0.1:{self.port} {what}: {' '.join(self.command())}\n--- log tail ---\n"
                    f"{tail}", pytrace=False)

    def stop(self) -> None:
        """Stop the server (no-op if it is not running); its data stays for the next start()."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        # the port must be free before a restart binds it again
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and self._port_open():
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


class MongoServer(_ServerProcess):
    """secantusdb (MongoDB wire protocol) as a standalone server: ``.uri``, ``.start()``, ``.stop()``."""

    name = "secantusdb (MongoDB wire server)"

    def __init__(self) -> None:
        super().__init__("progressive-mongo-")
        self.config_file = self.dir / "secantusd.toml"
        self.config_file.write_text("")  # an explicit (empty) config: no discovery of ~/.secantus or /etc

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "secantus", "--config", str(self.config_file), "--host", "127.0.0.1",
                "--port", str(self.port), "--storage-path", str(self.dir / "data"), "--standalone",
                "--log-level", "WARNING", "--cache-size", "128M"]

    def ready(self) -> bool:
        import pymongo

        try:
            with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500,
                                     directConnection=True) as client:
                client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False


class ChromaHttpServer(_ServerProcess):
    """``chroma run`` on 127.0.0.1: ``.host``, ``.port``, ``.url``, ``.start()``, ``.stop()``."""

    name = "chroma run"
    host = "127.0.0.1"

    def __init__(self) -> None:
        super().__init__("progressive-chroma-")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        chroma = Path(sys.executable).parent / "chroma"
        return [str(chroma), "run", "--path", str(self.dir / "data"), "--host", self.host, "--port", str(self.port)]

    def ready(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy
        try:
            with opener.open(f"{self.url}/api/v2/heartbeat", timeout=1) as response:
                return response.status == 200 and "nanosecond heartbeat" in json.loads(response.read())
        except (OSError, ValueError):  # URLError, connection refused, reset, bad JSON
            return False


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer]:
    server = MongoServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: MongoServer) -> str:
    """``mongodb://127.0.0.1:PORT`` of the session's MongoDB-wire server (no auth)."""
    return mongo_server.uri


@pytest.fixture(scope="session")
def chroma_http_server() -> Iterator[ChromaHttpServer]:
    server = ChromaHttpServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def chroma_server(chroma_http_server: ChromaHttpServer) -> tuple[str, int]:
    """(host, port) of the session's ``chroma run`` server."""
    return chroma_http_server.host, chroma_http_server.port


@pytest.fixture
def chroma_path() -> Iterator[str]:
    """A fresh, empty directory for a ``chromadb.PersistentClient`` (one per test), removed afterwards."""
    path = tempfile.mkdtemp(prefix="progressive-chromadb-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
