"""Fault kinds in the live harness: one small class per kind, registered under the kind's name
(the simulator's half of each kind is sim/faults.py; a unit test checks that both registries
hold every kind the schema accepts). What each kind does live is the table in
surgesim/live/faults.py's docstring; the FaultInjector there keeps the clock, the records
and the re-drives, and asks the fault's class:

- `refused(f, system)`: why the fault cannot be injected whatever runs (before anything starts);
- `refused_here(f, runner)`: why not in this running stack (before the traffic starts);
- `start(inj, a, t)`: apply it; an `instant` kind returns the line to print, and is done;
- `during(inj, a, t)`: each tick while it is in effect (a ramp moving on);
- `end(inj, a, details)`: undo it, adding what it measured to the record's details;
- `ended(inj, f, record)`: after the record is written (a replay's late re-drives);
- `abort(inj, a)`: leave nothing broken on Ctrl-C or an error (the run is not judged).
"""

from __future__ import annotations

import base64
import threading
import time
from typing import TYPE_CHECKING, ClassVar

from .pause import GroupPause

if TYPE_CHECKING:  # pragma: no cover
    from .faults import Active, FaultInjector

CLIENT_TIMEOUT_S = 30.0
"""The shortest timeout of the live run's Pub/Sub clients (the generators' and bridges' REST
calls); an outage longer than this makes calls fail instead of wait."""
RAMP_EVERY_S = 0.5
"""dependency_latency with a ramp: wall seconds between the fake's behaviour updates."""
SETTLE_S = 0.5
"""emulator_restart: seconds after the freeze before settlements count as inside the window."""


class Unsupported(Exception):
    """A fault this harness cannot apply live (FaultInjector.unsupported() finds these
    before the traffic starts, and the run does not start)."""


class LiveFault:
    kind: ClassVar[str] = ""
    instant: ClassVar[bool] = False
    """Happens at one moment: recorded with end = start and its attributes, never active."""

    def refused(self, f, system) -> str | None:
        return None

    def refused_here(self, f, runner) -> str | None:
        return None

    def start(self, inj: "FaultInjector", a: "Active", t: float) -> str | None:
        raise Unsupported(f"{a.fault.kind} is not applied live")

    def during(self, inj: "FaultInjector", a: "Active", t: float) -> None:
        pass

    def end(self, inj: "FaultInjector", a: "Active", details: dict) -> None:
        pass

    def ended(self, inj: "FaultInjector", f, record: dict) -> None:
        pass

    def abort(self, inj: "FaultInjector", a: "Active") -> None:
        pass


LIVE_FAULTS: dict[str, LiveFault] = {}


def register(cls: type[LiveFault]) -> type[LiveFault]:
    LIVE_FAULTS[cls.kind] = cls()
    return cls


def fault_kind(f) -> LiveFault:
    return LIVE_FAULTS[f.kind]


# ---- dependency_*: the fake's admin API ----------------------------------------------------------

class _Dependency(LiveFault):
    """The fake external API's behaviour changed through PUT /admin/behaviour, and restored."""

    def patch(self, f) -> dict:
        raise NotImplementedError

    def refused(self, f, system):
        apis = {a.name: a for a in system.external_apis}
        if not (f.target in apis and apis[f.target].fake and not apis[f.target].url):
            return f"{f.target!r} is not an external API with a fake (and no url:), so its behaviour cannot be changed"
        return None

    def refused_here(self, f, runner):
        if f.target not in runner.fake_procs:
            return (f"{f.target!r} is not a fake run here (a real `url:` or no `fake:`), "
                    "so its behaviour cannot be changed")
        return None

    def start(self, inj, a, t):
        f, r = a.fault, inj.runner
        before = r.fake_admin(f.target, "GET", "/admin/behaviour").json()
        patch = self.patch(f)
        a.restore = {k: before.get(k) for k in patch}
        self.restored(a)
        r.fake_admin(f.target, "PUT", "/admin/behaviour", json=self.applied(a, t))
        return None

    def applied(self, a, t: float) -> dict:
        """The behaviour to put at scenario time t (a ramp's point on its way)."""
        return self.patch(a.fault)

    def restored(self, a) -> None:
        """Fix up what the fake reported before (a missing value it must get back)."""

    def end(self, inj, a, details):
        inj.runner.fake_admin(a.fault.target, "PUT", "/admin/behaviour",
                              json={k: v for k, v in a.restore.items() if v is not None} or {"outage": False})


