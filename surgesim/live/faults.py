"""A scenario's faults applied to the running system on the wall clock (scenario time /
time_scale), each start and end recorded in scenario seconds for faults.json.

| kind | start | end |
| --- | --- | --- |
| dependency_latency / _errors / _outage | the fake's admin API (PUT /admin/behaviour) | its earlier behaviour restored |
| consumer_down | the service process stopped | started again (same front) |
| poison_message | `count` messages with `attributes` published to `topic` | (instant) |
| bad_deploy | restarted with BAD_PATTERN=<matching> | restarted without; with replay: the target's subscriptions sought back to the deploy, the DLQ holding subscriptions' messages re-published |
| emulator_restart | not supported live: recorded as such | |
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import httpx

from surgesim.schema import Fault

log = logging.getLogger(__name__)

DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"


def _rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Active:
    fault: Fault
    started_wall: float
    restore: dict = field(default_factory=dict)


class FaultInjector:
    def __init__(self, runner, faults: list[Fault], time_scale: float, *, say=None) -> None:
        self.runner = runner
        self.time_scale = time_scale
        self.pending = sorted(faults, key=lambda f: f.at)
        self.active: list[Active] = []
        self.events: list[dict] = []
        self.say = say or (lambda m: log.info("%s", m))
        self.http = httpx.Client(trust_env=False, timeout=30)
        self.base = f"http://{runner.stack.endpoint('pubsub')}/v1/projects/{runner.system.project}"

    # ---- the clock ---------------------------------------------------------------------------
    def tick(self, scenario_t: float, wall_epoch: float | None = None) -> None:
        """Start every fault due by scenario time t and end every one whose end passed."""
        wall_epoch = wall_epoch or time.time()
        while self.pending and self.pending[0].at <= scenario_t:
            self._start(self.pending.pop(0), scenario_t, wall_epoch)
        for a in list(self.active):
            if a.fault.end is not None and a.fault.end <= scenario_t:
                self._end(a, scenario_t)

    def finish(self, scenario_t: float) -> None:
        """End whatever is still active (faults without a duration last until the run ends)."""
        for a in list(self.active):
            self._end(a, scenario_t)
        self.http.close()

    # ---- start / end ---------------------------------------------------------------------------
    def _record(self, f: Fault, start_s: float, end_s: float | None, **details) -> dict:
        d = {}
        for k in ("latency", "error_rate", "topic", "count", "matching", "replay"):
            v = getattr(f, k)
            if v is not None:
                d[k] = v.model_dump() if hasattr(v, "model_dump") else v
        if f.kind == "poison_message":
            d["attributes"] = dict(f.attributes)
        d.update(details)
        ev = {"kind": f.kind, "target": f.target or f.topic or "", "start_s": start_s, "end_s": end_s, "details": d}
        self.events.append(ev)
        return ev

    def _start(self, f: Fault, t: float, wall_epoch: float) -> None:
        a = Active(f, wall_epoch)
        r = self.runner
        try:
            if f.kind.startswith("dependency_"):
                before = r.fake_admin(f.target, "GET", "/admin/behaviour").json()
                if f.kind == "dependency_latency":
                    patch = {"latency_p50_ms": f.latency.p50 * 1000.0,
                             "latency_p99_ms": (f.latency.p99 or f.latency.p50) * 1000.0}
                elif f.kind == "dependency_errors":
                    patch = {"error_rate": f.error_rate}
                else:
                    patch = {"outage": True}
                a.restore = {k: before.get(k) for k in patch}
                if f.kind == "dependency_latency" and a.restore.get("latency_p99_ms") is None:
                    a.restore["latency_p99_ms"] = a.restore.get("latency_p50_ms")
                r.fake_admin(f.target, "PUT", "/admin/behaviour", json=patch)
            elif f.kind == "consumer_down":
                r.stop_service(f.target)
            elif f.kind == "poison_message":
                data = base64.b64encode(b"\xff not json").decode()
                msgs = [{"data": data, "attributes": dict(f.attributes)} for _ in range(f.count)]
                for i in range(0, len(msgs), 1000):
                    self.http.post(f"{self.base}/topics/{f.topic}:publish", json={"messages": msgs[i:i + 1000]}).raise_for_status()
                self._record(f, t, t)
                self.say(f"fault at {t:.0f}s: poison_message x{f.count} -> {f.topic}")
                return
            elif f.kind == "bad_deploy":
                r.start_service(f.target, extra_env={"BAD_PATTERN": f.matching})
            else:
                self._record(f, t, t, unsupported=True,
                             reason="emulator_restart is not applied live: the emulators keep no state across restarts")
                self.say(f"fault at {t:.0f}s: {f.kind} is not supported live; recorded only")
                return
        except Exception as exc:  # noqa: BLE001 -- a fault that cannot be applied is recorded, the run goes on
            self._record(f, t, t, failed=f"{type(exc).__name__}: {exc}")
            self.say(f"fault at {t:.0f}s: {f.kind} on {f.target} FAILED: {exc}")
            return
        self.active.append(a)
        self.say(f"fault at {t:.0f}s: {f.kind} on {f.target or f.topic} started")

    def _end(self, a: Active, t: float) -> None:
        self.active.remove(a)
        f, r = a.fault, self.runner
        details = {}
        try:
            if f.kind.startswith("dependency_"):
                r.fake_admin(f.target, "PUT", "/admin/behaviour",
                             json={k: v for k, v in a.restore.items() if v is not None} or {"outage": False})
            elif f.kind == "consumer_down":
                r.start_service(f.target)
            elif f.kind == "bad_deploy":
                r.start_service(f.target, drop_env=("BAD_PATTERN",))
                if f.replay:
                    details.update(self._replay(f.target, a.started_wall))
        except Exception as exc:  # noqa: BLE001
            details["end_failed"] = f"{type(exc).__name__}: {exc}"
            self.say(f"fault end at {t:.0f}s: {f.kind} on {f.target} FAILED: {exc}")
        self._record(f, f.at, t, **details)
        self.say(f"fault at {t:.0f}s: {f.kind} on {f.target or f.topic} ended")

    def _replay(self, service: str, since_epoch: float) -> dict:
        """Seek the service's subscriptions back to the deploy and re-publish what their
        dead-letter holding subscriptions hold (the documented recovery)."""
        system = self.runner.system
        subs = [s for s in system.subscriptions if s.consumer == service]
        sought, republished = [], 0
        for s in subs:
            self.http.post(f"{self.base}/subscriptions/{s.name}:seek", json={"time": _rfc3339(since_epoch)}).raise_for_status()
            sought.append(s.name)
            if s.dead_letter is None:
                continue
            for hold in [h for h in system.subscriptions if h.topic == s.dead_letter.topic and h.consumer is None]:
                republished += self._redrive(hold.name, s.topic)
        return {"sought": sought, "republished": republished}

    def _redrive(self, hold: str, topic: str) -> int:
        n = 0
        metrics = self.runner.bridges.metrics
        loop = self.runner.bridges._loop  # noqa: SLF001 -- the sampler's ledgers live in that loop
        while True:
            r = self.http.post(f"{self.base}/subscriptions/{hold}:pull", json={"maxMessages": 1000, "returnImmediately": True})
            r.raise_for_status()
            got = r.json().get("receivedMessages", [])
            if not got:
                return n
            msgs = [{"data": m["message"].get("data", ""),
                     "attributes": {k: v for k, v in (m["message"].get("attributes") or {}).items()
                                    if not k.startswith(DEAD_LETTER_PREFIX)}} for m in got]
            self.http.post(f"{self.base}/topics/{topic}:publish", json={"messages": msgs}).raise_for_status()
            self.http.post(f"{self.base}/subscriptions/{hold}:acknowledge",
                           json={"ackIds": [m["ackId"] for m in got]}).raise_for_status()
            mids = [m["message"]["messageId"] for m in got]
            loop.call_soon_threadsafe(lambda ids=mids: [metrics.settled(hold, i) for i in ids])
            n += len(got)
