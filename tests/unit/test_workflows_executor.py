"""Each Workflows construct the local executor runs, against a real HTTP server on 127.0.0.1."""

import json

import pytest
import yaml

from surgesim.workflows import Executor, WorkflowSyntaxError, from_document

from .workflows_http import ScriptedServer


@pytest.fixture
def srv():
    s = ScriptedServer()
    yield s
    s.close()


def run(text, arg=None, **kw):
    sleeps = []
    ex = Executor(from_document(yaml.safe_load(text)), sleep=sleeps.append, **kw)
    try:
        out = ex.run(arg)
    finally:
        ex.close()
    out.sleeps = sleeps
    return out


def test_params_assign_return():
    out = run("""
main:
  params: [input]
  steps:
    - init:
        assign:
          - total: ${input.a + input.b}
          - m: {}
          - m.k: ${total * 2}
          - l: [1, 2]
          - l[1]: 9
    - done:
        return: {total: "${total}", m: "${m}", l: "${l}"}
""", {"a": 2, "b": 3})
    assert out.state == "SUCCEEDED"
    assert out.result == {"total": 5, "m": {"k": 10}, "l": [1, 9]}
    assert [s["step"] for s in out.steps] == ["main.steps.init", "main.steps.done"]
    assert all(s["duration_s"] >= 0 for s in out.steps)


def test_short_form_list_of_steps():
    assert run("- a:\n    return: 3\n").result == 3


def test_http_get_post_with_headers_body_query_and_result(srv):
    srv.on("GET", "/items", (200, {"items": [1, 2]}))
    srv.on("POST", "/orders", (201, {"id": "o-1"}))
    out = run(f"""
main:
  params: [args]
  steps:
    - list:
        call: http.get
        args: {{url: "{srv.url}/items", query: {{page: 2}}, headers: {{X-Trace: abc}}}}
        result: items
    - order:
        call: http.post
        args:
          url: ${{args.base + "/orders"}}
          body: {{count: "${{len(items.body.items)}}"}}
          timeout: 5
        result: order
    - done:
        return: ${{order.code + 0 == 201 and order.body.id == "o-1"}}
""", {"base": srv.url})
    assert out.state == "SUCCEEDED" and out.result is True
    get = srv.hits("GET", "/items")[0]
    assert get["path"] == "/items?page=2" and get["headers"]["X-Trace"] == "abc"
    assert srv.hits("POST", "/orders")[0]["body"] == {"count": 2}


def test_http_error_is_googles_error_map_and_except_binds_it(srv):
    srv.on("GET", "/x", (404, {"reason": "gone"}))
    out = run(f"""
main:
  steps:
    - t:
        try:
          call: http.get
          args: {{url: "{srv.url}/x"}}
        except:
          as: e
          steps:
            - r:
                return: {{code: "${{e.code}}", reason: "${{e.body.reason}}", tags: "${{e.tags}}"}}
""")
    assert out.result == {"code": 404, "reason": "gone", "tags": ["HttpError"]}


def test_uncaught_http_error_fails_the_execution_with_the_map(srv):
    srv.on("GET", "/x", (500, {"oops": 1}))
    out = run(f"- a:\n    call: http.get\n    args: {{url: '{srv.url}/x'}}\n")
    assert out.state == "FAILED" and out.error["code"] == 500 and out.error["tags"] == ["HttpError"]
    assert out.steps[-1]["state"] == "FAILED"


def test_connection_refused_and_timeout_tags(srv):
    srv.on("GET", "/slow", (200, {}))
    srv.delay_s["/slow"] = 1.0
    refused = run("- a:\n    call: http.get\n    args: {url: 'http://127.0.0.1:1/x'}\n")
    assert refused.error["tags"] == ["ConnectionFailedError"]
    slow = run(f"- a:\n    call: http.get\n    args: {{url: '{srv.url}/slow', timeout: 0.2}}\n")
    assert slow.error["tags"] == ["TimeoutError"]


def test_default_retry_policy_retries_503_with_backoff_then_succeeds(srv):
    srv.on("GET", "/flaky", (503, {}), (503, {}), (200, {"ok": True}))
    out = run(f"""
- t:
    try:
      call: http.get
      args: {{url: "{srv.url}/flaky"}}
      result: r
    retry: ${{http.default_retry}}
- done:
    return: ${{r.body.ok}}
""")
    assert out.result is True and len(srv.hits("GET", "/flaky")) == 3
    assert out.sleeps == [1.0, 1.25]  # Google's default backoff: 1 s, x1.25


def test_default_retry_does_not_retry_a_400(srv):
    srv.on("GET", "/bad", (400, {}))
    out = run(f"""
- t:
    try:
      call: http.get
      args: {{url: "{srv.url}/bad"}}
    retry: ${{http.default_retry}}
""")
    assert out.state == "FAILED" and len(srv.hits("GET", "/bad")) == 1


def test_custom_retry_predicate_max_retries_backoff_cap_then_except(srv):
    srv.on("GET", "/down", (500, {}))
    out = run(f"""
main:
  steps:
    - t:
        try:
          call: http.get
          args: {{url: "{srv.url}/down"}}
        retry:
          predicate: ${{on_500}}
          max_retries: 4
          backoff: {{initial_delay: 1, max_delay: 3, multiplier: 2}}
        except:
          as: e
          steps:
            - give_up:
                return: '${{"gave up: " + string(e.code)}}'
on_500:
  params: [e]
  steps:
    - check:
        return: ${{e.code == 500}}
""")
    assert out.result == "gave up: 500"
    assert len(srv.hits("GET", "/down")) == 5
    assert out.sleeps == [1.0, 2.0, 3.0, 3.0]
    assert [s["attempt"] for s in out.steps if s["step"].endswith(".retry")] == [1, 2, 3, 4]