@register
class DependencyLatency(_Dependency):
    kind = "dependency_latency"

    def patch(self, f):
        return {"latency_p50_ms": f.latency.p50 * 1000.0, "latency_p99_ms": (f.latency.p99 or f.latency.p50) * 1000.0}

    def restored(self, a):
        if a.restore.get("latency_p99_ms") is None:
            a.restore["latency_p99_ms"] = a.restore.get("latency_p50_ms")

    def applied(self, a, t):
        """With a ramp, the fake's p50 and p99 each move linearly from what they were to the
        fault's (the simulator mixes draws of the two the same way: sim/faults.py)."""
        patch, f = self.patch(a.fault), a.fault
        if f.ramp <= 0:
            return patch
        w = min(max((t - f.at) / f.ramp, 0.0), 1.0)
        return {k: (1.0 - w) * (a.restore.get(k) or 0.0) + w * v for k, v in patch.items()}

    def during(self, inj, a, t):
        f = a.fault
        if f.ramp <= 0 or a.ramp_done or time.monotonic() < a.next_update:
            return
        a.next_update = time.monotonic() + RAMP_EVERY_S
        a.ramp_done = t >= f.at + f.ramp
        inj.runner.fake_admin(f.target, "PUT", "/admin/behaviour", json=self.applied(a, t))
        a.updates += 1

    def end(self, inj, a, details):
        if a.fault.ramp > 0:
            details["ramp_updates"] = a.updates
        super().end(inj, a, details)


@register
class DependencyErrors(_Dependency):
    kind = "dependency_errors"

    def patch(self, f):
        return {"error_rate": f.error_rate}


@register
class DependencyOutage(_Dependency):
    kind = "dependency_outage"

    def patch(self, f):
        return {"outage": True}


# ---- a service's process -------------------------------------------------------------------------

class _ServiceFault(LiveFault):
    def refused(self, f, system):
        services = {s.name: s for s in system.services}
        if not (f.target in services and (services[f.target].app or services[f.target].command)):
            return f"{f.target!r} is not a service with app: or command: run live"
        return None

    def refused_here(self, f, runner):
        if f.target not in runner.procs:
            return f"{f.target!r} is not a service process of this run ({runner.skipped.get(f.target, 'no such service')})"
        return None


@register
class ConsumerDown(_ServiceFault):
    """Pushes to it held (runner.hold_push), then the process stopped; started again at the end."""
    kind = "consumer_down"

    def start(self, inj, a, t):
        r, target = inj.runner, a.fault.target
        r.hold_push(target, True)
        r.procs[target].stopped_by_fault = True
        r.stop_service(target)
        return None

    def end(self, inj, a, details):
        r, target = inj.runner, a.fault.target
        r.start_service(target)
        r.procs[target].stopped_by_fault = False
        r.hold_push(target, False)


@register
class BadDeploy(_ServiceFault):
    """A new revision with BAD_PATTERN=<matching>; at the end the fixed one, and with replay
    each affected message re-delivered once (FaultInjector._replay)."""
    kind = "bad_deploy"

    def start(self, inj, a, t):
        inj.runner.roll_out(a.fault.target, extra_env={"BAD_PATTERN": a.fault.matching})
        return None

    def end(self, inj, a, details):
        f, r = a.fault, inj.runner

        def read_bad(old) -> None:
            # the bad revision's own counters, once the fixed one has all the traffic
            try:
                m = r.service_get(old, "/metrics").json()
                details["bad_version"] = {k: m.get(k, 0) for k in ("received", "bad_deploy")}
            except Exception as exc:  # noqa: BLE001
                details["bad_version"] = {"unreadable": f"{type(exc).__name__}: {exc}"}

        r.roll_out(f.target, drop_env=("BAD_PATTERN",), before_stop=read_bad)
        if f.replay:
            details.update(inj._replay(f.target, a.started_wall))  # noqa: SLF001 -- the injector's re-drive

    def ended(self, inj, f, record):
        if f.replay:
            inj.watch += [(hold, topic, record["details"]) for hold, topic in record["details"].get("holds", [])]


# ---- poison_message: published at once ----------------------------------------------------------

@register
class PoisonMessage(LiveFault):
    kind = "poison_message"
    instant = True

    def start(self, inj, a, t):
        f = a.fault
        data = base64.b64encode(b"\xff not json").decode()
        msgs = [{"data": data, "attributes": dict(f.attributes)} for _ in range(f.count)]
        for i in range(0, len(msgs), 1000):
            inj.http.post(f"{inj.base}/topics/{f.topic}:publish", json={"messages": msgs[i:i + 1000]}).raise_for_status()
        return f"poison_message x{f.count} -> {f.topic}"


# ---- emulator_restart: the Pub/Sub emulator frozen for the window --------------------------------

def _pubsub_refusal(f) -> str | None:
    if f.target not in (None, "", "pubsub"):
        return (f"only the Pub/Sub emulator can be taken out live, not {f.target!r} "
                "(the simulator models Pub/Sub deliveries only)")
    return None


