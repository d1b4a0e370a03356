"""Helpers for the bridge integration tests (no tests here): a tiny real HTTP server that
records what it receives, and a bridge event loop in a thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class Recorder:
    """A real HTTP server on 127.0.0.1: records (path, headers, json body) and answers
    with ``respond(body) -> status`` after ``delay`` seconds."""

    def __init__(self, respond: Callable[[dict], int] = lambda body: 204, delay: float = 0.0) -> None:
        self.respond = respond
        self.delay = delay
        self.requests: list[tuple[str, dict, dict]] = []
        self.raw: list[bytes] = []
        """Each request's body as it came (a protobuf CloudEvent is not JSON)."""
        self.times: list[float] = []
        """time.monotonic() at each request's arrival."""
        self.lock = threading.Lock()
        self.inflight = 0
        self.peak_inflight = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    data = json.loads(body) if body else {}
                except ValueError:
                    data = {"_raw": body.decode(errors="replace")}
                with outer.lock:
                    outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, data))
                    outer.raw.append(body)
                    outer.times.append(time.monotonic())
                    outer.inflight += 1
                    outer.peak_inflight = max(outer.peak_inflight, outer.inflight)
                try:
                    if outer.delay:
                        time.sleep(outer.delay)
                    status = outer.respond(data)
                finally:
                    with outer.lock:
                        outer.inflight -= 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict]:
        with self.lock:
            return [b for _, _, b in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(cond: Callable[[], bool], timeout: float = 20.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def fresh(prefix: str) -> str:
    """Fresh Pub/Sub names per test: recreating a name degrades the emulator."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class LoopThread:
    """An asyncio loop in a daemon thread; run(coro) blocks for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
