"""`surgesim live --target-env`: which SLOs a load-only run can judge, and what it refuses
before anything is sent (exit 2). The runs themselves: tests/integration/test_live_target_env.py."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from surgesim.cli import cli
from surgesim.live.target_run import NOT_MEASURED_CHECKS, not_measured_slo, refused
from surgesim.schema import Slo, load_experiment

ROOT = Path(__file__).resolve().parents[2]
CI_SPIKE = ROOT / "scenarios" / "ci_spike.yaml"


def _slo(text: str) -> Slo:
    return Slo.model_validate(text)


def test_only_client_side_latency_and_peeked_backlogs_are_measured():
    peeked = {"orders-sub"}
    assert not_measured_slo(_slo("p99(latency.command.mark_delivered) < 60s"), peeked) is None
    assert not_measured_slo(_slo("max(backlog.orders-sub) < 100"), peeked) is None
    assert not_measured_slo(_slo("max(oldest_unacked.orders-sub) < 10s"), peeked) is None
    assert "not peeked" in not_measured_slo(_slo("drain(backlog.other-sub) < 30m"), peeked)
    assert "fronts" in not_measured_slo(_slo("max(instances.command) <= 3"), peeked)
    assert "fronts" in not_measured_slo(_slo("max(rejected.command) == 0"), peeked)
    assert "bridges" in not_measured_slo(_slo("final(dlq.eta-sub) == 0"), peeked)
    assert "sampler" in not_measured_slo(_slo("p99(lag.eta-sub) < 5s"), peeked)
    # the implicit checks that need the harness are named, client errors are not among them
    assert "client_errors" not in NOT_MEASURED_CHECKS and {"dead_letters", "conservation"} <= set(NOT_MEASURED_CHECKS)


def test_target_headers_come_from_the_file():
    from surgesim.loadtests.target_env import target_headers

    env = {"SURGESIM_HEADER_AUTHORIZATION": "Bearer x", "SURGESIM_HEADER_X_API_KEY": "k", "COMMAND_URL": "http://h"}
    assert target_headers(env) == {"Authorization": "Bearer x", "X-Api-Key": "k"}


def test_faults_and_job_sources_are_refused():
    exp = load_experiment(ROOT / "scenarios" / "consumer_down.yaml")
    problems = refused(exp.scenario, exp.system)
    assert len(problems) == len(exp.scenario.faults) > 0
    assert all("faults need the harness" in p for p in problems)
    jobs = load_experiment(ROOT / "scenarios" / "embeddings_backfill.yaml")
    assert any("job: source" in p for p in refused(jobs.scenario, jobs.system))


def test_cli_refuses_before_sending(tmp_path):
    missing = tmp_path / "nope.env"
    r = CliRunner().invoke(cli, ["live", str(CI_SPIKE), "--target-env", str(missing), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and f"{missing}: cannot read" in r.output, r.output
    bad = tmp_path / "bad.env"
    bad.write_text("COMMAND_URL=http://127.0.0.1:9\nnot a line\n")
    r = CliRunner().invoke(cli, ["live", str(CI_SPIKE), "--target-env", str(bad)])
    assert r.exit_code == 2 and f"{bad}:2: want KEY=VALUE" in r.output, r.output
    r = CliRunner().invoke(cli, ["live", str(CI_SPIKE), "--target-env", str(bad), "--state-dir", str(tmp_path / "s")])
    assert r.exit_code == 2 and "starts no emulators" in r.output, r.output
    # consumer_down declares a fault and sends to services the file does not name: every problem at once
    ok = tmp_path / "target.env"
    ok.write_text("GOOGLE_CLOUD_PROJECT=staging\n")
    r = CliRunner().invoke(cli, ["live", str(ROOT / "scenarios" / "consumer_down.yaml"), "--target-env", str(ok),
                                 "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert "faults need the harness" in r.output and "COMMAND_URL" in r.output, r.output
    assert not (tmp_path / "run").exists()
