"""`surgesim live SCENARIO --target-env FILE`: a load-only run against a system surgesim did
not start. Here "someone else's system" is a real HTTP server (loadtests/target.py, in this
test's process) and a topic + subscription the test creates itself on the session's Pub/Sub
emulator (the `gcp` fixture); the command starts nothing but its load generator, sends the
scenario there, peeks the subscription's backlog, and judges what it can measure."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import httpx
import pandas as pd
import pytest

from surgesim.loadtests.target import build_app, serve
from surgesim.rundir import METRICS
from tests.integration.test_loadtests import assert_no_process_mentions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SYSTEM = """\
name: elsewhere
project: %(project)s
topics:
  - {name: %(topic)s}
subscriptions:
  - {name: %(sub)s, topic: %(topic)s}
services:
  - name: api
    routes:
      - {name: hit, path: "/hit/{item_id}"}
"""

SCENARIO = """\
name: elsewhere
system: system.yaml
seed: 3
duration: 40s
traffic:
  sources:
    - {name: steady, rate: 60/s, request: {service: api, route: hit}}
%(publish)s
live:
  time_scale: 10
  rate_scale: 0.5
  drain_timeout: 0s
  slos:
    - p99(latency.api) < 5s
%(more_slos)s
"""


def _files(tmp_path, project: str, *, publish: bool, more_slos: str = "") -> tuple:
    topic, sub = f"orders-{uuid.uuid4().hex[:8]}", f"audit-{uuid.uuid4().hex[:8]}"
    (tmp_path / "system.yaml").write_text(SYSTEM % {"project": project, "topic": topic, "sub": sub})
    pub = f"    - {{name: orders, rate: 20/s, publish: {{topic: {topic}}}}}" if publish else ""
    (tmp_path / "scenario.yaml").write_text(SCENARIO % {"publish": pub, "more_slos": more_slos})
    return tmp_path / "scenario.yaml", topic, sub


def _live(tmp_path, scenario, env_file, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "surgesim.cli", "live", str(scenario), "--target-env", str(env_file),
                           "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=240)


def _count_held(host: str, project: str, sub: str) -> int:
    """What the subscription holds, counted apart from the run (pull, then hand back)."""
    base = f"http://{host}/v1/projects/{project}/subscriptions/{sub}"
    ids, acks = set(), []
    with httpx.Client(trust_env=False, timeout=10) as http:
        while got := http.post(base + ":pull", json={"maxMessages": 1000, "returnImmediately": True}).json().get(
                "receivedMessages", []):
            ids |= {m["message"]["messageId"] for m in got}
            acks += [m["ackId"] for m in got]
        if acks:
            http.post(base + ":modifyAckDeadline", json={"ackIds": acks, "ackDeadlineSeconds": 0})
    return len(ids)


@pytest.fixture
def elsewhere(gcp):
    """Someone else's Pub/Sub resources on the session emulator: created here, deleted after."""
    host, project = gcp.endpoint("pubsub"), gcp.project
    made: list[str] = []

    def make(topic: str, sub: str, dead_letter_topic: str | None = None) -> None:
        base = f"http://{host}/v1/projects/{project}"
        with httpx.Client(trust_env=False, timeout=10) as http:
            for t in [topic] + ([dead_letter_topic] if dead_letter_topic else []):
                assert http.put(f"{base}/topics/{t}").status_code == 200
                made.append(f"{base}/topics/{t}")
            body = {"topic": f"projects/{project}/topics/{topic}", "ackDeadlineSeconds": 10}
            if dead_letter_topic:
                body["deadLetterPolicy"] = {"deadLetterTopic": f"projects/{project}/topics/{dead_letter_topic}",
                                            "maxDeliveryAttempts": 5}
            assert http.put(f"{base}/subscriptions/{sub}", json=body).status_code == 200
            made.insert(0, f"{base}/subscriptions/{sub}")

    yield host, project, make
    with httpx.Client(trust_env=False, timeout=10) as http:
        for url in made:
            http.delete(url)


