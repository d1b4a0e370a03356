"""A scenario's faults applied to the running system on the wall clock (scenario time /
time_scale), each start and end recorded in scenario seconds for faults.json. What each kind
does is its class in surgesim/live/fault_kinds.py (a registry; the simulator's halves are
sim/faults.py):

| kind | start | end |
| --- | --- | --- |
| dependency_latency / _errors / _outage | the fake's admin API (PUT /admin/behaviour); a latency `ramp` moves its p50/p99 from what they were to the fault's, a PUT at most every half wall second (details: `ramp_s`, `ramp_updates`) | its earlier behaviour restored |
| consumer_down | pushes to it held (runner.hold_push), then the process stopped: it takes no messages, as a stopped pull worker takes none | started again (same front), pushes resumed |
| poison_message | `count` messages with `attributes` published to `topic` | (instant) |
| bad_deploy | a new revision with BAD_PATTERN=<matching> (runner.roll_out: no downtime) | the fixed revision; with replay, each affected message re-delivered once: a subscription with a dead-letter topic has its holding subscriptions' messages re-published (and again whatever reaches them later), one without is sought back to the deploy (never both: the seek would deliver the dead letters a second time) |
| emulator_restart (Pub/Sub) | the Pub/Sub emulator's process group frozen (SIGSTOP) | thawed (SIGCONT), with every topic, subscription, backlog and lease it had |
| job_task_crash / job_task_hang | armed: the first `count` task attempts of the job that start are killed / stopped (surgesim/live/job_faults.py) | disarmed |
| bigquery_job_failure | the BigQuery job clock (emulators/bq_jobs.py) makes each job inserted by `target` (or any service) end DONE with an errorResult (`backendError`) with probability `error_rate` (default 1), after its drawn run time | the window closed (jobs already failed stay failed); details: `jobs_inserted`, `jobs_failed` in the window |
| bigquery_job_slow | the BigQuery job clock runs each job inserted by `target` (or any service) a draw of `latency` longer, on the scenario clock (/ time_scale, as the job's own run time; not in wall seconds as dependency_latency's) | the window closed (jobs already slowed keep their run time); details: `jobs_inserted`, `jobs_slowed`, `added_s_mean` (scenario s) in the window |

emulator_restart, live: the simulator's semantics are "no Pub/Sub deliveries in the
window; messages are kept and delivered after" (sim/broker.py). Live, the emulator is made
unavailable for the wall window (duration / time_scale) by freezing it, not by a restart:
the gcloud emulator keeps its state in memory only, and a real restart would lose topics,
subscriptions and backlog, which could only be faked back under new message ids
(surgesim/live/pause.py says why). While frozen, every client (the load generator, the
services' publishers, the bridges, the pull workers through the counting gRPC proxy) sees
open connections and no answer: their calls wait and land when the emulator comes back
(all of them time out later than a window of ~15 wall seconds: httpx 30 s, the official
clients' 60 s publish deadline, push requests the subscription's ack deadline). So, unlike
the simulator, publishes made in the window are accepted after it (the publish call
waits), not during it: the backlog jumps at the end of the window instead of growing in it,
and publish times are the thaw's. Leases that expired meanwhile are redelivered
(duplicates, as Pub/Sub allows; never losses). Real Pub/Sub has no such outage at all:
this rehearses a broker outage, not anything Pub/Sub is known to do. Only the Pub/Sub
emulator (target `pubsub` or none), and only one started by surgesim (it needs its process
group); anything else is recorded as unsupported or failed. A reused emulator is frozen
for everyone using it. The record's details: method, pgid, the frozen processes,
`frozen_wall_s`, and from SETTLE_S after the freeze to the thaw, per subscription:
`delivered_inside`, the deliveries the harness saw the emulator make (0 everywhere: a
frozen emulator hands out nothing), and `settled_inside`, the acks and dead letters
reported (a push delivered before the freeze whose endpoint answers inside is reported
acked then; its ack reaches the emulator after the thaw).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import httpx

from surgesim.schema import Fault

from . import job_faults
from .fault_kinds import Unsupported, fault_kind

log = logging.getLogger(__name__)

DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"
DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
#: Wall seconds between re-drives of a replayed fault's dead-letter holding subscriptions
#: after the fix (see FaultInjector._watch).
REDRIVE_EVERY_S = 1.0


def _rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Active:
    fault: Fault
    started_wall: float
    restore: dict = field(default_factory=dict)
    in_effect_s: float | None = None
    """Scenario time the fault actually took effect (a roll-out takes wall seconds to start
    its process, i.e. time_scale times as many scenario seconds)."""
    next_update: float = 0.0
    """A ramp's next update (monotonic wall seconds), its updates so far, and whether it is
    at the fault's full value."""
    updates: int = 0
    ramp_done: bool = False


