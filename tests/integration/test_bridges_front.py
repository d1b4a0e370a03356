"""The local Cloud Run front, a real uvicorn proxy in front of a real HTTP server."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest

from surgesim.emulators.front import Front, FrontSettings, serve, stop
from surgesim.emulators.process import free_port
from tests.integration.bridges_support import LoopThread, Recorder

pytestmark = pytest.mark.integration


def test_429_beyond_concurrency_times_max_instances_and_auth():
    # The upstream holds each request long enough that all 7 arrive while the first 4 hold
    # every slot, even on a loaded machine where threads start late.
    upstream = Recorder(delay=3.0)
    settings = FrontSettings(concurrency=2, max_instances=2, cold_start_p50=0.05, cold_start_p99=None,
                             pending_timeout=0.3, scale_down_delay=900)
    front = Front("eta", upstream.url, settings, token="tok")
    lt = LoopThread()
    port = free_port()
    server = lt.run(serve(front, port))
    url = f"http://127.0.0.1:{port}/pubsub"
    try:
        assert httpx.post(url, json={}, trust_env=False).status_code == 401
        assert httpx.post(url, json={}, headers={"authorization": "Bearer other"}, trust_env=False).status_code == 403
        assert upstream.requests == []  # rejected before reaching the service

        def call(_):
            return httpx.post(url, json={"x": 1}, headers={"authorization": "Bearer tok"}, timeout=10,
                              trust_env=False).status_code

        with concurrent.futures.ThreadPoolExecutor(7) as pool:
            codes = sorted(pool.map(call, range(7)))
        # 2 instances x 2 concurrent requests are served; the rest wait 0.3 s then get 429
        assert codes == [204] * 4 + [429] * 3
        assert front.stats.rejected == 3 and front.stats.cold_starts == 2 and front.stats.peak_instances == 2
        assert upstream.peak_inflight <= 4
        assert front.stats.latency["/pubsub"].count == 4
        assert upstream.requests[0][1]["authorization"] == "Bearer tok"  # the token is passed on
    finally:
        lt.run(stop(server))
        lt.close()
        upstream.close()