def test_load_only_sends_to_a_system_it_did_not_start_and_peeks_its_backlog(tmp_path, elsewhere):
    host, project, make = elsewhere
    scenario, topic, sub = _files(tmp_path, project, publish=True,
                                  more_slos=f"    - max(backlog.{'%s'}) >= 1\n    - max(instances.api) <= 3" % "x")
    # the backlog SLO names the peeked subscription; instances cannot be measured without fronts
    text = scenario.read_text().replace("backlog.x", f"backlog.{sub}")
    scenario.write_text(text)
    make(topic, sub)
    out = tmp_path / "run"
    with serve(build_app(delay_s=0.01)) as (url, seen):
        env_file = tmp_path / "target.env"
        env_file.write_text(f"# a system surgesim did not start\nAPI_URL={url}\nPUBSUB_EMULATOR_HOST={host}\n"
                            f"GOOGLE_CLOUD_PROJECT={project}\nSURGESIM_SUBSCRIPTIONS={sub}\n"
                            "SURGESIM_HEADER_AUTHORIZATION=Bearer staging-t0ken\n")
        proc = _live(tmp_path, scenario, env_file, out)
        hits = [s for s in seen if s["path"].startswith("/hit/")]
    assert_no_process_mentions(str(out))
    log = proc.stdout + proc.stderr
    assert "nothing is started but the load generator" in log, log
    assert "emulator" not in proc.stderr.split("load only:")[0], log  # nothing started before the traffic
    summary = json.loads((out / "summary.json").read_text())
    assert summary["load_only"] is True
    # the requests arrived at the server, each once, and the run's totals say so
    route = summary["totals"]["routes"]["api.hit"]
    steady = summary["loadgen"]["counts"]["steady"]
    assert steady["sent"] == steady["ok"] == steady["scheduled"] == len(hits) > 60, (steady, len(hits))
    assert route["requests"] == len(hits) and route["errors"] == 0, route
    assert {s["authorization"] for s in hits} == {"Bearer staging-t0ken"}  # the target file's header, on each
    assert summary["latency"]["api.hit"]["count"] == len(hits)
    assert summary["latency"]["api.hit"]["p50"] >= 0.01  # the server's 10 ms, from the intended time
    # Pub/Sub: every publish landed in the subscription nobody consumes; the run's last peek
    # saw exactly those, and handed them back (still held after the run)
    published = summary["loadgen"]["counts"]["orders"]["ok"]
    assert published > 20
    assert summary["totals"]["subscriptions"][sub]["backlog"] == published, summary["totals"]["subscriptions"]
    assert _count_held(host, project, sub) == published
    ts = pd.read_parquet(out / "timeseries.parquet")
    backlog = ts[(ts.metric == METRICS["backlog"]) & (ts.entity == sub)]
    assert len(backlog) >= 3 and backlog.value.is_monotonic_increasing and backlog.value.iloc[-1] == published
    assert (ts[ts.metric == METRICS["oldest_unacked"]].value > 0).any()
    # the verdict: latency and backlog measured and holding; instances not measured -> FAILS
    slos = {s["text"]: s for s in summary["slos"]}
    assert slos["p99(latency.api) < 5s"]["holds"]
    assert slos[f"max(backlog.{sub}) >= 1"]["holds"]
    inst = slos["max(instances.api) <= 3"]
    assert inst["not_measured"] and not inst["holds"] and "fronts" in inst["why"]
    assert summary["verdict"] == "fail" and proc.returncode == 1, log
    assert "FAILED (not measured) max(instances.api) <= 3" in proc.stdout, log
    # what load-only cannot judge is listed, not passed
    names = {n["name"] for n in summary["not_measured"]}
    assert {"dead_letters", "conservation", "processes"} <= names
    assert [c["name"] for c in summary["checks"]] == ["client_errors.api.hit"] and summary["checks"][0]["holds"]
    assert "not measured in a load-only run" in proc.stdout
    report = (out / "report.html").read_text()
    assert "not measured" in report.lower()
    assert (out / "junit.xml").exists()
    print(f"load only: {len(hits)} requests, latency p50 {summary['latency']['api.hit']['p50'] * 1000:.1f} ms "
          f"p99 {summary['latency']['api.hit']['p99'] * 1000:.1f} ms; {published} published, "
          f"backlog peeked {len(backlog)} times, last {backlog.value.iloc[-1]:.0f}")