@register
class EmulatorRestart(LiveFault):
    kind = "emulator_restart"

    def refused(self, f, system):
        return _pubsub_refusal(f)

    def refused_here(self, f, runner):
        why = _pubsub_refusal(f)
        if why is None:
            st = runner.stack.emulators.get("pubsub")
            if st is None or not st.owned or not st.pgid:
                why = "the Pub/Sub emulator was not started by surgesim (no process group to freeze)"
        return why

    def start(self, inj, a, t):
        f = a.fault
        if f.target not in (None, "", "pubsub"):
            raise Unsupported(f"emulator_restart of {f.target!r}: only the Pub/Sub emulator is frozen live "
                              "(the simulator models Pub/Sub deliveries only)")
        st = inj.runner.stack.emulators.get("pubsub")
        if st is None or not st.owned or not st.pgid:
            raise RuntimeError("the Pub/Sub emulator was not started by surgesim (no process group to freeze)")
        pause = GroupPause(st.pgid)
        wall = None if f.end is None else max(0.0, (f.end - t) / inj.time_scale)
        a.restore.update(pause=pause, members=pause.stop(), inside0=None, inside1=None, lock=threading.Lock(),
                         wake=threading.Event())
        # The thaw is timed by a thread of its own, not by tick(): the main loop can block on
        # the frozen emulator itself (a poison publish, a replay's re-drive), and must not
        # hold the window open with it.
        a.restore["clock"] = threading.Thread(target=self._clock, args=(inj, a, wall), daemon=True,
                                              name="surgesim-emulator-freeze")
        a.restore["clock"].start()
        inj.say(f"  Pub/Sub emulator frozen (SIGSTOP to process group {st.pgid}; `kill -CONT -{st.pgid}` "
                "resumes it if this harness dies)")
        if wall is None or wall > CLIENT_TIMEOUT_S:
            inj.say(f"  warning: the outage lasts {'until the run ends' if wall is None else f'{wall:.0f} wall s'}, "
                    f"longer than the clients' {CLIENT_TIMEOUT_S:g} s timeouts: publishes made in it may fail")
        return None

    def _clock(self, inj, a, wall: float | None) -> None:
        pause: GroupPause = a.restore["pause"]
        wake: threading.Event = a.restore["wake"]
        # the settlements snapshot that opens the measured window: SETTLE_S after the freeze,
        # so answers already on their way (socket buffers) are not counted as in the window
        if wake.wait(SETTLE_S):
            return
        a.restore["inside0"] = inj.snapshot()
        if wall is None or wake.wait(max(0.0, pause.stopped_at + wall - time.monotonic())):
            return  # no duration (lasts until the run ends) or ended/aborted by the main thread
        self._thaw(inj, a)

    def _thaw(self, inj, a) -> None:
        with a.restore["lock"]:
            if a.restore["pause"].frozen:
                a.restore["inside1"] = inj.snapshot()
                a.restore["pause"].resume()

    def end(self, inj, a, details):
        pause: GroupPause = a.restore["pause"]
        a.restore["wake"].set()
        self._thaw(inj, a)  # if the clock thread has not already
        a.restore["clock"].join(5)
        before, after = a.restore["inside0"], a.restore["inside1"]

        def inside(key: str) -> dict[str, int] | None:
            if before is None or after is None:
                return None  # a window shorter than SETTLE_S, or one without an end
            return {k: v - before[key].get(k, 0) for k, v in after[key].items()}

        details.update({"method": "SIGSTOP/SIGCONT of the Pub/Sub emulator's process group (state kept)",
                        "endpoint": inj.runner.stack.endpoint("pubsub"), "pgid": pause.pgid,
                        "processes": a.restore["members"],
                        "frozen_wall_s": round((pause.resumed_at or time.monotonic()) - pause.stopped_at, 3),
                        "delivered_inside": inside("delivered"), "settled_inside": inside("settled"),
                        "inside_from_s": SETTLE_S})

    def abort(self, inj, a):
        pause = a.restore.get("pause")
        if pause is None:
            return
        a.restore["wake"].set()
        if pause.resume() is not None:
            inj.say(f"fault {a.fault.kind}: the Pub/Sub emulator (pgid {pause.pgid}) resumed after an abort")


# ---- job_task_crash / job_task_hang: armed, applied by the job's executions --------------------

class _JobTask(LiveFault):
    """Armed while active: the first `count` task attempts of job `target` that start are
    killed / stopped (surgesim/live/job_faults.py; the Launcher's executions ask per attempt)."""

    def refused(self, f, system):
        from . import job_faults

        return job_faults.unsupported(f, system.jobs)

    def refused_here(self, f, runner):
        return self.refused(f, runner.system)

    def start(self, inj, a, t):
        a.restore["details"] = {}
        inj.tasks.start(a.fault, a.restore["details"])
        return None

    def end(self, inj, a, details):
        hit = inj.tasks.end(a.fault)
        details.update(a.restore["details"])
        if not hit:  # armed but never applied: the run did not rehearse what it declares
            details["failed"] = f"no task attempt of job {a.fault.target} started while the fault was active"

    def abort(self, inj, a):
        inj.tasks.end(a.fault)


