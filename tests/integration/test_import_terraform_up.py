"""An imported system runs under `surgesim up` once a service's `command:` is filled: the
push subscription imported from Terraform (endpoint = the service's uri + a path, with a
filter and an OIDC identity) delivers to the user's own process at that path, through the
run.invoker allow-list imported from the IAM members, and only what the filter passes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from surgesim.emulators import Clients
from surgesim.importers.terraform import import_terraform

pytestmark = pytest.mark.integration

SHOP = Path(__file__).resolve().parents[1] / "fixtures" / "terraform" / "shop"

# The user's own service: records each request's path and message attributes.
SERVICE = '''
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with open(sys.argv[1], "a") as f:
            f.write(json.dumps({"path": self.path, "body": body.decode(),
                                "auth": self.headers.get("authorization") or self.headers.get("x-serverless-authorization") or ""}) + "\\n")
        self.send_response(204); self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


def _received(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        message = json.loads(rec["body"])["message"]
        token = rec["auth"].removeprefix("Bearer ")
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==")) if token.count(".") == 2 else {}
        out.append({"path": rec["path"], "attributes": message.get("attributes", {}),
                    "data": base64.b64decode(message.get("data", "")).decode(), "email": claims.get("email")})
    return out


def test_up_runs_an_imported_system_with_a_filled_command(gcp, tmp_path):
    project = f"up-tf-{uuid.uuid4().hex[:6]}"
    imported = import_terraform(SHOP, variables=[f"project_id={project}"])
    system = imported.system
    server, received = tmp_path / "billing.py", tmp_path / "received.jsonl"
    server.write_text(SERVICE)
    next(s for s in system["services"] if s["name"] == "billing-worker")["command"] = [
        sys.executable, str(server), str(received)]
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(system, sort_keys=False))
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(imported.plan, sort_keys=False))

    out = tmp_path / "up.out"
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "up", str(tmp_path / "shop.yaml"),
                                 "--plan", str(tmp_path / "plan.yaml"), "--state-dir", str(gcp.state_dir),
                                 "--log-dir", str(tmp_path / "logs")],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C stops everything" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        text = out.read_text()
        assert "shipping-worker" in text and "no app:, command: or function:" in text  # unfilled: listed as skipped

        publisher = Clients(gcp.env_vars(), project=project).publisher()
        topic = f"projects/{project}/topics/shop.orders"
        publisher.publish(topic, b"cancelled-1", kind="OrderCancelled").result(timeout=30)
        publisher.publish(topic, b"placed-1", kind="OrderPlaced").result(timeout=30)
        deadline = time.monotonic() + 60
        while not any(r["data"] == "placed-1" for r in _received(received)):
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, f"no push arrived; {out.read_text()}"
            time.sleep(0.2)
        time.sleep(2)  # time for a wrongly unfiltered message to arrive too
        got = _received(received)
        assert {r["path"] for r in got} == {"/pubsub/orders"}  # push_path from the Terraform endpoint
        assert [r["data"] for r in got] == ["placed-1"]  # the Terraform filter held back the other
        assert got[0]["attributes"]["kind"] == "OrderPlaced"
        # The push carried the identity from the Terraform's oidc_token, which the imported
        # run.invoker allow-list of billing-worker lets through.
        assert got[0]["email"] == f"shop-pusher@{project}.iam.gserviceaccount.com"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
