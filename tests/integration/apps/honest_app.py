"""A user's own service for the honest-verdict live tests (`command:` in
tests/integration/scenarios/honest/system.yaml), standard library only, on $PORT:

    GET  /healthz  200
    POST /items    writes one document to Firestore's `items` (REST, FIRESTORE_EMULATOR_HOST), 202
    POST /reject   400 always: the body it wants is never sent
    POST anything else (a trigger's CloudEvent)  400 when REJECT_EVENTS=1, else 204
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FIRESTORE = os.environ.get("FIRESTORE_EMULATOR_HOST", "")
PROJECT = os.environ.get("GOOGLE_CLOUD_PROJECT", "")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args) -> None:  # quiet: the harness keeps the log
        pass

    def _answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/healthz" else 404, b"ok")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/items":
            doc = {"fields": {"n": {"stringValue": str(uuid.uuid4())}}}
            url = (f"http://{FIRESTORE}/v1/projects/{PROJECT}/databases/(default)/documents/items"
                   f"?documentId={uuid.uuid4().hex}")
            req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=10).read()
            return self._answer(202, b"{}")
        if self.path == "/reject":
            return self._answer(400, b'{"error": "a body with an orderId is required"}')
        self._answer(400 if os.environ.get("REJECT_EVENTS") == "1" else 204)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
