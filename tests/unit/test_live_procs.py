"""A user's own `command:` process: run in the system file's folder, ready on a TCP connect
unless the system names a `health_path` (then on its first 2xx). Real processes on
127.0.0.1, stopped by each test."""

from __future__ import annotations

import sys
import textwrap

import httpx
import pytest

from surgesim.live.procs import Proc
from surgesim.services.common.devserver import free_port

SERVER = textwrap.dedent("""\
    import http.server, os, sys
    seen = open("requests.log", "a", buffering=1)
    count = {"ready": 0}

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.write(self.path + "\\n")
            status = 200
            if self.path == "/ready":
                count["ready"] += 1
                status = 200 if count["ready"] > 3 else 503
            self.send_response(status)
            self.end_headers()
        def log_message(self, *a):
            pass

    http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
""")


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "server.py").write_text(SERVER)
    return tmp_path


def start(folder, ready_path, tmp_path):
    p = Proc("own", [sys.executable, "server.py"], {}, free_port(), tmp_path, ready_path=ready_path, cwd=folder)
    return p.start(timeout=20)


def test_ready_on_a_tcp_connect_without_requesting_anything(folder, tmp_path):
    p = start(folder, None, tmp_path)
    try:
        # the relative script ran in the system's folder, and no probe request reached it
        assert not (folder / "requests.log").read_text()
        assert httpx.get(p.url + "/x", trust_env=False).status_code == 200
        assert (folder / "requests.log").read_text() == "/x\n"
    finally:
        p.stop()


def test_a_health_path_must_answer_2xx(folder, tmp_path):
    p = start(folder, "/ready", tmp_path)
    try:
        assert (folder / "requests.log").read_text().split() == ["/ready"] * 4  # three 503s, then ready
    finally:
        p.stop()


def test_a_command_that_cannot_run_names_its_folder(folder, tmp_path):
    p = Proc("own", ["./no-such-binary"], {}, free_port(), tmp_path, ready_path=None, cwd=folder)
    with pytest.raises(RuntimeError, match=f"own: cannot run `./no-such-binary` in {folder}"):
        p.start(timeout=5)
