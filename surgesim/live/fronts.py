"""Every service's Cloud Run front (emulators/front.py) served from one asyncio loop in a
thread of the harness, each on its own free port; and the run's token certificates
(emulators/identity.py certs_app) on one more, for handlers that verify tokens."""

from __future__ import annotations

import asyncio
import threading
import time

from surgesim.emulators import front as front_mod
from surgesim.emulators.front import Front, FrontSettings
from surgesim.emulators.identity import Issuer, certs_app
from surgesim.services.common.devserver import free_port


LOOPBACK = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::", "")


def reachable_host(bind: str) -> str:
    """The host in the URLs of what listens on `bind`: the address itself, or the loopback
    for a wildcard (every local caller reaches 0.0.0.0 through 127.0.0.1)."""
    return LOOPBACK if bind in WILDCARDS else bind


class FrontSet:
    def __init__(self, host: str = LOOPBACK) -> None:
        """host: the address the fronts listen on (`surgesim live --bind`); 127.0.0.1 keeps
        them to this machine. Their URLs use reachable_host(host)."""
        self.host = host
        self.fronts: dict[str, Front] = {}
        self.ports: dict[str, int] = {}
        self._servers: dict[str, object] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            try:  # uvloop: a cheaper event loop for every proxied request
                import uvloop

                self._loop = uvloop.new_event_loop()
            except ImportError:
                self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="surgesim-fronts", daemon=True)
            self._thread.start()
        return self._loop

    def add(self, name: str, upstream: str, settings: FrontSettings, *, issuer: Issuer | None = None,
            invokers: frozenset[str] | None = None, secret: str | None = None, seed: int = 0,
            timeout: float = 15.0) -> str:
        """Start a front for `name` proxying to `upstream`; returns its URL, which is also
        the audience its invoker check accepts (and any URL under it)."""
        loop = self._ensure_loop()
        port = free_port()
        f = Front(name, upstream, settings, issuer=issuer, invokers=invokers,
                  audiences=[f"http://{reachable_host(self.host)}:{port}"], secret=secret, seed=seed)
        server = asyncio.run_coroutine_threadsafe(front_mod.serve(f, port, self.host), loop).result(timeout)
        self.fronts[name], self.ports[name], self._servers[name] = f, port, server
        return self.url(name)

    def serve_certs(self, issuer: Issuer, timeout: float = 15.0) -> str:
        """Publish the run's token keys; returns the base URL (``/oauth2/v1/certs``,
        ``/oauth2/v3/certs`` under it)."""
        loop = self._ensure_loop()
        port = free_port()
        server = asyncio.run_coroutine_threadsafe(front_mod.serve(certs_app(issuer), port, lifespan="off"),
                                                  loop).result(timeout)
        self._servers[" certs"] = server  # not a service name (those are ids without spaces)
        return f"http://127.0.0.1:{port}"

    def serve_app(self, key: str, app, timeout: float = 15.0) -> int:
        """Serve another ASGI app of the run in the fronts' loop (a BigQuery job clock);
        key: a name with a space, never a service's; returns its port."""
        loop = self._ensure_loop()
        port = free_port()
        self._servers[key] = asyncio.run_coroutine_threadsafe(front_mod.serve(app, port), loop).result(timeout)
        return port

    def url(self, name: str) -> str:
        return f"http://{reachable_host(self.host)}:{self.ports[name]}"

    def retarget(self, name: str, upstream: str) -> None:
        """Point a front at a restarted service process (the front, its URL and its
        instances stay: a Cloud Run revision swap behind the same URL)."""
        self.fronts[name].upstream = upstream.rstrip("/")

    def wait_idle(self, name: str, old_upstream: str, timeout: float) -> bool:
        """Wait until no request of `name`'s front is on its way to `old_upstream` (after a
        retarget), at most `timeout` s; True if it got there."""
        front = self.fronts[name]
        deadline = time.monotonic() + timeout
        while not front.idle(old_upstream):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stats(self) -> dict[str, dict]:
        out = {}
        for name, f in self.fronts.items():
            s = f.stats
            out[name] = {"requests": s.requests, "rejected": s.rejected, "errors": s.errors, "client_errors": s.client_errors,
                         "unauthorized": s.unauthorized, "cold_starts": s.cold_starts,
                         "peak_instances": s.peak_instances, "instances": f.instance_count()}
        return out

    def stop(self, timeout: float = 15.0) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            for name, server in list(self._servers.items()):
                try:
                    asyncio.run_coroutine_threadsafe(front_mod.stop(server), loop).result(timeout)
                except Exception:  # noqa: BLE001 -- one stuck front must not keep the others up
                    pass
        finally:
            self._servers.clear()
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
            loop.close()