@register
class JobTaskCrash(_JobTask):
    kind = "job_task_crash"


@register
class JobTaskHang(_JobTask):
    kind = "job_task_hang"


# ---- bigquery_job_failure: the BigQuery job clock's failure window ------------------------------

class _BigqueryJob(LiveFault):
    """A window of the job clock (emulators/bq_jobs.py, one JobTable shared by every
    service's proxy) over the jobs inserted by `target` (or any service)."""
    does: ClassVar[str] = ""
    """What the window does to a job, for the refusals: "fail", "slow down"."""

    def refused(self, f, system):
        from surgesim.schema.loading import bigquery_job_services

        jobs = bigquery_job_services(system)
        if not jobs:
            return (f"system {system.name!r} has no service with a `bigquery: {{op: job}}` step: "
                    f"no BigQuery job to {self.does}")
        if f.target is not None and f.target not in jobs:
            return f"{f.target!r} is not a service with a `bigquery: {{op: job}}` step ({', '.join(jobs)})"
        return None

    def refused_here(self, f, runner):
        if runner.job_table is None:
            return ("this run has no BigQuery job clock (emulators/bq_jobs.py: it needs a BigQuery emulator "
                    f"and a `bigquery: {{op: job, duration: ...}}` step), so its jobs cannot be made to {self.does}")
        if f.target is not None and f.target not in runner.procs:
            return f"{f.target!r} is not a service process of this run ({runner.skipped.get(f.target, 'no such service')})"
        return None


@register
class BigqueryJobFailure(_BigqueryJob):
    """While active, the job clock makes jobs inserted by `target` (or any service) end DONE
    with an errorResult with probability error_rate (default 1)."""
    kind = "bigquery_job_failure"
    does = "fail"

    def start(self, inj, a, t):
        from surgesim.emulators.bq_jobs import Failing

        table = inj.runner.job_table
        a.restore["failed0"] = len(table.failed)
        a.restore["inserted0"] = table.inserted
        table.failing = Failing(rate=1.0 if a.fault.error_rate is None else a.fault.error_rate, service=a.fault.target)
        return None

    def end(self, inj, a, details):
        table = inj.runner.job_table
        table.failing = None
        details.update({"method": "the BigQuery job clock's failure window (emulators/bq_jobs.py)",
                        "jobs_inserted": table.inserted - a.restore["inserted0"],
                        "jobs_failed": len(table.failed) - a.restore["failed0"]})
        if details["jobs_failed"] == 0:  # armed but never applied: the run did not rehearse what it declares
            details["failed"] = "no BigQuery job was made to fail while the fault was active"

    def abort(self, inj, a):
        if inj.runner.job_table is not None:
            inj.runner.job_table.failing = None


@register
class BigqueryJobSlow(_BigqueryJob):
    """While active, the job clock runs each job inserted by `target` (or any service) a
    draw of `latency` longer. The latency is on the scenario clock (divided by time_scale),
    unlike dependency_latency's: it lengthens the job's run time, which the clock already
    keeps on the scenario clock, against a poll interval on that clock too; a request's
    latency is real time, a job's run time is not."""
    kind = "bigquery_job_slow"
    does = "slow down"

    def start(self, inj, a, t):
        from surgesim.emulators.bq_jobs import Slow

        table, lat = inj.runner.job_table, a.fault.latency
        a.restore["inserted0"], a.restore["slowed0"], a.restore["added0"] = table.inserted, table.slowed, table.added_s
        table.slow = Slow(p50=float(lat.p50), p99=None if lat.p99 is None else float(lat.p99), service=a.fault.target)
        return None

    def end(self, inj, a, details):
        table = inj.runner.job_table
        table.slow = None
        slowed = table.slowed - a.restore["slowed0"]
        added = (table.added_s - a.restore["added0"]) * inj.time_scale
        details.update({"method": "the BigQuery job clock's slow window (emulators/bq_jobs.py)",
                        "jobs_inserted": table.inserted - a.restore["inserted0"], "jobs_slowed": slowed,
                        # scenario seconds, as the fault's latency is given
                        "added_s_mean": round(added / slowed, 3) if slowed else None})
        if slowed == 0:  # armed but never applied: the run did not rehearse what it declares
            details["failed"] = "no BigQuery job was inserted, and so slowed, while the fault was active"

    def abort(self, inj, a):
        if inj.runner.job_table is not None:
            inj.runner.job_table.slow = None
