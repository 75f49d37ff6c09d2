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
start it again before it ends (``try/finally``): later tests in the session share it. The process
plumbing is serverproc.py's, shared with servers_pg_redis.py.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import ServerProcess, serving

__all__ = [
    "ChromaHttpServer",
    "MongoServer",
    "chroma_http_server",
    "chroma_path",
    "chroma_server",
    "mongo_server",
    "mongo_uri",
]

_ENV_DROP = ("CHROMA_", "SECANTUS")  # the test run's settings for these servers do not reach them


class MongoServer(ServerProcess):
    """secantusdb (MongoDB wire protocol) as a standalone server: ``.uri``, ``.start()``, ``.stop()``."""

    name = "secantusdb (MongoDB wire server)"
    env_drop = _ENV_DROP

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


class ChromaHttpServer(ServerProcess):
    """``chroma run`` on 127.0.0.1: ``.host``, ``.port``, ``.url``, ``.start()``, ``.stop()``."""

    name = "chroma run"
    env_drop = _ENV_DROP
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
    yield from serving(MongoServer())


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: MongoServer) -> str:
    """``mongodb://127.0.0.1:PORT`` of the session's MongoDB-wire server (no auth)."""
    return mongo_server.uri


@pytest.fixture(scope="session")
def chroma_http_server() -> Iterator[ChromaHttpServer]:
    yield from serving(ChromaHttpServer())


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
