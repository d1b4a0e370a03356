"""Pools, let/capture, flows and the prepare phase (loadtests/actions.py, loadtests/prepare.py),
driven through the real fleet driver against an in-process HTTP handler (httpx.MockTransport);
the live tests with real services are tests/integration/test_example_greetings.py and
tests/integration/test_live_prepare.py."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest

from surgesim.checks import client_error_checks
from surgesim.live.totals import route_totals
from surgesim.loadtests.actions import Payloads, Pools, capture, CaptureMissing
from surgesim.loadtests.fleet_driver import FleetDriver
from surgesim.loadtests.plan import LivePlan
from surgesim.loadtests.prepare import run_prepare
from surgesim.schema import SchemaError, load_experiment

SYSTEM = """\
name: shop
project: shop-local
topics:
  - {name: orders}
stores:
  firestore:
    - {name: carts}
services:
  - name: api
    routes:
      - {name: open_cart, path: /carts, method: POST}
      - {name: add_item, path: "/carts/{cart_id}/items", method: POST}
      - {name: pay, path: "/carts/{cart_id}/pay", method: POST}
"""

HEAD = """\
name: shop
system: system.yaml
seed: 4
duration: 100s
live: {time_scale: 10, rate_scale: 1, locust: false}
"""


def write(tmp_path, body: str, name: str = "scenario.yaml"):
    (tmp_path / "system.yaml").write_text(SYSTEM)
    (tmp_path / name).write_text(HEAD + body)
    return tmp_path / name


def drive(plan: LivePlan, handler, duration: float | None = None, preload: bool = False):
    async def go():
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        driver = FleetDriver(plan, {"api": "http://api", "pubsub": "ps:1", "project": "p",
                                    "firestore_emulator": "http://fs"}, concurrency=8, client=client)
        try:
            return await driver.run(duration, preload=preload, drain_s=20.0)
        finally:
            await client.aclose()

    return asyncio.run(go())


POOLED = """\
traffic:
  sources:
    - name: open
      rate: 20/s
      let: {cart: "C{{ run }}-{{ seq }}"}
      put: open_carts
      capture: {token: "$.token", etag: "header:ETag"}
      request: {service: api, route: open_cart, json: {cartId: "{{ cart }}"}}
    - name: pay
      rate: 60/s
      take: open_carts
      request: {service: api, route: pay, path_params: {cart_id: "{{ cart }}"},
                json: {token: "{{ token }}", etag: "{{ etag }}"}}
"""


def test_a_pool_connects_sources_and_an_empty_pool_starves(tmp_path):
    """pay takes what open put, with open's captures; a refused pay gives its cart back and
    the next pay sends it again (so each cart is taken twice); pay runs three times as often
    as open, so about a third of its arrivals find no cart (starved, counted, never sent)."""
    plan = LivePlan(write(tmp_path, POOLED))
    opened: dict[str, str] = {}
    paid: list[dict] = []
    refused: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/carts":
            opened[body["cartId"]] = f"t-{len(opened)}"
            return httpx.Response(201, json={"token": opened[body["cartId"]]}, headers={"ETag": f"e{len(opened)}"})
        cart = request.url.path.split("/")[2]
        if cart not in refused:  # every cart is refused once, then accepted
            refused.add(cart)
            return httpx.Response(409)
        paid.append({"cart": cart, **body})
        return httpx.Response(200)

    result = drive(plan, handler, duration=4.0)
    c = result.counts
    assert c["open"]["sent"] == c["open"]["scheduled"] > 50
    assert c["pay"]["starved"] > 0.15 * c["pay"]["scheduled"]
    assert c["pay"]["sent"] + c["pay"]["starved"] == c["pay"]["scheduled"]
    assert c["pay"]["status_409"] == len(refused) and c["pay"]["status_200"] == len(paid) > 25
    # each paid cart is an opened one, with the token and header captured from its own answer
    for p in paid:
        assert opened[p["cart"]] == p["token"] and p["etag"].startswith("e")
    assert len({p["cart"] for p in paid}) == len(paid)  # refused carts came back, paid once
    assert result.extra["pools"]["open_carts"] == len(opened) - len(paid) - sum(
        1 for cart in refused if cart not in {p["cart"] for p in paid})


def test_capture_reads_jsonpath_and_headers_and_names_what_is_missing():
    headers = httpx.Headers({"Location": "/carts/9"})
    got = capture((("id", "$.cart.items[1].sku"), ("where", "header:location")),
                  b'{"cart": {"items": [{"sku": "a"}, {"sku": "b"}]}}', headers)
    assert got == {"id": "b", "where": "/carts/9"}
    with pytest.raises(CaptureMissing, match=r"id: nothing at \$.nope"):
        capture((("id", "$.nope"),), b"{}", headers)
    with pytest.raises(CaptureMissing, match="not JSON"):
        capture((("id", "$.x"),), b"<html>", headers)


def test_pools_are_fifo_and_a_failed_item_goes_back_first():
    p = Pools()
    assert p.take("x") is None
    for i in range(3):
        p.put("x", {"i": i})
    first = p.take("x")
    p.give_back("x", first)
    assert [p.take("x")["i"] for _ in range(3)] == [0, 1, 2] and p.take("x") is None


FLOW = """\
traffic:
  sources:
    - name: shopper
      rate: 2/s
      let: {who: "{{ faker.first_name() }}"}
      put: paid
      flow:
        steps:
          - {label: open, request: {service: api, route: open_cart, json: {owner: "{{ who }}"}},
             capture: {cart: "$.id"}}
          - think: 20s
          - {label: add, request: {service: api, route: add_item, path_params: {cart_id: "{{ cart }}"},
             json: {sku: "{{ choice(['a', 'b']) }}"}}}
          - {label: pay, request: {service: api, route: pay, path_params: {cart_id: "{{ cart }}"}, json: {}}}
