"""The Cloud Run jobs.run connector (googleapis.run.v2.projects.locations.jobs.run) in the
local Workflows executor: validated at load (the system's job names, the connector's
arguments; every other connector still refused), and run against a scripted Cloud Run
Admin API on 127.0.0.1 (start, poll until done, the Execution back; OperationError for a
failed execution; skip_polling; HttpError for an unknown job). The live path through the
run's Launcher is tests/integration/test_live_jobs_start.py."""

import json

import pytest
import yaml

from surgesim.live.run_api import _overrides
from surgesim.workflows import Executor, WorkflowSyntaxError, from_document

from .workflows_http import ScriptedServer

RUN = "/v2/projects/p/locations/l/jobs/copy:run"
OP = "/v2/projects/p/locations/l/operations/copy-abcde"
EXECUTION = {"name": "projects/p/locations/l/jobs/copy/executions/copy-abcde", "taskCount": 2}


def flow(step_args: str, extra: str = "") -> str:
    return f"""
main:
  steps:
    - go:
        {extra}call: googleapis.run.v2.projects.locations.jobs.run
        args:
{step_args}
        result: r
    - done:
        return: ${{r}}
"""


NAME = "          name: projects/p/locations/l/jobs/copy\n"


@pytest.fixture
def srv():
    s = ScriptedServer()
    yield s
    s.close()


def run(text, srv, **kw):
    sleeps = []
    ex = Executor(from_document(yaml.safe_load(text), jobs={"copy"}), sleep=sleeps.append,
                  env={"SURGESIM_RUN_API_URL": srv.url}, **kw)
    try:
        out = ex.run(None)
    finally:
        ex.close()
    out.sleeps = sleeps
    return out


def test_the_step_waits_for_the_execution_and_returns_it(srv):
    pending = {"name": "projects/p/locations/l/operations/copy-abcde", "done": False, "metadata": EXECUTION}
    srv.scripts[("POST", RUN)] = [(200, pending)]
    srv.scripts[("GET", OP)] = [(200, pending), (200, pending),
                                (200, {**pending, "done": True, "response": {**EXECUTION, "succeededCount": 2}})]
    out = run(flow(NAME + "          body: {overrides: {taskCount: 2}}\n"), srv)
    assert out.state == "SUCCEEDED", out.error
    assert out.result == {**EXECUTION, "succeededCount": 2}
    assert out.sleeps == [0.25, 0.25, 0.25]  # three polls, the third found it done
    sent = srv.requests[0]
    assert sent["body"] == {"overrides": {"taskCount": 2}}
    assert sent["headers"]["X-Surgesim-Workflow"] == "workflow" and sent["headers"]["X-Surgesim-Step"] == "main.steps.go"


def test_a_failed_execution_raises_an_operation_error_a_try_can_catch(srv):
    failed = {"name": "projects/p/locations/l/operations/copy-abcde", "done": True,
              "error": {"code": 2, "message": "Execution copy-abcde failed: 1 of 2 task(s) failed"}}
    srv.scripts[("POST", RUN)] = [(200, {**failed, "done": False})]
    srv.scripts[("GET", OP)] = [(200, failed)]
    out = run(flow(NAME), srv)
    assert out.state == "FAILED"
    assert out.error["tags"] == ["OperationError"] and "1 of 2 task(s) failed" in out.error["message"]
    assert out.error["operation"]["error"]["code"] == 2
    caught = run("""
main:
  steps:
    - go:
        try:
          call: googleapis.run.v2.projects.locations.jobs.run
          args: {name: projects/p/locations/l/jobs/copy}
        except:
          as: e
          steps:
            - said:
                return: ${e.tags}
""", srv)
    assert caught.state == "SUCCEEDED" and caught.result == ["OperationError"]


def test_skip_polling_returns_the_operation_at_once(srv):
    srv.scripts[("POST", RUN)] = [(200, {"name": "projects/p/locations/l/operations/copy-abcde", "done": False})]
    out = run(flow(NAME + "          connector_params: {skip_polling: true}\n"), srv)
    assert out.state == "SUCCEEDED" and out.result["done"] is False
    assert [r["method"] for r in srv.requests] == ["POST"] and out.sleeps == []


def test_an_unknown_job_at_run_time_is_an_http_error_with_the_apis_message(srv):
    srv.scripts[("POST", "/v2/projects/p/locations/l/jobs/nope:run")] = [
        (404, {"error": {"code": 404, "message": "jobs/nope: not found; the system's jobs: copy", "status": "NOT_FOUND"}})]
    text = """
main:
  steps:
    - go:
        call: googleapis.run.v2.projects.locations.jobs.run
        args: {name: '${"projects/p/locations/l/jobs/" + "nope"}'}
"""
    out = run(text, srv)
    assert out.state == "FAILED" and out.error["tags"] == ["HttpError"] and out.error["code"] == 404
    assert "the system's jobs: copy" in out.error["message"]


