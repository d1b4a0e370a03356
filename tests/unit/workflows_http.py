"""A real HTTP server on 127.0.0.1 for the workflow executor's tests: each path answers from a
script of (status, json body) responses, and every request is kept for assertions."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedServer:
    def __init__(self) -> None:
        self.scripts: dict[tuple[str, str], list[tuple[int, object]]] = {}
        self.requests: list[dict] = []
        self.delay_s: dict[str, float] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                outer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                       "body": json.loads(raw) if raw else None})
                if path in outer.delay_s:
                    threading.Event().wait(outer.delay_s[path])
                script = outer.scripts.get((self.command, path))
                status, body = (script.pop(0) if len(script) > 1 else script[0]) if script else (404, {"error": "no route"})
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def on(self, method: str, path: str, *responses: tuple[int, object]) -> None:
        """Answer these in turn; the last one repeats."""
        self.scripts[(method, path)] = list(responses)

    def hits(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"].split("?")[0] == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