def describe(f: Fault) -> str:
    return f"{f.kind}" + (f" of {f.target or f.topic}" if (f.target or f.topic) else "") + f" at {f.at:g}s"


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
        self.watch: list[tuple[str, str, dict]] = []
        """(hold, topic, the fault's details) re-driven after a replay (a message whose 5th
        attempt failed just before the fix reaches the dead-letter topic only on the
        emulator's next pull, after the replay has drained the hold)."""
        self._next_redrive = 0.0
        self.tasks = job_faults.TaskFaults()
        """Job faults (job_task_crash / _hang): the Launcher's executions ask it per attempt."""

    def unsupported(self) -> list[str]:
        """Every declared fault that cannot be injected in this run, with why; checked before
        the traffic starts: a fault that was not injected cannot have been survived."""
        out = []
        for f in self.pending:
            why = fault_kind(f).refused_here(f, self.runner)
            if why:
                out.append(f"{describe(f)}: {why}")
        return out

    # ---- the clock ---------------------------------------------------------------------------
    def tick(self, scenario_t: float, wall_epoch: float | None = None) -> None:
        """Start every fault due by scenario time t and end every one whose end passed."""
        wall_epoch = wall_epoch or time.time()
        ongoing = {id(a) for a in self.active}  # one just started is where start() put it
        while self.pending and self.pending[0].at <= scenario_t:
            self._start(self.pending.pop(0), scenario_t, wall_epoch)
        for a in list(self.active):
            if a.fault.end is not None and a.fault.end <= scenario_t:
                self._end(a, scenario_t)
            elif id(a) in ongoing:
                try:
                    fault_kind(a.fault).during(self, a, scenario_t)
                except Exception as exc:  # noqa: BLE001 -- a missed ramp step: the next tick tries again
                    log.warning("%s on %s: %s", a.fault.kind, a.fault.target, exc)
        if self.watch and time.monotonic() >= self._next_redrive:
            self._next_redrive = time.monotonic() + REDRIVE_EVERY_S
            self.redrive_late()

    def holding(self) -> bool:
        """A fault still in effect that the drain should wait out (armed job faults do not
        hold it: they only act when a task starts)."""
        return any(a.fault.kind not in job_faults.KINDS for a in self.active)

    def redrive_late(self) -> int:
        """Re-publish whatever reached a replayed fault's holding subscription since."""
        n = 0
        for hold, topic, details in self.watch:
            try:
                moved, counts = self._redrive(hold, topic)
            except Exception as exc:  # noqa: BLE001 -- the final check reports what stays behind
                log.warning("late re-drive of %s: %s", hold, exc)
                continue
            if moved:
                details["republished_late"] = details.get("republished_late", 0) + moved
                _merge(details.setdefault("dead_letter_delivery_counts", {}), counts)
                n += moved
        return n

    def finish(self, scenario_t: float) -> None:
        """End whatever is still active (faults without a duration last until the run ends)."""
        for a in list(self.active):
            self._end(a, scenario_t)
        self.redrive_late()
        self.http.close()

    # ---- start / end ---------------------------------------------------------------------------
    def _record(self, f: Fault, start_s: float, end_s: float | None, **details) -> dict:
        d = f.details(fault_kind(f).instant)
        d.update(details)
        ev = {"kind": f.kind, "target": f.target or f.topic or "", "start_s": start_s, "end_s": end_s, "details": d}
        self.events.append(ev)
        return ev

    # ---- what the harness has seen so far (emulator_restart's window) ------------------------
    def abort(self) -> None:
        """Undo what would stay broken (a frozen emulator thawed at once) on Ctrl-C, SIGTERM or
        an error. The fault is not recorded as ended; the run is not going to be judged."""
        for a in self.active:
            fault_kind(a.fault).abort(self, a)

    def _settlements(self) -> dict[str, int]:
        """Settlement reports per subscription so far: acks (including those the tap has not
        matched yet, the ledger's `early`) and dead letters."""
        bridges = getattr(self.runner, "bridges", None)
        if bridges is None or bridges.metrics is None:
            return {}
        return {name: l.acked + len(l.early) + l.dead_lettered for name, l in bridges.metrics.ledgers.items()}

    def _deliveries(self) -> dict[str, int]:
        """Messages the harness has seen the emulator hand out so far: push bridges' pulls
        (each push started), pull workers' deliveries through the counting gRPC proxy, and
        the filter relays' tap pulls (`<sub>:relay`). The BigQuery bridge is left out: it
        writes rows pulled earlier in later batches, so its rows say nothing about when the
        emulator delivered them (its acks are in the settlements)."""
        b = getattr(self.runner, "bridges", None)
        if b is None:
            return {}
        out = {name: p.counters.delivered for name, p in (getattr(b, "push", None) or {}).items()}
        out.update({f"{name}:relay": r.counters.seen for name, r in (getattr(b, "relays", None) or {}).items()})
        proxy = getattr(b, "proxy", None)
        if proxy is not None:
            for name, t in proxy.totals()["subscriptions"].items():
                out[name] = out.get(name, 0) + t["delivered"]
        return out

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Settlements and deliveries per subscription so far (emulator_restart's window)."""
        return {"settled": self._settlements(), "delivered": self._deliveries()}

    def _start(self, f: Fault, t: float, wall_epoch: float) -> None:
        a = Active(f, wall_epoch)
        kind = fault_kind(f)
        try:
            done = kind.start(self, a, t)
        except Unsupported as exc:
            # unsupported() rejects these before the run; reaching here is a harness bug
            self._record(f, t, t, unsupported=True, reason=str(exc))
            self.say(f"fault at {t:.0f}s: {f.kind} is not supported live ({exc})")
            return
        except Exception as exc:  # noqa: BLE001 -- a fault that cannot be applied is recorded, the run goes on
            self._record(f, t, t, failed=f"{type(exc).__name__}: {exc}")
            self.say(f"fault at {t:.0f}s: {f.kind} on {f.target} FAILED: {exc}")
            return
        if kind.instant:  # done at once: recorded, never active
            self._record(f, t, t)
            self.say(f"fault at {t:.0f}s: {done}")
            return
        a.in_effect_s = round(t + (time.time() - wall_epoch) * self.time_scale, 3)
        self.active.append(a)
        self.say(f"fault at {t:.0f}s: {f.kind} on {f.target or f.topic} started (in effect at {a.in_effect_s:.0f}s)")

    def _end(self, a: Active, t: float) -> None:
        self.active.remove(a)
        f, kind = a.fault, fault_kind(a.fault)
        details = {"in_effect_s": a.in_effect_s}
        began = time.time()
        try:
            kind.end(self, a, details)
        except Exception as exc:  # noqa: BLE001
            details["end_failed"] = f"{type(exc).__name__}: {exc}"
            self.say(f"fault end at {t:.0f}s: {f.kind} on {f.target} FAILED: {exc}")
        details["ended_in_effect_s"] = round(t + (time.time() - began) * self.time_scale, 3)
        ev = self._record(f, f.at, t, **details)
        kind.ended(self, f, ev)
        self.say(f"fault at {t:.0f}s: {f.kind} on {f.target or f.topic} ended")

    def _replay(self, service: str, since_epoch: float) -> dict:
        """Re-deliver what the bad revision failed, once: where the subscription dead-letters,
        re-publish what its holding subscriptions hold (messages still in their retries
        reach the fixed revision by themselves; late dead letters are re-driven by _watch);
        where it does not, seek it back to the deploy. Never both: a seek re-delivers the
        dead-lettered messages too, so with the re-drive each would be handled twice."""
        system = self.runner.system
        subs = [s for s in system.subscriptions if s.consumer == service]
        sought, republished, counts, holds = [], 0, {}, []
        for s in subs:
            if s.dead_letter is None:
                self.http.post(f"{self.base}/subscriptions/{s.name}:seek",
                               json={"time": _rfc3339(since_epoch)}).raise_for_status()
                sought.append(s.name)
                continue
            for hold in [h for h in system.subscriptions if h.topic == s.dead_letter.topic and h.consumer is None]:
                moved, c = self._redrive(hold.name, s.topic)
                republished += moved
                _merge(counts, c)
                holds.append((hold.name, s.topic))
        # dead_letter_delivery_counts: {attempts: messages}, from the dead letters' own
        # CloudPubSubDeadLetterSourceDeliveryCount attribute (set by the emulator)
        return {"sought": sought, "republished": republished, "dead_letter_delivery_counts": counts,
                "holds": holds}

    def _redrive(self, hold: str, topic: str) -> tuple[int, dict[str, int]]:
        n = 0
        counts: dict[str, int] = {}
        metrics = self.runner.bridges.metrics
        loop = self.runner.bridges._loop  # noqa: SLF001 -- the sampler's ledgers live in that loop
        while True:
            r = self.http.post(f"{self.base}/subscriptions/{hold}:pull", json={"maxMessages": 1000, "returnImmediately": True})
            r.raise_for_status()
            got = r.json().get("receivedMessages", [])
            if not got:
                return n, counts
            for m in got:
                c = str((m["message"].get("attributes") or {}).get(DELIVERY_COUNT, "unknown"))
                counts[c] = counts.get(c, 0) + 1
            msgs = [{"data": m["message"].get("data", ""),
                     "attributes": {k: v for k, v in (m["message"].get("attributes") or {}).items()
                                    if not k.startswith(DEAD_LETTER_PREFIX)}} for m in got]
            self.http.post(f"{self.base}/topics/{topic}:publish", json={"messages": msgs}).raise_for_status()
            self.http.post(f"{self.base}/subscriptions/{hold}:acknowledge",
                           json={"ackIds": [m["ackId"] for m in got]}).raise_for_status()
            mids = [m["message"]["messageId"] for m in got]
            loop.call_soon_threadsafe(lambda ids=mids: [metrics.settled(hold, i) for i in ids])
            n += len(got)


def _merge(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v
