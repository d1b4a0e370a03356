"""The local Cloud Run front, a real uvicorn proxy in front of a real HTTP server."""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from surgesim.emulators.front import FRONT_SECRET_HEADER, Front, FrontSettings, serve, stop
from surgesim.emulators.identity import SIGNATURE_REMOVED, Issuer
from surgesim.emulators.process import free_port
from tests.integration.bridges_support import LoopThread, Recorder

pytestmark = pytest.mark.integration


PUSHER = "eta-push@p-local.iam.gserviceaccount.com"


def test_429_beyond_concurrency_times_max_instances_and_auth():
    # The upstream holds each request long enough that all 7 arrive while the first 4 hold
    # every slot, even on a loaded machine where threads start late.
    upstream = Recorder(delay=3.0)
    settings = FrontSettings(concurrency=2, max_instances=2, cold_start_p50=0.05, cold_start_p99=None,
                             pending_timeout=0.3, scale_down_delay=900)
    issuer = Issuer()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    front = Front("eta", upstream.url, settings, issuer=issuer, invokers=frozenset({f"serviceAccount:{PUSHER}"}),
                  audiences=[base], secret="s3cret")
    lt = LoopThread()
    server = lt.run(serve(front, port))
    url = base + "/pubsub"
    token = issuer.token(url, PUSHER)

    def post(auth=None, **headers):
        if auth:
            headers["authorization"] = "Bearer " + auth
        return httpx.post(url, json={}, headers=headers, trust_env=False, timeout=10).status_code

    try:
        # Cloud Run's run.invoker check: no token or one that does not verify -> 401,
        # a valid identity that is not an invoker -> 403
        assert post() == 401
        assert post("not-a-jwt") == 401
        assert post(Issuer().token(url, PUSHER)) == 401  # signed by another key
        assert post(issuer.token("http://127.0.0.1:1/pubsub", PUSHER)) == 401  # another service's audience
        assert post(issuer.token(url, "intruder@p-local.iam.gserviceaccount.com")) == 403
        assert post(token[:-4] + "AAAA") == 401  # tampered signature
        # the secret is the front's to add: a caller sending one does not get past the check
        assert post(**{FRONT_SECRET_HEADER: "s3cret"}) == 401
        assert upstream.requests == []  # rejected before reaching the service

        def call(_):
            return post(token)

        with concurrent.futures.ThreadPoolExecutor(7) as pool:
            codes = sorted(pool.map(call, range(7)))
        # 2 instances x 2 concurrent requests are served; the rest wait 0.3 s then get 429
        assert codes == [204] * 4 + [429] * 3
        assert front.stats.rejected == 3 and front.stats.cold_starts == 2 and front.stats.peak_instances == 2
        assert upstream.peak_inflight <= 4
        assert front.stats.latency["/pubsub"].count == 4
        # passed on as Cloud Run does after checking it: header and claims, no signature
        forwarded = upstream.requests[0][1]
        head, claims, sig = forwarded["authorization"][len("Bearer "):].split(".")
        assert token.startswith(f"{head}.{claims}.") and sig == SIGNATURE_REMOVED
        assert forwarded[FRONT_SECRET_HEADER] == "s3cret"
        assert front.stats.unauthorized == 7
    finally:
        lt.run(stop(server))
        lt.close()
        upstream.close()


def test_x_serverless_authorization_is_checked_instead_and_a_public_service_passes_tokens_untouched():
    upstream = Recorder()
    settings = FrontSettings(concurrency=10, max_instances=1, cold_start_p50=0.0, cold_start_p99=None)
    issuer = Issuer()
    ports = free_port(), free_port()
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    private = Front("eta", upstream.url, settings, issuer=issuer, invokers=frozenset({f"serviceAccount:{PUSHER}"}),
                    audiences=[bases[0]])
    public = Front("cmd", upstream.url, settings, issuer=issuer, invokers=None, audiences=[bases[1]])
    lt = LoopThread()
    servers = [lt.run(serve(private, ports[0])), lt.run(serve(public, ports[1]))]
    try:
        iam = "Bearer " + issuer.token(bases[0], PUSHER)
        # the app's own Authorization is left alone when Cloud Run's check uses X-Serverless-Authorization
        r = httpx.post(bases[0] + "/x", json={}, trust_env=False, timeout=10,
                       headers={"x-serverless-authorization": iam, "authorization": "Bearer app-session"})
        assert r.status_code == 204
        _, fwd, _ = upstream.requests[-1]
        assert fwd["authorization"] == "Bearer app-session"
        assert fwd["x-serverless-authorization"].endswith(".SIGNATURE_REMOVED_BY_GOOGLE")
        # with X-Serverless-Authorization present, a valid token in Authorization does not count
        r = httpx.post(bases[0] + "/x", json={}, trust_env=False, timeout=10,
                       headers={"x-serverless-authorization": "Bearer junk", "authorization": iam})
        assert r.status_code == 401
        # public (allUsers): no check, and a token reaches the handler whole (it can verify it itself)
        whole = "Bearer " + issuer.token(bases[1], PUSHER)
        assert httpx.post(bases[1] + "/y", json={}, headers={"authorization": whole}, trust_env=False).status_code == 204
        assert upstream.requests[-1][1]["authorization"] == whole
        assert httpx.post(bases[1] + "/y", json={}, trust_env=False).status_code == 204
    finally:
        for server in servers:
            lt.run(stop(server))
        lt.close()
        upstream.close()


