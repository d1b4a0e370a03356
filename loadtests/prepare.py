"""The `prepare:` phase: sends before the clock starts, unmeasured, to seed state.

Each entry of a scenario's `prepare:` is sent `count` times (an integer, or `{cover: SOURCE}`:
that source's expected arrivals over the run + 3 standard deviations, LivePlan.cover_count)
and, with `put: POOL`, each success's item (its `let:` variables and captures) goes into the
pool the run's sources take from. Firestore entries are written in batched commits (at most
500 writes each, Firestore's limit) through the emulator's REST API, so 10,000 documents
take seconds; requests, publishes and flows are sent one by one, 32 at a time.

Who runs it: the live harness (surgesim/live/session.py) before the clock -- the leading
Firestore-only entries before the trigger bridges start (a trigger fires only for changes
after it exists, so the documents are the triggers' baseline and no event leaves), the rest
once the services are up -- and hands the pools to the generator in prepare.json; a load
generator run on its own (fleet driver, Locust) runs it itself before its clock.

    python -m surgesim.loadtests.prepare --scenario S.yaml --out prepare.json [--share 0/2]
    (endpoints from the environment, as the generators take them)
"""

from __future__ import annotations

import asyncio
import os
import json
import time
from pathlib import Path
from typing import Any, Callable

import httpx

from surgesim.loadtests.actions import FlowRun, Payloads, Send, emulator_base, publish_body, publish_path, run_tag
from surgesim.loadtests.plan import FIRESTORE, FIRESTORE_ENDPOINT, PROJECT, PUBSUB, LivePlan, LiveSource

BATCH = 500
"""Firestore's limit of writes per commit."""
CONCURRENCY = 32
PREPARE_SEED = 104729
"""The prepare phase's own random stream: the run's payloads are the same with or without it."""


async def exchange(client: httpx.AsyncClient, endpoints: dict[str, str], send: Send,
                   project: str | None = None) -> tuple[bool, int | str, bytes, Any]:
    """One send on the wire, awaited: (ok, status, body, headers). A publish is a REST
    publish of its one message (a flow's step, a prepare entry); HTTP otherwise."""
    try:
        if send.message is not None:
            url = emulator_base(endpoints[PUBSUB]) + publish_path(project or endpoints.get(PROJECT, ""), send.source.topic)
            r = await client.post(url, content=publish_body([send.message]), headers={"Content-Type": "application/json"})
        else:
            url = endpoints[send.source.service].rstrip("/") + send.path
            r = await client.request(send.method, url, content=send.body, headers=send.headers)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__, b"", None
    return 200 <= r.status_code < 300, r.status_code, r.content, r.headers


async def run_flow(client: httpx.AsyncClient, endpoints: dict[str, str], run: FlowRun, project: str | None = None,
                   on_answer: Callable | None = None) -> bool:
    """Every step of a FlowRun in order (thinks slept); on_answer(send, ok, status,
    sent_at, done) after each step's answer. True when it completed."""
    while True:
        nxt = run.next(time.time())
        if nxt is None:
            return run.aborted_at is None
        if isinstance(nxt, float):
            await asyncio.sleep(nxt)
            continue
        sent_at = time.time()
        ok, status, body, headers = await exchange(client, endpoints, nxt, project)
        if on_answer is not None:
            on_answer(nxt, ok, status, sent_at, time.time())
        if not run.answer(nxt, ok, body, headers):
            return False