"""


def test_a_flow_runs_its_steps_in_order_with_captures_and_counts_aborts(tmp_path):
    """Each arrival opens a cart, thinks (20 scenario s = 2 wall s at time_scale 10), adds
    an item and pays, with the captured cart id; an add that fails aborts the flow (no pay
    for that cart), counted per flow and step; the aborted flows fail the client-error check."""
    path = write(tmp_path, FLOW)
    plan = LivePlan(path)
    events: dict[str, list] = {}
    fail_every = 4

    def handler(request: httpx.Request) -> httpx.Response:
        import time

        if request.url.path == "/carts":
            cart = f"c{len(events)}"
            events[cart] = [("open", time.time(), json.loads(request.content)["owner"])]
            return httpx.Response(201, json={"id": cart})
        _, _, cart, what = request.url.path.split("/")[:4]
        events[cart].append((what, time.time()))
        if what == "items" and int(cart[1:]) % fail_every == 0:
            return httpx.Response(500)
        return httpx.Response(200)

    result = drive(plan, handler, duration=6.0)
    c = result.counts
    started = c["shopper"]["flows_started"]
    aborted = [cart for cart, ev in events.items() if len(ev) > 1 and int(cart[1:]) % fail_every == 0]
    assert started > 5 and c["shopper"]["flows_aborted"] == len(aborted) > 0
    assert c["shopper"]["aborted_at_add"] == len(aborted)
    assert c["shopper"]["flows_completed"] == started - len(aborted)
    for cart, ev in events.items():
        kinds = [e[0] for e in ev]
        if cart in aborted:
            assert kinds == ["open", "items"]
        elif len(ev) == 3:
            assert kinds == ["open", "items", "pay"]
            assert 1.95 < ev[1][1] - ev[0][1] < 5.0  # the think: 20 s / time_scale 10
        assert ev[0][2]  # the flow's let (a Faker name) reached the first step
    # each labelled step has its own histogram
    assert {"flow/shopper.open", "flow/shopper.add", "flow/shopper.pay"} <= set(result.histograms)
    assert result.extra["pools"].get("paid", 0) == c["shopper"]["flows_completed"]
    # totals: the flow's row, and the client-error check fails on its aborts
    exp = load_experiment(path)
    routes = route_totals(exp.scenario, c)
    assert routes["flow.shopper"]["status"] == {"completed": c["shopper"]["flows_completed"], "aborted": len(aborted)}
    assert routes["api.add_item"]["status"]["500"] == len(aborted)
    checks = {ch["name"]: ch for ch in client_error_checks({"totals": {"routes": routes}}, exp.scenario, exp.system)}
    assert checks["client_errors.flow.shopper"]["holds"] is False
    assert checks["client_errors.api.open_cart"]["holds"] is True
    # a flow's row can be relaxed by its name, like a route; a misspelt flow is refused at its line
    share = len(aborted) / started
    relaxed = write(tmp_path, FLOW + f'checks:\n  client_errors: {{routes: {{flow.shopper: {share + 0.01:.3f}}}, '
                                     'reason: "every 4th add fails on purpose"}\n')
    exp = load_experiment(relaxed)
    checks = {ch["name"]: ch for ch in client_error_checks({"totals": {"routes": routes}}, exp.scenario, exp.system)}
    assert checks["client_errors.flow.shopper"]["holds"] is True
    assert "relaxed to" in checks["client_errors.flow.shopper"]["detail"]
    with pytest.raises(SchemaError) as err:
        load_experiment(write(tmp_path, FLOW + 'checks:\n  client_errors: {routes: {flow.shoper: 0.5}, reason: "r"}\n'))
    assert any("checks.client_errors.routes.flow.shoper" in p and "no traffic source 'shoper' runs a flow" in p
               and "did you mean 'shopper'" in p for p in err.value.problems), err.value.problems


PREPARED = """\
traffic:
  sources:
    - name: pay
      rate: 3/s
      take: stocked
      request: {service: api, route: pay, path_params: {cart_id: "{{ cart }}"}, json: {}}