def test_a_target_answering_500_turns_the_run_red(tmp_path, gcp):
    scenario, _topic, _sub = _files(tmp_path, gcp.project, publish=False)
    out = tmp_path / "run"
    with serve(build_app(status=500)) as (url, seen):
        env_file = tmp_path / "target.env"
        env_file.write_text(f"API_URL={url}\nGOOGLE_CLOUD_PROJECT={gcp.project}\n")
        proc = _live(tmp_path, scenario, env_file, out)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log
    summary = json.loads((out / "summary.json").read_text())
    route = summary["totals"]["routes"]["api.hit"]
    assert route["requests"] == len(seen) == route["errors"] > 60, (route, len(seen))
    assert summary["slos"][0]["holds"]  # latency alone holds: the red is the errors
    assert "FAILED client_errors.api.hit" in proc.stdout and "(500: " in proc.stdout, log
    assert summary["verdict"] == "fail"


def test_load_only_refuses_what_it_cannot_do_before_any_traffic(tmp_path, elsewhere):
    host, project, make = elsewhere
    scenario, topic, sub = _files(tmp_path, project, publish=True)
    make(topic, sub, dead_letter_topic=f"{topic}-dlq")
    with serve(build_app()) as (url, seen):
        env_file = tmp_path / "target.env"
        # no PUBSUB_EMULATOR_HOST for the publish source; a subscription with a dead-letter policy to peek
        env_file.write_text(f"API_URL={url}\nGOOGLE_CLOUD_PROJECT={project}\nSURGESIM_SUBSCRIPTIONS={sub}\n")
        proc = _live(tmp_path, scenario, env_file, tmp_path / "run")
        assert proc.returncode == 2, proc.stderr
        assert "no PUBSUB_EMULATOR_HOST" in proc.stderr and "there is no PUBSUB_EMULATOR_HOST to peek" in proc.stderr
        env_file.write_text(env_file.read_text() + f"PUBSUB_EMULATOR_HOST={host}\n")
        proc = _live(tmp_path, scenario, env_file, tmp_path / "run")
        assert proc.returncode == 2, proc.stderr
        assert "dead-letter policy" in proc.stderr, proc.stderr
        # a declared fault needs the harness
        scenario.write_text(scenario.read_text() + "faults:\n  - {kind: consumer_down, target: api, at: 10s, duration: 5s}\n")
        env_file.write_text(f"API_URL={url}\nPUBSUB_EMULATOR_HOST={host}\nGOOGLE_CLOUD_PROJECT={project}\n")
        proc = _live(tmp_path, scenario, env_file, tmp_path / "run")
        assert proc.returncode == 2, proc.stderr
        assert "faults need the harness" in proc.stderr, proc.stderr
        assert seen == []  # nothing was sent


