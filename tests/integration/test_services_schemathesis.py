"""Property-based API tests: schemathesis generates requests from each HTTP service's own
OpenAPI (FastAPI's /openapi.json) and checks that none is answered with a 5xx. Bounded
(30 examples per operation, fixed seed) to keep the suite fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from surgesim.services.common.devserver import run_service

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

SERVICES = [
    "surgesim.services.meridian.command:app",
    "surgesim.services.meridian.publisher:app",
    "surgesim.services.meridian.reactors:notification_app",
    "surgesim.services.fakes.gateway:sms_app",
    "surgesim.services.fakes.gateway:billing_app",
    "surgesim.services.dogfinder.app:app",
    "surgesim.services.meridian.allocator:app",
]


@pytest.fixture(scope="module")
def sms_for_reactors(gcp):
    with run_service("surgesim.services.fakes.gateway:sms_app", gcp.env_vars()) as svc:
        yield svc


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed in this environment")
@pytest.mark.parametrize("target", SERVICES)
def test_no_generated_request_gets_a_5xx(gcp, sms_for_reactors, target, tmp_path):
    env = {**gcp.env_vars(), "SMS_GATEWAY_URL": sms_for_reactors.url}
    with run_service(target, env) as svc:
        run = subprocess.run(
            [str(SCHEMATHESIS), "run", svc.url + "/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", "30", "--seed", "1", "--phases", "coverage,fuzzing", "--no-color",
             "--report-dir", str(tmp_path),
             # the fakes' behaviour switch answers 5xx on purpose once set to fail
             "--exclude-path", "/admin/behaviour"],
            capture_output=True, text=True, timeout=300,
        )
        log = svc.log()
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-2000:]}\n--- service log ---\n{log[-3000:]}"
    assert "passed" in run.stdout
