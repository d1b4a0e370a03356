"""A trivial real HTTP target for the load generators' tests and benchmarks: accepts any
request with 202, optionally after a delay (the slow server), and remembers what it got
(path, X-Request-Id, X-Intended-Time, content type, body size).

    with serve(build_app(delay_s=0.05)) as (url, seen): ...

`serve` runs uvicorn in a thread of the calling process on 127.0.0.1 and an ephemeral
port, so nothing outlives the `with`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Iterator

from fastapi import FastAPI, Request, Response

from surgesim.ports import free_port  # noqa: F401  (re-exported: callers import it from here)


def build_app(delay_s: float = 0.0, serial: bool = False, status: int = 202) -> FastAPI:
    """delay_s: each request takes this long. serial: one request at a time (a server with
    one slot), so a burst queues behind it. status: what every request is answered (a
    broken target: 500)."""
    app = FastAPI()
    app.state.seen = []
    lock = asyncio.Lock()

    async def handle(request: Request, path: str) -> Response:
        body = await request.body()
        if serial:
            async with lock:
                await asyncio.sleep(delay_s)
        elif delay_s:
            await asyncio.sleep(delay_s)
        app.state.seen.append({"path": "/" + path, "method": request.method, "at": time.time(),
                               "request_id": request.headers.get("x-request-id"),
                               "intended": request.headers.get("x-intended-time"),
                               "content_type": request.headers.get("content-type", ""), "bytes": len(body),
                               "authorization": request.headers.get("authorization")})
        return Response(b'{"ok":true}' if status < 400 else b'{"error":"broken"}', status_code=status,
                        media_type="application/json")

    app.add_api_route("/{path:path}", handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    return app


@contextlib.contextmanager
def serve(app: FastAPI, port: int | None = None) -> Iterator[tuple[str, list]]:
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name=f"target-{port}", daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("target server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app.state.seen
    finally:
        server.should_exit = True
        thread.join(10)
