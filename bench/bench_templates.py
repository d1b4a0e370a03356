"""How many payloads per second the load generators build from templates (one core).

Every send of a templated source goes through `Payloads.build` -> `SourcePayload.render`
(surgesim/templates.py) in the generator's own process, before any network: this measures
that cost alone, per kind of template, beside the built-in (untemplated) requests.

    .venv/bin/python bench/bench_templates.py [--n 20000] [--repeat 3]

Prints one line per case: builds/s (best of --repeat) and µs per build.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from pathlib import Path

from surgesim.loadtests.actions import Payloads
from surgesim.loadtests.plan import LivePlan

SYSTEM = """\
name: bench
project: bench-local
topics:
  - {name: events}
services:
  - name: api
    routes:
      - {name: publish, path: /}
      - {name: order, path: "/customers/{customer}/orders"}
      - {name: upload, path: /upload}
"""

SOURCES = """\
- name: minimal
  rate: 5/s
  request: {service: api, route: publish, json: {topic: greetings, message: "{{ faker.first_name() }}"}}
- name: order
  rate: 5/s
  vars: {currencies: [EUR, GBP, USD]}
  request:
    service: api
    route: order
    path_params: {customer: "c{{ randint(1, 5000) }}"}
    headers: {X-Request-Id: "{{ uuid }}"}
    json:
      orderId: "{{ uuid }}"
      seq: "{{ seq }}"
      customer: {name: "{{ faker.name() }}", email: "{{ faker.email() }}", city: "{{ faker.city() }}"}
      currency: "{{ choice(currencies) }}"
      amount: "{{ (exponential(40) + 1) | round(2) }}"
      items: [{sku: "SKU-{{ randint(1, 999) }}", qty: "{{ randint(1, 4) }}"}]
      placedAt: "{{ intended_iso }}"
      channel: web
- name: event
  rate: 5/s
  publish:
    topic: events
    json: {user: "{{ faker.user_name() }}", n: "{{ seq }}", score: "{{ uniform(0, 1) }}"}
    attributes: {kind: signup, region: "{{ weighted({'eu': 0.6, 'us': 0.4}) }}"}
    ordering_key: "{{ seq % 16 }}"
- name: upload
  rate: 5/s
  request:
    service: api
    route: upload
    form: {owner: "{{ faker.name() }}", n: "{{ seq }}"}
    files: {photo: {file: photo.bin, content_type: image/jpeg}}
- name: builtin
  rate: 5/s
  request: {service: api, route: publish}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        (base / "system.yaml").write_text(SYSTEM)
        (base / "photo.bin").write_bytes(bytes(range(256)) * 24)  # ~6 KB, a small photo
        (base / "s.yaml").write_text("name: b\nsystem: system.yaml\nduration: 60s\ntraffic:\n  sources:\n"
                                     + textwrap.indent(SOURCES, "    "))
        t = time.perf_counter()
        plan = LivePlan(base / "s.yaml")
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        payloads = Payloads(plan, tag="b")
        compile_s = time.perf_counter() - t
        print(f"scenario load + validation (trial renders included) {load_s * 1000:.0f} ms; "
              f"compiling {len(payloads.templates)} templated sources {compile_s * 1000:.0f} ms")
        for src in plan.sources:
            best = 0.0
            for _ in range(a.repeat):
                t = time.perf_counter()
                for i in range(a.n):
                    payloads.build(src, 1.7e9 + i * 0.001)
                best = max(best, a.n / (time.perf_counter() - t))
            size = len(payloads.build(src, 1.7e9).body or payloads.build(src, 1.7e9).message[0])
            print(f"{src.name:10s} {best:10,.0f} builds/s  {1e6 / best:6.1f} µs/build  ~{size} bytes")


if __name__ == "__main__":
    main()