def test_switch_next_and_end():
    text = """
main:
  params: [n]
  steps:
    - route:
        switch:
          - condition: ${n > 10}
            next: big
          - condition: ${n == 0}
            return: zero
          - condition: ${n < 0}
            next: end
        next: small
    - big:
        return: big
    - small:
        assign:
          - label: small
        next: finish
    - never:
        return: never
    - finish:
        return: ${label}
"""
    assert run(text, 11).result == "big"
    assert run(text, 0).result == "zero"
    assert run(text, 3).result == "small"
    neg = run(text, -1)
    assert neg.state == "SUCCEEDED" and neg.result is None


def test_nested_steps_jump_to_outer_step_and_for_loop():
    out = run("""
- init:
    assign:
      - acc: 0
- loop:
    for:
      value: v
      in: [1, 2, 3, 4]
      steps:
        - skip_two:
            switch:
              - condition: ${v == 2}
                next: continue
              - condition: ${v == 4}
                next: break
        - add:
            assign:
              - acc: ${acc + v}
- group:
    steps:
      - inner:
          next: out
- skipped:
    assign:
      - acc: -1
- out:
    return: ${acc}
""")
    assert out.result == 4


def test_raise_string_and_map_caught_by_code():
    out = run("""
- t:
    try:
      steps:
        - boom:
            raise: {code: 409, message: conflict}
    except:
      as: e
      steps:
        - which:
            switch:
              - condition: ${e.code == 409}
                return: ${e.message}
        - rethrow:
            raise: ${e}
- after:
    return: unreachable
""")
    assert out.result == "conflict"
    s = run("- a:\n    raise: plain\n")
    assert s.state == "FAILED" and s.error == "plain"


def test_subworkflow_with_args_defaults_and_result():
    out = run("""
main:
  steps:
    - c:
        call: greet
        args: {who: world}
        result: g
    - r:
        return: ${g}
greet:
  params: [who, {greeting: hello}]
  steps:
    - s:
        return: ${greeting + " " + who}
""")
    assert out.result == "hello world"


def test_sys_sleep_and_sys_log():
    out = run("""
- nap:
    call: sys.sleep
    args: {seconds: 2}
- say:
    call: sys.log
    args: {data: {a: 1}, severity: WARNING}
""")
    assert out.state == "SUCCEEDED" and out.sleeps == [2.0]
    assert {"step": "main.steps.say.log", "severity": "WARNING", "data": {"a": 1}} in out.steps


def test_oidc_auth_sends_the_identity_token_for_the_url(srv):
    srv.on("POST", "/p", (200, {}))
    audiences = []
    out = run(f"- a:\n    call: http.post\n    args: {{url: '{srv.url}/p', body: {{}}, auth: {{type: OIDC}}}}\n",
              identity_token=lambda aud: audiences.append(aud) or "tok-123")
    assert out.state == "SUCCEEDED"
    assert audiences == [f"{srv.url}/p"]
    assert srv.hits("POST", "/p")[0]["headers"]["Authorization"] == "Bearer tok-123"


def test_runtime_expression_error_is_a_tagged_failure():
    out = run("- a:\n    return: ${missing_var + 1}\n")
    assert out.state == "FAILED" and out.error["tags"] == ["KeyError"]


def test_records_are_json_lines(tmp_path, srv):
    srv.on("GET", "/a", (200, {}))
    rec = tmp_path / "wf.jsonl"
    for arg in (1, 2):
        run(f"- a:\n    call: http.get\n    args: {{url: '{srv.url}/a'}}\n- b:\n    return: ${{x}}\n",
            arg, record_path=rec)
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    assert [x["state"] for x in lines] == ["FAILED", "FAILED"]  # x is not defined: main has no params
    assert lines[0]["execution_id"] != lines[1]["execution_id"]
    assert [s["step"] for s in lines[0]["steps"]] == ["main.steps.a", "main.steps.b"]
    assert lines[0]["duration_s"] >= lines[0]["steps"][0]["duration_s"]


@pytest.mark.parametrize("text,needle", [
    ("- a:\n    parallel: {branches: []}\n", "main.steps.a: unsupported construct(s) ['parallel']"),
    ("- a:\n    call: googleapis.pubsub.v1.projects.topics.publish\n", "main.steps.a.call: connector 'googleapis.pubsub"),
    ("- a:\n    call: experimental.executions.run\n", "main.steps.a.call: unsupported call"),
    ("- a:\n    return: ${x if y else z}\n", "main.steps.a: 'x if y else z': unsupported construct IfExp"),
    ("- a:\n    call: http.get\n    args: {}\n", "needs a 'url'"),
    ("- a:\n    try:\n      return: 1\n    retry: ${always}\n", "main.steps.a.retry"),
    ("- a:\n    retry: ${http.default_retry}\n", "need a 'try'"),
    ("- a:\n    call: http.get\n    args: {url: x, auth: {type: Basic}}\n", "auth"),
    ("{sub: {steps: [{a: {return: 1}}]}}", "'main'"),
])
def test_unsupported_constructs_fail_validation_with_the_step_path(text, needle):
    with pytest.raises(WorkflowSyntaxError) as e:
        from_document(yaml.safe_load(text), "wf.yaml")
    assert needle in str(e.value) and "wf.yaml" in str(e.value)