def test_polling_past_the_connector_timeout_is_a_timeout_error(srv):
    pending = {"name": "projects/p/locations/l/operations/copy-abcde", "done": False}
    srv.scripts[("POST", RUN)] = [(200, pending)]
    srv.scripts[("GET", OP)] = [(200, pending)]
    out = run(flow(NAME + "          connector_params: {timeout: 0.1, polling_policy: {initial_delay: 0.05}}\n"), srv,)
    assert out.state == "FAILED" and out.error["tags"] == ["TimeoutError"]


def test_without_a_live_run_the_step_cannot_connect():
    ex = Executor(from_document(yaml.safe_load(flow(NAME)), jobs={"copy"}), env={})
    out = ex.run(None)
    ex.close()
    assert out.state == "FAILED" and out.error["tags"] == ["ConnectionFailedError"]
    assert "surgesim live" in out.error["message"]


@pytest.mark.parametrize("args, says", [
    ("          name: projects/p/locations/l/jobs/copyy\n", "job 'copyy' is not a job of the system (its jobs: copy)"),
    ("          name: jobs/copy\n", "is not projects/PROJECT/locations/LOCATION/jobs/JOB"),
    ("          body: {}\n", "needs a 'name'"),
    (NAME + "          location: us-central1\n", "unsupported ['location']"),
    (NAME + "          connector_params: {scopes: [x]}\n", "connector_params"),
])
def test_bad_connector_steps_are_load_errors(args, says):
    with pytest.raises(WorkflowSyntaxError) as e:
        from_document(yaml.safe_load(flow(args)), "wf.yaml", jobs={"copy"})
    assert says in str(e.value) and "main.steps.go" in str(e.value)


def test_other_connectors_stay_refused():
    text = """
main:
  steps:
    - go:
        call: googleapis.pubsub.v1.projects.topics.publish
        args: {topic: t, body: {messages: []}}
"""
    with pytest.raises(WorkflowSyntaxError, match="connector 'googleapis.pubsub.v1.projects.topics.publish' does "
                                                  "not run locally; of the connectors only googleapis.run.v2"):
        from_document(yaml.safe_load(text), "wf.yaml")


@pytest.mark.parametrize("request_, says", [
    ({"overrides": {"taskCount": 0}}, "taskCount is a whole number"),
    ({"overrides": {"timeout": "10s"}}, "['timeout'] are not applied locally"),
    ({"overrides": {"containerOverrides": [{"args": ["x"]}]}}, "['args'] are not applied locally"),
    ({"overrides": {"containerOverrides": [{"env": [{"name": "A", "valueSource": {}}]}]}}, "{name, value}"),
    ({"validateOnly": True}, "validateOnly"),
])
def test_overrides_the_harness_cannot_apply_are_refused_not_ignored(request_, says):
    with pytest.raises(ValueError, match=None) as e:
        _overrides(request_)
    assert says in str(e.value)


def test_task_count_and_env_overrides_are_read():
    assert _overrides({"overrides": {"taskCount": 4, "containerOverrides": [{"env": [{"name": "A", "value": "1"}]}]}}) \
        == (4, {"A": "1"})


def test_surgesim_sim_warns_of_a_workflows_job_step_its_model_does_not_run(tmp_path):
    from click.testing import CliRunner

    from surgesim.commands.sim import sim

    (tmp_path / "wf.yaml").write_text(flow("          name: ${\"projects/p/locations/l/jobs/\" + \"copy\"}\n")
                                      .replace("    - go:", "    - first:\n        assign: [{x: 1}]\n    - go:"))
    (tmp_path / "system.yaml").write_text("""
name: wfjobs
topics: [{name: kick.jobs}]
subscriptions: [{name: kick-sub, topic: kick.jobs, consumer: starter, delivery: push}]
jobs: [{name: copy, steps: [{cpu: {p50: 1s, p99: 1s}}]}]
external_apis: [{name: run-admin, latency: {p50: 1s}}]
workflows:
  - {name: starter, trigger: kick.jobs, source: wf.yaml, steps: [{name: run_jobs, call: run-admin}]}
""")
    (tmp_path / "s.yaml").write_text("""
name: s
system: system.yaml
duration: 5m
traffic:
  sources:
    - {name: kick, rate: 1/m, publish: {topic: kick.jobs}}
""")
    result = CliRunner().invoke(sim, [str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"), "--no-report"])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert ("warning: workflow starter: step main.steps.go of its source starts Cloud Run job (named at run time) "
            "(googleapis.run.v2.projects.locations.jobs.run), and its steps: model has no `run_job: JOB` step, "
            "so the simulator does not start it") in text, text
    # modelled with a run_job step: no warning, and the simulator runs the job
    system = (tmp_path / "system.yaml").read_text()
    (tmp_path / "system.yaml").write_text(system.replace("{name: run_jobs, call: run-admin}", "{name: run_copy, run_job: copy}"))
    result = CliRunner().invoke(sim, [str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run2"), "--no-report"])
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "does not start it" not in text, text
    summary = json.loads((tmp_path / "run2" / "summary.json").read_text())
    assert summary["totals"]["workflows"]["starter"]["jobs_started"] == summary["totals"]["workflows"]["starter"]["started"] > 0
    assert summary["totals"]["jobs"]["copy"]["tasks_run"] == summary["totals"]["workflows"]["starter"]["jobs_started"]
