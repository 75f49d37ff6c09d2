"""A controllable HTTP server for the http integration tests.

Run as ``python http_server.py`` it listens on a free 127.0.0.1 port in its own process (so its clock
readings are not delayed by the test process's GIL), prints ``ready PORT`` and serves until it is
stopped or its parent dies. Every request outside ``/__control`` is logged with its arrival time
(``time.monotonic()``, which on Linux is one system-wide clock, so comparable with the test process's)
and answered with the next queued reply, or else the default reply.

A reply is a JSON object: ``status`` (200), ``headers`` ({}), ``body`` (JSON value; default
``{"ok": true}``), ``delay`` (seconds to sleep before answering, for timeouts) and
``retry_after_date`` (seconds ahead: adds a ``Retry-After`` header in HTTP-date form, computed when
the reply is sent). The string ``{authorization}`` in a text body is replaced by the request's
Authorization header (a server that echoes credentials in its errors).

The control API, used through :class:`HttpServer` in the tests:

- ``POST /__control/default`` (a reply): the answer to every request from now on;
- ``POST /__control/queue`` (a list of replies): answered, in order, before the default;
- ``GET /__control/log``: ``[{at, method, path, query, headers, body}]`` in arrival order;
- ``POST /__control/reset``: empty log and queue, default 200.
"""

from __future__ import annotations

import email.utils
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

CONTROL = "/__control"
DEFAULT_REPLY: dict[str, Any] = {"status": 200}


# --- the server (runs in the child process) --------------------------------------------------------------
class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[dict[str, Any]] = []
        self.queue: list[dict[str, Any]] = []
        self.default: dict[str, Any] = dict(DEFAULT_REPLY)


STATE = _State()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and went away
            self.close_connection = True

    def _handle(self) -> None:
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        if url.path.startswith(CONTROL):
            self._control(url.path.removeprefix(CONTROL), raw)
            return
        with STATE.lock:
            STATE.log.append({"at": arrived, "method": self.command, "path": url.path,
                              "query": parse_qsl(url.query, keep_blank_values=True),
                              "headers": {k.lower(): v for k, v in self.headers.items()},
                              "body": raw.decode("utf-8", "replace")})
            reply = STATE.queue.pop(0) if STATE.queue else STATE.default
        if reply.get("delay"):
            time.sleep(float(reply["delay"]))
        headers = {str(k): str(v) for k, v in (reply.get("headers") or {}).items()}
        if reply.get("retry_after_date") is not None:
            headers["Retry-After"] = email.utils.formatdate(time.time() + float(reply["retry_after_date"]),
                                                            usegmt=True)
        body = reply.get("body", {"ok": True})
        if isinstance(body, str):
            data = body.replace("{authorization}", self.headers.get("Authorization", "")).encode()
            headers.setdefault("Content-Type", "text/plain")
        else:
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        self._send(int(reply.get("status", 200)), headers, data)

    def _control(self, what: str, raw: bytes) -> None:
        answer: Any = {"ok": True}
        with STATE.lock:
            if what == "/default":
                STATE.default = json.loads(raw)
            elif what == "/queue":
                STATE.queue.extend(json.loads(raw))
            elif what == "/log":
                answer = list(STATE.log)
            elif what == "/reset":
                STATE.log.clear()
                STATE.queue.clear()
                STATE.default = dict(DEFAULT_REPLY)
            else:
                self._send(404, {}, b"unknown control")
                return
        self._send(200, {"Content-Type": "application/json"}, json.dumps(answer).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


def _watch_parent(parent: int) -> None:
    """Exit when the process that started us is gone (a killed pytest run leaves nothing behind)."""
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.5)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    """The listen backlog; socketserver's 5 drops SYNs from a burst of new connections, and the
    client's retransmission a second later would distort the arrival times."""


def main() -> None:
    server = Server(("127.0.0.1", 0), Handler)
    parent = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.05)


# --- the handle the tests use ------------------------------------------------------------------------------
@dataclass
class Seen:
    at: float
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: str


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HttpServer:
    """The server process, started on a free port; ``stop()`` leaves the port closed."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(os.getpid())],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if len(line) != 2 or line[0] != "ready":
            self.process.kill()
            raise RuntimeError(f"http_server.py did not start: {line!r}")
        self.port = int(line[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def _call(self, what: str, data: Any = None) -> Any:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(self.url + CONTROL + what, data=body, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        with _DIRECT.open(request, timeout=10) as response:
            return json.loads(response.read())

    def default(self, status: int = 200, **reply: Any) -> None:
        """Answer every request (after the queued ones) with this reply."""
        self._call("/default", {"status": status, **reply})

    def queue(self, *replies: dict[str, Any]) -> None:
        """Answer the next requests with these replies, in order."""
        self._call("/queue", list(replies))

    def reset(self) -> None:
        self._call("/reset", {})

    def log(self) -> list[Seen]:
        return [Seen(r["at"], r["method"], r["path"], [tuple(q) for q in r["query"]], r["headers"], r["body"])
                for r in self._call("/log")]

    def arrivals(self) -> list[float]:
        return [seen.at for seen in self.log()]

    def count(self) -> int:
        return len(self._call("/log"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextmanager
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    try:
        yield server
    finally:
        server.stop()


def max_in_window(times: list[float], window: float) -> int:
    """The most arrivals in any window [t, t + window) that starts at an arrival."""
    ordered = sorted(times)
    best = 0
    end = 0
    for start, t in enumerate(ordered):
        while end < len(ordered) and ordered[end] < t + window:
            end += 1
        best = max(best, end - start)
    return best


if __name__ == "__main__":
    main()
