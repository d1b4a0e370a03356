"""Payload templates (surgesim/templates.py) as the load generators send them, and the
errors `surgesim validate` reports for them. No servers: the wire bytes are checked."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path

import pytest
from werkzeug.formparser import parse_form_data

from surgesim.loadtests.actions import INTENDED_ATTRIBUTE, INTENDED_HEADER, Payloads, publish_body
from surgesim.loadtests.plan import REQUEST, LivePlan
from surgesim.schema import SchemaError, load_experiment

SYSTEM = """\
name: greeter
project: greeter-local
topics:
  - {name: greetings}
services:
  - name: publish-fn
    routes:
      - {name: publish, path: /}
      - {name: item, method: PUT, path: "/items/{item_id}/tags/{tag}"}
      - {name: upload, path: /upload}
"""


def write(tmp: Path, sources: str, extra: str = "") -> Path:
    (tmp / "system.yaml").write_text(SYSTEM)
    body = textwrap.indent(textwrap.dedent(sources).strip("\n"), "    ")
    (tmp / "spike.yaml").write_text(
        "name: spike\nsystem: system.yaml\nseed: 11\nduration: 60s\ntraffic:\n  sources:\n" + body + "\n"
        + extra + "live: {time_scale: 1, rate_scale: 1}\n")
    return tmp / "spike.yaml"


MINIMAL = """\
- name: greet
  rate: 5/s
  request: {service: publish-fn, route: publish, json: {topic: greetings, message: "{{ faker.first_name() }}"}}
