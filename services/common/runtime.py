"""What every service shares as a Cloud Run container: configuration from the
environment, a FastAPI app with /healthz, trace propagation, 400 for bad input, JSON
logs, and `serve()` that listens on $PORT.

Reachable only through its front: with SURGESIM_FRONT_SECRET set (the live harness sets
it per run), every request but /healthz must carry it in X-Surgesim-Front-Secret, which
only the run's Cloud Run fronts (emulators/front.py) and the harness itself add; others
get 403. In the cloud nothing but Cloud Run can reach a container's port; locally any
process can reach any port, and this header stands in for that wall."""

from __future__ import annotations

import hmac
import logging
import os
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from . import logs, trace


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"environment variable {name} is required")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def project() -> str:
    return os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT") or "surgesim-local"


def describe_validation_error(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


class TraceMiddleware:
    """Sets the request's trace context (child of traceparent / X-Cloud-Trace-Context) for
    the logs and for what the handler passes on; echoes `traceparent` in the response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        ctx = trace.from_headers(headers)
        token = trace.current.set(ctx)

        async def send_with_trace(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"traceparent", ctx.traceparent.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            trace.current.reset(token)


FRONT_SECRET_ENV = "SURGESIM_FRONT_SECRET"
FRONT_SECRET_HEADER = b"x-surgesim-front-secret"  # as emulators/front.py sends it (the floors forbid importing it)
OPEN_PATHS = frozenset({"/healthz"})


class FrontOnlyMiddleware:
    """403 for a request without the run's front secret; the header is removed before the
    app sees the request, so the handler sees the headers Cloud Run would pass on."""

    def __init__(self, app, secret: str) -> None:
        self.app = app
        self.secret = secret.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = b""
        rest = []
        for k, v in scope.get("headers", []):
            if k.lower() == FRONT_SECRET_HEADER:
                given = v
            else:
                rest.append((k, v))
        if scope["path"] not in OPEN_PATHS and not hmac.compare_digest(given, self.secret):
            body = b'{"error": "forbidden", "detail": "this service is reachable only through its Cloud Run front"}'
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app({**scope, "headers": rest}, receive, send)


def create_app(service: str, *, lifespan=None, title: str | None = None, description: str = "") -> FastAPI:
    log = logs.setup(service)
    app = FastAPI(title=title or service, description=description, lifespan=lifespan)
    app.state.log = log
    app.state.service = service
    app.state.started = time.time()
    app.add_middleware(TraceMiddleware)
    secret = os.environ.get(FRONT_SECRET_ENV)
    if secret:
        app.add_middleware(FrontOnlyMiddleware, secret=secret)  # outermost: checked first

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # A malformed command is the caller's mistake: 400 with what is wrong, never 5xx.
        msg = describe_validation_error(exc)
        log.info("rejected invalid request", extra={"path": request.url.path, "error": msg})
        return JSONResponse({"error": "invalid request", "detail": msg}, status_code=400)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
        return JSONResponse({"error": "internal error", "detail": f"{type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/healthz", include_in_schema=False)
    async def _healthz() -> dict[str, Any]:
        # pid: whoever started this process can tell it from another one on the same port
        return {"status": "ok", "service": service, "pid": os.getpid(),
                "uptime_s": round(time.time() - app.state.started, 3)}

    return app


def serve(target: str | Any, port: int | None = None) -> None:
    """Run an ASGI app (object or `module:attr`) on $PORT, as Cloud Run starts a container."""
    import uvicorn

    uvicorn.run(
        target,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=port or int(os.environ.get("PORT", "8080")),
        log_level=os.environ.get("UVICORN_LOG_LEVEL", "warning"),
        access_log=False,
    )


def log_of(app: FastAPI) -> logging.Logger:
    return app.state.log