prepare:
  - name: carts
    count: {cover: pay}
    put: stocked
    let: {cart: "S{{ run }}-{{ seq }}"}
    firestore: {collection: carts, document: "{{ cart }}", op: create,
                data: {status: open, at: "{{ intended_datetime }}", n: "{{ seq }}"}}
"""


def test_prepare_cover_count_is_the_expected_sends_plus_three_sd(tmp_path):
    plan = LivePlan(write(tmp_path, PREPARED))
    mean = 3 * plan.duration_s  # 3/s for 10 wall s
    assert plan.expected_count(plan.source("pay")) == pytest.approx(mean, rel=1e-6)
    assert plan.prepare_count(plan.prepare[0]) == math.ceil(mean + 3 * math.sqrt(mean))


def test_prepare_writes_firestore_in_batched_commits_and_fills_the_pool(tmp_path):
    """{cover: pay} documents in commits of at most 500 writes, each a create of a typed
    document; the pool then holds every cart, so pay never starves."""
    body = PREPARED.replace("rate: 3/s", "rate: 120/s")
    plan = LivePlan(write(tmp_path, body))
    commits: list[list[dict]] = []
    paid: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(":commit"):
            commits.append(json.loads(request.content)["writes"])
            return httpx.Response(200, json={})
        paid.append(request.url.path.split("/")[2])
        return httpx.Response(200)

    result = drive(plan, handler, preload=True)
    n = plan.prepare_count(plan.prepare[0])
    assert n > 1200 and [len(w) for w in commits] == [500] * (n // 500) + ([n % 500] if n % 500 else [])
    first = commits[0][0]
    assert first["currentDocument"] == {"exists": False}
    assert first["update"]["name"].startswith("projects/p/databases/(default)/documents/carts/S")
    fields = first["update"]["fields"]
    assert fields["status"] == {"stringValue": "open"} and "timestampValue" in fields["at"]
    assert fields["n"] == {"integerValue": "1"}
    written = [w["update"]["name"].rsplit("/", 1)[1] for c in commits for w in c]
    assert result.counts["pay"]["starved"] == 0 and result.counts["pay"]["sent"] == len(paid) > 1000
    assert paid == written[:len(paid)]  # oldest first
    assert result.extra["prepare"]["entries"]["carts"] == {"count": n, "ok": n, "failed": 0,
                                                           "seconds": result.extra["prepare"]["entries"]["carts"]["seconds"]}


def test_prepare_request_entries_run_one_by_one_and_share_between_workers(tmp_path):
    body = """\
traffic:
  sources:
    - {name: pay, rate: 1/s, take: opened, request: {service: api, route: pay, path_params: {cart_id: "{{ id }}"}}}
prepare:
  - name: opened
    count: 10
    put: opened
    capture: {id: "$.id"}
    request: {service: api, route: open_cart, json: {n: "{{ seq }}"}}