def test_load_only_master_takes_its_load_from_a_worker_on_the_same_target(tmp_path, gcp):
    """Several load machines at one staging system: `surgesim live --target-env --master`
    sends nothing itself; a `surgesim worker` with the same target file does, and its
    measurements make the run's totals."""
    from surgesim.loadtests.target import free_port

    scenario, _topic, _sub = _files(tmp_path, gcp.project, publish=False)
    port = free_port()
    out = tmp_path / "run"
    with serve(build_app(delay_s=0.01)) as (url, seen):
        env_file = tmp_path / "target.env"
        env_file.write_text(f"API_URL={url}\nGOOGLE_CLOUD_PROJECT={gcp.project}\n"
                            "SURGESIM_HEADER_AUTHORIZATION=Bearer w0rker\n")
        master = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "live", str(scenario), "--target-env",
                                   str(env_file), "--out", str(out), "--master", "--expect-workers", "1",
                                   "--master-bind", f"127.0.0.1:{port}"], cwd=tmp_path, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        worker = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "worker", str(scenario), "--master-host",
                                   f"127.0.0.1:{port}", "--target-env", str(env_file), "--out",
                                   str(tmp_path / "machine")], cwd=tmp_path, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            m_out, m_err = master.communicate(timeout=200)
            w_out, _ = worker.communicate(timeout=60)
        finally:
            for p in (master, worker):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        hits = [s for s in seen if s["path"].startswith("/hit/")]
    assert master.returncode == 0 and worker.returncode == 0, (m_out, m_err, w_out)
    assert "master: waiting for 1 worker(s)" in m_err
    summary = json.loads((out / "summary.json").read_text())
    steady = summary["loadgen"]["counts"]["steady"]
    assert steady["sent"] == steady["ok"] == steady["scheduled"] == len(hits) > 60, (steady, len(hits))
    assert summary["totals"]["routes"]["api.hit"]["requests"] == len(hits)
    assert (out / "loadgen" / "worker-0" / "loadgen.json").exists()  # the worker's results, over the wire
    assert summary["verdict"] == "pass"
    assert {s["authorization"] for s in hits} == {"Bearer w0rker"}  # from the worker's own file
    written = (out / "loadgen" / "target.env").read_text()  # the run directory keeps no token
    assert f"API_URL={url}" in written and "w0rker" not in written and "leaves out SURGESIM_HEADER_" in m_err
    assert_no_process_mentions(str(tmp_path))


def test_load_only_with_the_fleet_driver(tmp_path, gcp):
    """live.locust: false: the asyncio fleet driver sends instead of Locust, to the same file's endpoints."""
    scenario, _topic, _sub = _files(tmp_path, gcp.project, publish=False)
    scenario.write_text(scenario.read_text().replace("  drain_timeout: 0s\n", "  drain_timeout: 0s\n  locust: false\n"))
    out = tmp_path / "run"
    with serve(build_app(delay_s=0.01)) as (url, seen):
        env_file = tmp_path / "target.env"
        env_file.write_text(f"API_URL={url}\nGOOGLE_CLOUD_PROJECT={gcp.project}\nSURGESIM_HEADER_AUTHORIZATION=Bearer fl33t\n")
        proc = _live(tmp_path, scenario, env_file, out)
        hits = [s for s in seen if s["path"].startswith("/hit/")]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["loadgen"]["generator"] == "fleet_driver"
    steady = summary["loadgen"]["counts"]["steady"]
    assert steady["sent"] == steady["ok"] == steady["scheduled"] == len(hits) > 60, (steady, len(hits))
    assert summary["latency"]["api.hit"]["count"] == len(hits)
    assert {s["authorization"] for s in hits} == {"Bearer fl33t"}
    assert_no_process_mentions(str(out))


def test_ctrl_c_stops_a_load_only_run_and_its_generator(tmp_path, gcp):
    import signal
    import time

    scenario, _topic, _sub = _files(tmp_path, gcp.project, publish=False)
    scenario.write_text(scenario.read_text().replace("duration: 40s", "duration: 600s"))  # 60 wall s
    out = tmp_path / "run"
    with serve(build_app()) as (url, seen):
        env_file = tmp_path / "target.env"
        env_file.write_text(f"API_URL={url}\nGOOGLE_CLOUD_PROJECT={gcp.project}\n")
        proc = subprocess.Popen([sys.executable, "-m", "surgesim.cli", "live", str(scenario), "--target-env",
                                 str(env_file), "--out", str(out)], cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 60
            while not seen and time.time() < deadline:  # the traffic has started
                time.sleep(0.2)
            assert seen, "no request arrived"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        n = len(seen)
        time.sleep(1.0)
        assert len(seen) == n, "requests still arriving after the command returned"
    assert proc.returncode == 130, err
    assert "interrupted at scenario" in err and "the load generator stopped" in err, err
    assert_no_process_mentions(str(out))
