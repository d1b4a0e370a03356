"""A service started on a port that another process already serves must not be taken for
ready: its /healthz says which process answers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from surgesim.services.common.devserver import free_port, run_service, start_service

pytestmark = pytest.mark.integration

TARGET = "surgesim.services.fakes.gateway:sms_app"  # needs no emulator


class _Impostor(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"status": "ok", "service": "someone-else", "pid": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_port_served_by_another_process_is_an_error_not_a_ready_service() -> None:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(RuntimeError, match=rf"port {port} is already served by another process \(pid 1\)"):
            start_service(TARGET, port=port, timeout=20)
    finally:
        server.shutdown()
        server.server_close()


def test_a_started_service_reports_its_own_pid() -> None:
    with run_service(TARGET) as svc:
        assert httpx.get(svc.url + "/healthz", trust_env=False).json()["pid"] == svc.proc.pid
    assert svc.proc.poll() is not None