def share_of(n: int, share: tuple[int, int]) -> int:
    """How many of n items the k-th of n processes makes (every n-th from the k-th)."""
    k, m = share
    return max(0, (n - k + m - 1) // m)


async def run_prepare(plan: LivePlan, payloads: Payloads, endpoints: dict[str, str], client: httpx.AsyncClient, *,
                      entries: list[LiveSource] | None = None, duration_s: float | None = None,
                      share: tuple[int, int] = (0, 1), say: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Send the prepare entries (default: all), in order, into payloads.pools; per entry
    {count, ok, failed, seconds}."""
    out: dict[str, dict] = {}
    project = endpoints.get(PROJECT) or plan.exp.system.project
    for entry in plan.prepare if entries is None else entries:
        n = share_of(plan.prepare_count(entry, duration_s), share)
        started = time.perf_counter()
        if entry.action == FIRESTORE:  # the documents' project: the one their names were rendered with
            ok = await _firestore(payloads, entry, n, endpoints[FIRESTORE_ENDPOINT], payloads.project, client)
        else:
            ok = await _one_by_one(payloads, entry, n, endpoints, project, client)
        seconds = time.perf_counter() - started
        out[entry.name] = {"count": n, "ok": ok, "failed": n - ok, "seconds": round(seconds, 3)}
        if say is not None:
            into = f" into pool {entry.source.put}" if entry.source.put else ""
            say(f"prepare {entry.name}: {ok:,} of {n:,} ok{into} in {seconds:.1f} s")
    return out


async def _firestore(payloads: Payloads, entry: LiveSource, n: int, base: str, project: str,
                     client: httpx.AsyncClient) -> int:
    now = time.time()
    sends = [payloads.build(entry, now) for _ in range(n)]
    url = f"{base.rstrip('/')}/v1/projects/{project}/databases/(default)/documents:commit"
    sem = asyncio.Semaphore(4)

    async def commit(chunk: list[Send]) -> int:
        async with sem:
            r = await client.post(url, json={"writes": [s.write for s in chunk]},
                                  headers={"Authorization": "Bearer owner"})
        if r.status_code != 200:  # a commit is all or nothing
            raise RuntimeError(f"prepare {entry.name}: Firestore commit answered {r.status_code}: {r.text[:300]}")
        return len(chunk)

    await asyncio.gather(*(commit(sends[i:i + BATCH]) for i in range(0, len(sends), BATCH)))
    for s in sends:
        payloads.finish(s, True)
    return len(sends)


async def _one_by_one(payloads: Payloads, entry: LiveSource, n: int, endpoints: dict[str, str], project: str,
                      client: httpx.AsyncClient) -> int:
    sem = asyncio.Semaphore(CONCURRENCY)
    now = time.time()

    async def one() -> bool:
        item = payloads.build(entry, now)
        async with sem:
            if isinstance(item, FlowRun):
                ok = await run_flow(client, endpoints, item, project)
                payloads.flow_done(item)
                return ok
            ok, _, body, headers = await exchange(client, endpoints, item, project)
        return payloads.finish(item, ok, body, headers)

    results = await asyncio.gather(*(one() for _ in range(n)))
    return sum(results)


def write_prepared(path: str | Path, payloads: Payloads, entries: dict[str, dict], seconds: float) -> dict:
    """prepare.json: the pools' items (loadtests.actions.load_prepared) and what was sent."""
    info = {"entries": entries, "seconds": round(seconds, 3), "run_tag": payloads.tag}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pools = {name: list(q) for name, q in payloads.pools.items.items()}
    path.write_text(json.dumps({**info, "pools": pools}, default=str), encoding="utf-8")
    return info


class Preparer:
    """The harness's prepare phase in two parts: the leading Firestore-only entries (before
    the trigger bridges start) and the rest (once the services are up); prepare.json
    written after each part."""

    def __init__(self, plan: LivePlan, path: str | Path, say: Callable[[str], None] = print,
                 headers: dict[str, str] | None = None):
        """headers: on every HTTP request (a load-only run's target auth)."""
        self.plan, self.path, self.say = plan, Path(path), say
        self.payloads = Payloads(plan, tag=run_tag(), seed_offset=PREPARE_SEED,  # the system's project, as the services
                                 headers=headers)
        k = 0
        while k < len(plan.prepare) and plan.prepare[k].action == FIRESTORE:
            k += 1
        self.early, self.late = plan.prepare[:k], plan.prepare[k:]
        self.entries: dict[str, dict] = {}
        self.seconds = 0.0
        self.path.unlink(missing_ok=True)

    def run(self, endpoints: dict[str, str], entries: list[LiveSource]) -> None:
        if not entries:
            return
        started = time.perf_counter()

        async def go() -> dict:
            async with httpx.AsyncClient(trust_env=False, timeout=60.0) as client:
                return await run_prepare(self.plan, self.payloads, endpoints, client, entries=entries, say=self.say)

        self.entries.update(asyncio.run(go()))
        self.seconds += time.perf_counter() - started
        write_prepared(self.path, self.payloads, self.entries, self.seconds)

    def before_bridges(self, clients) -> None:
        """SystemRunner's before_bridges hook: the stores are provisioned, no trigger reads yet."""
        from surgesim.loadtests.plan import emulator_endpoints

        self.run({**emulator_endpoints(clients.env), PROJECT: clients.project}, self.early)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from surgesim.loadtests.plan import endpoints_from_env, missing_endpoints

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--out", required=True, help="prepare.json to write")
    ap.add_argument("--share", default="0/1", help="k/n: this process's share of every count (Locust workers)")
    ap.add_argument("--duration", type=float, default=None, help="wall seconds the run lasts (cover counts)")
    ap.add_argument("--time-scale", type=float, default=None)
    ap.add_argument("--rate-scale", type=float, default=None)
    a = ap.parse_args(argv)
    plan = LivePlan(a.scenario, time_scale=a.time_scale, rate_scale=a.rate_scale)
    endpoints = endpoints_from_env(plan)
    missing = missing_endpoints(plan, endpoints)
    if missing:
        raise SystemExit(f"set {', '.join(missing)}")
    k, n = (int(x) for x in a.share.split("/"))
    from surgesim.loadtests.target_env import target_headers

    payloads = Payloads(plan, seed_offset=PREPARE_SEED + k, project=endpoints.get(PROJECT),
                        headers=target_headers(dict(os.environ)))
    started = time.perf_counter()

    async def go() -> dict:
        async with httpx.AsyncClient(trust_env=False, timeout=60.0) as client:
            return await run_prepare(plan, payloads, endpoints, client, duration_s=a.duration, share=(k, n))

    entries = asyncio.run(go())
    write_prepared(a.out, payloads, entries, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