class Echo(BaseHTTPRequestHandler):
    """Answers with what it received, gzip-encoded as a service may answer; /slow stalls."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/slow"):
            time.sleep(2.0)
        out = gzip.compress(json.dumps({"path": self.path, "body": body.decode(), "headers": dict(self.headers)}).encode())
        self.send_response(202)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Idempotent-Replayed", "true")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_the_request_and_answer_pass_through_unchanged_and_upstream_failures_map_to_5xx():
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    settings = FrontSettings(min_instances=1, request_timeout=0.5)
    front = Front("command", f"http://127.0.0.1:{upstream.server_address[1]}", settings)
    gone = Front("gone", f"http://127.0.0.1:{free_port()}", settings)  # nothing listens there
    lt = LoopThread()
    ports = free_port(), free_port()
    servers = [lt.run(serve(front, ports[0])), lt.run(serve(gone, ports[1]))]
    try:
        with httpx.Client(trust_env=False, timeout=10) as http:
            r = http.post(f"http://127.0.0.1:{ports[0]}/parcels/p1/delivered?dry=1", content=b'{"signedBy":"Ada"}',
                          headers={"Content-Type": "application/json", "X-Request-Id": "r1"})
            assert r.status_code == 202 and r.headers["idempotent-replayed"] == "true"
            assert r.headers["content-encoding"] == "gzip"  # the service's bytes, not re-encoded
            echoed = r.json()  # httpx decodes the gzip the service sent: the front passed it through
            assert echoed["path"] == "/parcels/p1/delivered?dry=1" and echoed["body"] == '{"signedBy":"Ada"}'
            sent = {k.lower(): v for k, v in echoed["headers"].items()}
            assert sent["x-request-id"] == "r1" and sent["content-type"] == "application/json"
            assert "accept-encoding" not in sent or sent["accept-encoding"] == r.request.headers["accept-encoding"]

            assert http.post(f"http://127.0.0.1:{ports[0]}/slow", content=b"{}").status_code == 504
            assert http.post(f"http://127.0.0.1:{ports[1]}/x", content=b"{}").status_code == 503
        assert front.stats.requests == 2 and front.stats.errors == 1 and gone.stats.errors == 1
    finally:
        for s in servers:
            lt.run(stop(s))
        lt.close()
        upstream.shutdown()


def test_a_revision_swap_costs_no_request():
    """As Cloud Run deploys: the front moves to the new revision, the old one finishes what
    it had (the front counts it until then), and a connection the dying revision drops is
    sent again to the new one instead of failing."""
    import socket

    old, new = Recorder(delay=1.0), Recorder()
    dying = socket.create_server(("127.0.0.1", 0))  # accepts, then drops the connection unanswered

    def drop():
        conn, _ = dying.accept()
        time.sleep(0.5)
        conn.close()

    threading.Thread(target=drop, daemon=True).start()
    settings = FrontSettings(min_instances=1, concurrency=20, cold_start_p50=0.0, cold_start_p99=None)
    front = Front("eta", old.url, settings)
    lt = LoopThread()
    port = free_port()
    server = lt.run(serve(front, port))
    url = f"http://127.0.0.1:{port}/pubsub"
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            held = [pool.submit(httpx.post, url, json={}, trust_env=False, timeout=10) for _ in range(5)]
            deadline = time.monotonic() + 5
            while len(old.requests) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            front.upstream = new.url
            assert not front.idle(old.url)  # five on their way to the old revision
            assert httpx.post(url, json={}, trust_env=False, timeout=10).status_code == 204
            assert [f.result().status_code for f in held] == [204] * 5
        assert front.idle(old.url) and len(old.requests) == 5 and len(new.requests) == 1

        front.upstream = f"http://127.0.0.1:{dying.getsockname()[1]}"
        sent = concurrent.futures.ThreadPoolExecutor(1).submit(httpx.post, url, json={}, trust_env=False, timeout=10)
        time.sleep(0.2)
        front.upstream = new.url  # the deploy moves on while the request is at the dying one
        assert sent.result().status_code == 204 and len(new.requests) == 2
        # with no deploy in between, a dropped connection is the front's 503, as before
        front.upstream = f"http://127.0.0.1:{free_port()}"
        assert httpx.post(url, json={}, trust_env=False, timeout=10).status_code == 503
    finally:
        lt.run(stop(server))
        lt.close()
        dying.close()
        for r in (old, new):
            r.close()