"""


def sends(path: Path, n: int, name: str = "greet", seed_offset: int = 0, plan: LivePlan | None = None):
    plan = plan or LivePlan(path)
    p = Payloads(plan, tag="t", seed_offset=seed_offset)
    src = plan.source(name)
    return [p.build(src, 1_700_000_000.0 + i) for i in range(n)]


def test_the_issue_minimal_example_sends_faker_names_as_json(tmp_path):
    plan = LivePlan(write(tmp_path, MINIMAL))
    src = plan.source("greet")
    assert src.action == REQUEST and src.path == "/"
    out = sends(tmp_path / "spike.yaml", 50, plan=plan)
    bodies = [json.loads(s.body) for s in out]
    assert all(b["topic"] == "greetings" for b in bodies)
    names = [b["message"] for b in bodies]
    assert all(isinstance(n, str) and n.isprintable() and n.strip() for n in names)
    assert len(set(names)) > 20, "a Faker name per send, not one name for all"
    assert out[0].headers["Content-Type"] == "application/json"
    assert out[0].headers[INTENDED_HEADER] == "1700000000.000000"
    assert out[0].method == "POST"


def test_same_seed_same_payloads_other_seed_others(tmp_path):
    path = write(tmp_path, MINIMAL)
    a = [s.body for s in sends(path, 30)]
    b = [s.body for s in sends(path, 30)]
    assert a == b  # two generator processes (Locust, the fleet driver) send the same bodies
    other = path.read_text().replace("seed: 11", "seed: 12")
    path.write_text(other)
    c = [s.body for s in sends(path, 30)]
    assert c != a


def test_lone_expressions_keep_their_type_and_uuid_is_per_send(tmp_path):
    path = write(tmp_path, """\
    - name: greet
      rate: 5/s
      vars: {sizes: [1, 2, 3], region: eu}
      request:
        service: publish-fn
        route: publish
        json:
          n: "{{ seq }}"
          label: "n-{{ seq }}"
          sizes: "{{ sizes }}"
          region: "{{ region }}"
          a: "{{ uuid }}"
          b: "{{ uuid }}"
          pick: "{{ choice(['x', 'y']) }}"
          w: "{{ weighted({'hi': 1.0, 'lo': 0.0}) }}"
          amount: "{{ normal(10, 0.0001) | round(2) }}"
          when: "{{ intended_iso }}"
          nested: [{deep: "{{ seq * 10 }}"}, 7, null, true]
    """)
    out = [json.loads(s.body) for s in sends(path, 3)]
    assert [b["n"] for b in out] == [1, 2, 3]
    assert [b["label"] for b in out] == ["n-1", "n-2", "n-3"]
    assert out[0]["sizes"] == [1, 2, 3] and out[0]["region"] == "eu"
    assert out[0]["a"] == out[0]["b"] and out[0]["a"] != out[1]["a"] and len(out[0]["a"]) == 36
    assert out[0]["pick"] in ("x", "y") and out[0]["w"] == "hi" and out[0]["amount"] == 10.0
    assert out[1]["when"] == "2023-11-14T22:13:21.000Z"
    assert out[2]["nested"] == [{"deep": 30}, 7, None, True]


def test_path_params_query_headers_and_a_raw_body(tmp_path):
    path = write(tmp_path, """\
    - name: tag
      rate: 1/s
      request:
        service: publish-fn
        route: item
        path_params: {item_id: "it {{ seq }}/x", tag: red}
        query: {q: "{{ seq }}", fixed: "a b"}
        headers: {X-Request-Id: "r-{{ seq }}", Content-Type: text/csv}
        body: "id,seq\\n{{ uuid }},{{ seq }}\\n"
    """)
    s = sends(path, 2, "tag")[1]
    assert s.method == "PUT"
    assert s.path == "/items/it%202%2Fx/tags/red?q=2&fixed=a+b"
    assert s.headers["X-Request-Id"] == "r-2" and s.headers["Content-Type"] == "text/csv"
    assert s.body.decode().endswith(",2\n") and s.body.startswith(b"id,seq\n")


def test_multipart_form_and_files(tmp_path):
    (tmp_path / "dog.jpg").write_bytes(b"\xff\xd8\xff fake jpeg bytes")
    path = write(tmp_path, """\
    - name: up
      rate: 1/s
      request:
        service: publish-fn
        route: upload
        form: {owner: "{{ faker.name() }}", n: "{{ seq }}"}
        files:
          photo: {file: dog.jpg, content_type: image/jpeg}
          note: {content: "note {{ seq }}", filename: "n{{ seq }}.txt", content_type: text/plain}
    """)
    s = sends(path, 1, "up")[0]
    env = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": s.headers["Content-Type"], "CONTENT_LENGTH": str(len(s.body)),
           "wsgi.input": __import__("io").BytesIO(s.body)}
    _, form, files = parse_form_data(env)
    assert form["n"] == "1" and len(form["owner"]) > 3
    assert files["photo"].read() == (tmp_path / "dog.jpg").read_bytes()
    assert files["photo"].filename == "dog.jpg" and files["photo"].content_type == "image/jpeg"
    assert files["note"].read() == b"note 1" and files["note"].filename == "n1.txt"


def test_publish_json_attributes_and_ordering_key(tmp_path):
    path = write(tmp_path, """\
    - name: events
      rate: 2/s
      publish:
        topic: greetings
        json: {who: "{{ faker.first_name() }}", n: "{{ seq }}"}
        attributes: {kind: greeting, n: "{{ seq }}"}
        ordering_key: "user-{{ seq % 2 }}"
    - name: text
      rate: 2/s
      publish: {topic: greetings, data: "hello {{ seq }}"}
    """)
    plan = LivePlan(path)
    p = Payloads(plan, tag="t")
    s = p.build(plan.source("events"), 1_700_000_000.0)
    data, attrs, key = s.message
    assert json.loads(data)["n"] == 1 and attrs["kind"] == "greeting" and attrs["n"] == "1"
    assert attrs[INTENDED_ATTRIBUTE] == "1700000000.000000" and key == "user-1"
    wire = json.loads(publish_body([s.message, p.build(plan.source("text"), 1.0).message]))["messages"]
    assert wire[0]["orderingKey"] == "user-1" and "orderingKey" not in wire[1]
    assert base64.b64decode(wire[1]["data"]) == b"hello 1"


def test_a_python_hook_gets_the_context(tmp_path):
    (tmp_path / "payloads.py").write_text(textwrap.dedent("""\
        def order(ctx):
            return {"seq": ctx.seq, "who": ctx.faker.first_name(), "dice": ctx.rng.randint(1, 6),
                    "region": ctx.vars["region"], "source": ctx.source}
    """))
    path = write(tmp_path, """\
    - name: greet
      rate: 1/s
      vars: {region: eu}
      request: {service: publish-fn, route: publish, hook: "payloads:order"}
    """)
    out = [json.loads(s.body) for s in sends(path, 2)]
    assert [o["seq"] for o in out] == [1, 2] and out[0]["region"] == "eu" and out[0]["source"] == "greet"
    assert 1 <= out[0]["dice"] <= 6 and out[0]["who"]
    assert out == [json.loads(s.body) for s in sends(path, 2)]  # seeded, hook included


@pytest.mark.parametrize("json_value, where, message", [
    ('"{{ faker.frist_name() }}"', "request.json.message", "unknown Faker provider 'frist_name'"),
    ('"{{ nobody }}"', "request.json.message", "undefined variable 'nobody'"),
    ('"{{ faker.first_name( }}"', "request.json.message", "template syntax error"),
    ('"{{ faker.first_name(7) }}"', "request.json.message", "template failed on a trial render: TypeError"),
])
def test_validate_names_file_line_and_field_of_a_bad_template(tmp_path, json_value, where, message):
    path = write(tmp_path, f"""\
    - name: ok
      rate: 1/s
      request: {{service: publish-fn, route: publish}}
    - name: greet
      rate: 5/s
      request:
        service: publish-fn
        route: publish
        json:
          topic: greetings
          message: {json_value}
    """)
    with pytest.raises(SchemaError) as err:
        load_experiment(path)
    line = "\n".join(err.value.problems)
    assert f"spike.yaml:{17 if where.endswith('message') else 12}: traffic.sources[1].{where}: {message}" in line, line


def test_validate_reports_missing_path_params_unreadable_files_bad_hooks_and_locales(tmp_path):
    path = write(tmp_path, """\
    - name: a
      rate: 1/s
      request: {service: publish-fn, route: item, path_params: {item_id: "1"}, json: {}}
    - name: b
      rate: 1/s
      request: {service: publish-fn, route: upload, files: {photo: {file: missing.jpg}}}
    - name: c
      rate: 1/s
      request: {service: publish-fn, route: publish, hook: "no_such_module:fn"}
    - name: d
      rate: 1/s
      locale: xx_YY
      request: {service: publish-fn, route: publish, json: {a: "{{ seq }}"}}
    - name: e
      rate: 1/s
      vars: {seq: 3}
      publish: {topic: greetings, json: {a: "{{ seq }}"}}
    - name: f
      rate: 1/s
      request: {service: publish-fn, route: publish, json: {}, body: "x"}
    """)
    with pytest.raises(SchemaError) as err:
        load_experiment(path)
    text = "\n".join(err.value.problems)
    # the model's own check (one body) comes first, as for any schema error
    assert "traffic.sources[5].request: give one body: json, form/files, body or hook; got json, body" in text
    path.write_text(path.read_text().replace(', body: "x"', ""))
    with pytest.raises(SchemaError) as err:
        load_experiment(path)
    text = "\n".join(err.value.problems)
    assert "spike.yaml:9: traffic.sources[0].request.path_params: route path /items/{item_id}/tags/{tag} needs 'tag'" in text
    assert "traffic.sources[1].request.files.photo.file: cannot read missing.jpg" in text
    assert "traffic.sources[2].request.hook: cannot import 'no_such_module'" in text
    assert "traffic.sources[3].locale: unknown Faker locale" in text
    assert "traffic.sources[4].vars.seq: 'seq' is a built-in name of templates" in text


def test_untemplated_sources_keep_the_built_in_requests(tmp_path):
    path = write(tmp_path, """\
    - name: plain
      rate: 1/s
      request: {service: publish-fn, route: publish}
    """)
    s = sends(path, 1, "plain")[0]
    assert set(json.loads(s.body)) == {"requestId"}


def test_relative_scenario_paths_resolve_before_locust_changes_directory(tmp_path, monkeypatch):
    write(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    plan = LivePlan("spike.yaml")
    assert plan.scenario_path == tmp_path / "spike.yaml" and plan.scenario_path.is_absolute()


def test_a_source_rate_scale_thins_that_source_only(tmp_path):
    path = write(tmp_path, """\
    - {name: commands, rate: 20/s, rate_scale: 1.0, request: {service: publish-fn, route: publish, json: {a: 1}}}
    - {name: telemetry, rate: 20/s, publish: {topic: greetings, json: {a: 1}}}
    """)
    text = path.read_text().replace("rate_scale: 1}", "rate_scale: 0.1}")
    path.write_text(text)
    plan = LivePlan(path)
    cmd, tel = plan.source("commands"), plan.source("telemetry")
    assert plan.wall_rate(cmd, 5.0) == pytest.approx(20.0) and plan.wall_rate(tel, 5.0) == pytest.approx(2.0)
    counts = {s.name: 0 for s in (cmd, tel)}
    for _, s in plan.timetable().all_times():
        counts[s.name] += 1
    assert 1050 <= counts["commands"] <= 1350 and 80 <= counts["telemetry"] <= 160


def test_firestore_and_storage_sources_render_the_emulators_rest_calls(tmp_path):
    (tmp_path / "system.yaml").write_text(SYSTEM + "stores:\n  firestore:\n    - {name: profiles}\n"
                                          "  storage:\n    - {name: uploads}\n")
    (tmp_path / "spike.yaml").write_text(textwrap.dedent("""\
        name: w
        system: system.yaml
        duration: 10s
        traffic:
          sources:
            - {name: c, rate: 1/s, firestore: {collection: profiles, op: create, data: {n: "{{ seq }}", ok: true, x: 1.5, l: [a, null]}}}
            - {name: s, rate: 1/s, firestore: {collection: profiles, op: set, document: "u{{ seq }}", data: {m: {k: v}}}}
            - {name: u, rate: 1/s, firestore: {collection: profiles, op: update, document: u1, data: {a: 1, b: 2}}}
            - {name: d, rate: 1/s, firestore: {collection: profiles, op: delete, document: "u{{ seq }}"}}
            - {name: up, rate: 1/s, storage: {bucket: uploads, object: "p/{{ seq }}.bin", bytes: 100, content_type: image/jpeg}}
        """))
    plan = LivePlan(tmp_path / "spike.yaml")
    p = Payloads(plan, tag="t")
    base = "/v1/projects/greeter-local/databases/(default)/documents/profiles"
    c = p.build(plan.source("c"), 1.0)
    assert c.method == "POST" and c.path.startswith(base + "?documentId=") and len(c.path.split("=")[1]) == 20
    assert json.loads(c.body) == {"fields": {"n": {"integerValue": "1"}, "ok": {"booleanValue": True},
                                             "x": {"doubleValue": 1.5}, "l": {"arrayValue": {"values": [
                                                 {"stringValue": "a"}, {"nullValue": None}]}}}}
    s = p.build(plan.source("s"), 1.0)
    assert (s.method, s.path) == ("PATCH", base + "/u1")
    assert json.loads(s.body)["fields"]["m"] == {"mapValue": {"fields": {"k": {"stringValue": "v"}}}}
    u = p.build(plan.source("u"), 1.0)
    assert u.path == base + "/u1?updateMask.fieldPaths=a&updateMask.fieldPaths=b&currentDocument.exists=true"
    d = p.build(plan.source("d"), 1.0)
    assert (d.method, d.path, d.body) == ("DELETE", base + "/u1", b"")
    up = p.build(plan.source("up"), 1.0)
    assert up.path == "/upload/storage/v1/b/uploads/o?uploadType=media&name=p%2F1.bin"
    assert len(up.body) == 100 and up.headers["Content-Type"] == "image/jpeg"
    assert plan.source("up").label == "write/storage.uploads" and plan.source("c").label == "write/firestore.profiles"
    # an undeclared collection is named with its line
    (tmp_path / "spike.yaml").write_text((tmp_path / "spike.yaml").read_text().replace("bucket: uploads", "bucket: nope"))
    with pytest.raises(SchemaError, match=r"spike.yaml:10: traffic.sources\[4\].storage.bucket: bucket 'nope' is not declared"):
        load_experiment(tmp_path / "spike.yaml")


# a service on a Firestore trigger (its name the %s) and nothing else
FIRESTORE_TRIGGERED = textwrap.dedent("""\
    name: fs
    project: fs-local
    services:
      - {name: on-profile, steps: [{cpu: 1ms}]}
    stores:
      firestore:
        - {name: profiles}
    triggers:
      - {name: %s, collection: profiles, target: on-profile}
    """)


def test_the_simulator_starts_the_trigger_path_of_a_firestore_source(tmp_path):
    from surgesim.sim.engine import run
    from surgesim.sim.output import write_run

    (tmp_path / "system.yaml").write_text(FIRESTORE_TRIGGERED % "t")
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""\
        name: s
        system: system.yaml
        duration: 100s
        traffic:
          sources:
            - {name: p, rate: 10/s, firestore: {collection: profiles, data: {a: 1}}}
          waves:
            - {name: w, at: 50s, duration: 20s, multiply: {p: 3}}
        """))
    summary = write_run(run(load_experiment(tmp_path / "s.yaml")), tmp_path / "run")
    n = summary["totals"]["services"]["on-profile"]["requests"]
    assert 1250 <= n <= 1550, n  # 10/s x 100 s + 20/s extra for 20 s
    # the trigger path's lag, change -> handled: Eventarc's assumed delivery (p50 300 ms,
    # sim/triggers.py; p99 1.5 s) plus the 1 ms handler, one sample per delivered change; the
    # fast path hands a step's deliveries to the handler at the step's pace, which adds to the tail
    lag = summary["lag"]["t"]
    assert lag["count"] == summary["totals"]["triggers"]["t"]["delivered"] == n
    assert 0.27 < lag["p50"] < 0.33 and 1.3 < lag["p99"] < 2.6, lag


