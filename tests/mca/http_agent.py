"""A real http agent for the messaging tests: `python http_agent.py PORT LOG`.

GET (any path) is its health check; each POST is logged to LOG as one JSON line (the request plus its
Idempotency-Key header) and answered with ``{"output": {"ack": <message id>}}``. Prints "ready" once
it listens.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, data: object) -> None:
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._answer({"status": "ok"})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request["header_key"] = self.headers.get("Idempotency-Key")
        with open(sys.argv[2], "a", encoding="utf-8") as log:
            log.write(json.dumps(request) + "\n")
        self._answer({"output": {"ack": request["params"]["id"]}})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