"""
    plan = LivePlan(write(tmp_path, body))
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        n = json.loads(request.content)["n"]
        seen.append(n)
        return httpx.Response(201 if n != 3 else 500, json={"id": f"c{n}"})

    async def go(share):
        payloads = Payloads(plan, tag="w")
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            info = await run_prepare(plan, payloads, {"api": "http://api", "project": "p"}, client, share=share)
        return info, payloads

    info, payloads = asyncio.run(go((0, 1)))
    assert info["opened"]["count"] == 10 and info["opened"]["ok"] == 9 and info["opened"]["failed"] == 1
    assert sorted(i["id"] for i in payloads.pools.items["opened"]) == sorted(f"c{n}" for n in range(1, 11) if n != 3)
    seen.clear()
    info, _ = asyncio.run(go((1, 3)))  # the second of three workers makes its share: 3 of 10
    assert info["opened"]["count"] == 3 and len(seen) == 3


BAD = [
    ("take from nobody", POOLED.replace("take: open_carts", "take: open_cart"),
     "traffic.sources[1].take: no source or prepare entry puts into pool 'open_cart' (did you mean 'open_carts'?)"),
    ("bad jsonpath", POOLED.replace('"$.token"', '"$.[["'), "traffic.sources[0].capture.token: bad JSONPath"),
    ("undefined in let", POOLED.replace("{{ run }}-{{ seq }}", "{{ runn }}"),
     "traffic.sources[0].let.cart: undefined variable 'runn'"),
    ("undefined pool variable", POOLED.replace('"{{ token }}"', '"{{ tokn }}"'),
     "traffic.sources[1].request.json.token: undefined variable 'tokn'"),
    ("flow step route", FLOW.replace("route: add_item", "route: add_itm"),
     "traffic.sources[0].flow.steps[2].request.route: service 'api' has no route 'add_itm'"),
    ("flow capture used before", FLOW.replace('json: {owner: "{{ who }}"}', 'json: {owner: "{{ cart }}"}'),
     "traffic.sources[0].flow.steps[0].request.json.owner: undefined variable 'cart'"),
    ("cover unknown", PREPARED.replace("cover: pay", "cover: pya"),
     "prepare[0].count.cover: source 'pya' is not under traffic.sources"),
    ("think with capture", FLOW.replace("- think: 20s", "- {think: 20s, capture: {x: $.x}}"),
     "traffic.sources[0].flow.steps[1]: a think step has no answer to capture from"),
    ("prepare takes", PREPARED.replace("    put: stocked\n", "    put: stocked\n    take: stocked\n"),
     "prepare[0]: a prepare entry makes items; it takes none (take:)"),
    ("stock", POOLED + "live: {stock: true}\n", "live.stock: removed; did you mean the top-level `prepare:`?"),
]


@pytest.mark.parametrize("body, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_schema_errors_name_file_line_and_field(tmp_path, body, message):
    if body.endswith("live: {stock: true}\n"):  # a second live: would be a duplicate key
        body = body.replace("live: {stock: true}\n", "")
        (tmp_path / "system.yaml").write_text(SYSTEM)
        path = tmp_path / "scenario.yaml"
        path.write_text(HEAD.replace("locust: false}", "locust: false, stock: true}") + body)
    else:
        path = write(tmp_path, body)
    with pytest.raises(SchemaError) as info:
        load_experiment(path)
    lines = [ln for ln in str(info.value).splitlines() if message in ln]
    assert lines, str(info.value)
    assert lines[0].startswith(f"{path}:") and lines[0].split(":")[1].isdigit()


def test_the_simulator_runs_a_flows_steps_at_its_rate_after_the_mean_thinks(tmp_path):
    """sim/engine.py: each step an arrival at the flow's rate, delayed by the mean think
    before it; arrivals whose delayed time falls after the end are not sent."""
    from surgesim.sim.engine import Engine

    system = SYSTEM.replace("method: POST}", "method: POST, steps: [{cpu: 2ms}]}") + (
        "subscriptions:\n  - {name: orders-sub, topic: orders, consumer: worker}\n")
    system = system.replace("services:\n", "services:\n  - {name: worker, steps: [{cpu: 1ms}]}\n")
    (tmp_path / "system.yaml").write_text(system)
    (tmp_path / "s.yaml").write_text(HEAD.replace("duration: 100s", "duration: 600s") + """\
traffic:
  sources:
    - name: shopper
      rate: 10/s
      flow:
        steps:
          - {request: {service: api, route: open_cart}}
          - think: 60s
          - {publish: {topic: orders}}
          - think: {dist: exponential, mean: 30s}
          - {request: {service: api, route: pay, path_params: {cart_id: x}}}
""")
    totals = Engine(load_experiment(tmp_path / "s.yaml")).run().totals()
    opened = totals["routes"]["api.open_cart"]["requests"]
    assert abs(opened - 6000) < 4 * math.sqrt(6000)
    # later steps: the arrivals of the first 540 s (60 s think) and 510 s (60 s + 30 s mean)
    assert totals["topics"]["orders"]["published"] == pytest.approx(opened * 540 / 600, rel=0.03)
    assert totals["routes"]["api.pay"]["requests"] == pytest.approx(opened * 510 / 600, rel=0.03)