def test_a_trigger_lag_slo_names_a_trigger_or_a_subscription(tmp_path):
    from surgesim.emulators.triggers import change_epoch

    (tmp_path / "system.yaml").write_text(FIRESTORE_TRIGGERED % "profile-written")
    body = textwrap.dedent("""\
        name: s
        system: system.yaml
        duration: 10s
        traffic:
          sources:
            - {name: p, rate: 1/s, firestore: {collection: profiles, data: {a: 1}}}
        slos:
          - p99(lag.%s) < 2s
        """)
    (tmp_path / "ok.yaml").write_text(body % "profile-written")
    load_experiment(tmp_path / "ok.yaml")
    (tmp_path / "bad.yaml").write_text(body % "profile-writen")
    with pytest.raises(SchemaError, match="no such subscription or Firestore/Storage trigger"):
        load_experiment(tmp_path / "bad.yaml")
    assert change_epoch("2026-12-07T11:00:00.123456789Z") == pytest.approx(1796641200.123456)
    assert change_epoch(None) is None and change_epoch("yesterday") is None


def test_emulator_endpoints_round_trip_through_the_generators_environment():
    from surgesim.loadtests.plan import emulator_endpoints
    from surgesim.loadtests.runner import host_env

    env = {"FIRESTORE_EMULATOR_HOST": "127.0.0.1:8086", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023"}
    eps = emulator_endpoints(env)
    assert eps == {"firestore_emulator": "http://127.0.0.1:8086", "storage_emulator": "http://127.0.0.1:9023"}
    assert host_env(eps) == env  # each variable back in its own convention


def test_the_simulator_sizes_templated_messages_from_renders(tmp_path):
    """A templated publish source without `message_bytes` costs what its rendered messages
    weigh (the mean of a few seeded renders), not the topic's default size."""
    from surgesim.sim.engine import run

    path = write(tmp_path, """\
    - name: small
      rate: 10/s
      publish: {topic: greetings, json: {m: "{{ faker.first_name() }}"}}
    """)
    sized = run(load_experiment(path)).totals()["topics"]["greetings"]
    per_msg = sized["bytes"] / sized["published"]
    assert 10 <= per_msg <= 25, per_msg  # {"m":"<a first name>"}, far from the topic's 512 B default
    big = path.read_text().replace('{m: "{{ faker.first_name() }}"}', '{m: "{{ faker.text(max_nb_chars=2000) }}"}')
    path.write_text(big)
    per_big = (lambda t: t["bytes"] / t["published"])(run(load_experiment(path)).totals()["topics"]["greetings"])
    assert per_big > 20 * per_msg, (per_msg, per_big)
    # a stated size wins over the renders
    path.write_text(big.replace("publish: {topic: greetings,", "publish: {topic: greetings, message_bytes: 100,"))
    stated = run(load_experiment(path)).totals()["topics"]["greetings"]
    assert stated["bytes"] == 100 * stated["published"]
