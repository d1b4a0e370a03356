"""Fault kinds in the simulator: one small class per kind, registered under the kind's name.

The engine knows no kind by name: it asks each scenario fault's class, at fixed points,
what the fault does (docs/architecture.md, "Registries"):

- `prepare(eng, f)`: before the stores and the broker are built (what they read while
  they are built: the broker's outage windows, the poison messages' attribute sets);
- `attach(eng, f)`: once the services and subscriptions exist (a service's down or bad
  windows, the history a replay will seek through);
- `actions(eng, f)`: what happens at a moment on the timeline, as (time, callable);
- `on_call(f, tt, inwin, lat, err_rate, outage, rng)`: an external API's calls (at times tt) inside the
  fault's window (only kinds with `on_api = True` are handed to the APIs they target);
- `owned(part, f)`: whether a partition of a split run (sim/split.py) applies the fault.

The live half of each kind is surgesim/live/fault_kinds.py; a unit test checks that both
registries hold every kind the schema accepts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np

from surgesim.pubsub_filter import parse_filter
from surgesim.sim.core import Batch, sample

if TYPE_CHECKING:  # pragma: no cover
    from surgesim.sim.engine import Engine


class SimFault:
    kind: ClassVar[str] = ""
    on_api: ClassVar[bool] = False
    """The fault changes the calls to the external API it targets."""
    instant: ClassVar[bool] = False
    """The fault happens at one moment (faults.json: end = start, its attributes shown)."""

    def prepare(self, eng: "Engine", f) -> None:
        pass

    def attach(self, eng: "Engine", f) -> None:
        pass

    def actions(self, eng: "Engine", f) -> list[tuple[float, Callable[[], None]]]:
        return []

    def on_call(self, f, tt: np.ndarray, inwin: np.ndarray, lat: np.ndarray, err_rate: np.ndarray,
                outage: np.ndarray, rng: np.random.Generator) -> None:
        pass

    def owned(self, part, f) -> bool:
        return True


SIM_FAULTS: dict[str, SimFault] = {}


def register(cls: type[SimFault]) -> type[SimFault]:
    SIM_FAULTS[cls.kind] = cls()
    return cls


def fault_kind(f) -> SimFault:
    return SIM_FAULTS[f.kind]


def _window(f) -> tuple[float, float]:
    return f.at, (f.end if f.end is not None else math.inf)


@register
class DependencyLatency(SimFault):
    """The API answers with the fault's latency inside the window; with `ramp`, each call's
    latency moves from a draw of the API's own to a draw of the fault's, linearly over the ramp."""
    kind = "dependency_latency"
    on_api = True

    def on_call(self, f, tt, inwin, lat, err_rate, outage, rng) -> None:
        slow = sample(f.latency, int(inwin.sum()), rng)
        if f.ramp > 0:
            w = np.clip((tt[inwin] - f.at) / f.ramp, 0.0, 1.0)
            slow = (1.0 - w) * lat[inwin] + w * slow
        lat[inwin] = slow


@register
class DependencyErrors(SimFault):
    """The API fails with the fault's error rate inside the window."""
    kind = "dependency_errors"
    on_api = True

    def on_call(self, f, tt, inwin, lat, err_rate, outage, rng) -> None:
        err_rate[inwin] = f.error_rate


@register
class DependencyOutage(SimFault):
    """Every call inside the window fails (after at most the API's outage time)."""
    kind = "dependency_outage"
    on_api = True

    def on_call(self, f, tt, inwin, lat, err_rate, outage, rng) -> None:
        outage |= inwin


@register
class ConsumerDown(SimFault):
    """The service takes nothing inside the window (its requests get 503)."""
    kind = "consumer_down"

    def attach(self, eng, f) -> None:
        if f.target in eng.nodes:
            eng.nodes[f.target].down.append(_window(f))


@register
class PoisonMessage(SimFault):
    """`count` messages with `attributes` published to `topic` at one moment."""
    kind = "poison_message"
    instant = True

    def prepare(self, eng, f) -> None:
        eng.poison_attr_ids.add(eng.attrs.intern(f.attributes))

    def actions(self, eng, f):
        return [(f.at, lambda: eng.broker.publish(f.topic, Batch.new(np.full(f.count, f.at), eng.attrs.intern(f.attributes))))]

    def owned(self, part, f) -> bool:
        return f.topic in part.topics


@register
class BadDeploy(SimFault):
    """The service raises on messages matching the filter inside the window; with replay,
    its subscriptions are sought back to the deploy at the fix (Engine._replay)."""
    kind = "bad_deploy"

    def attach(self, eng, f) -> None:
        if f.target in eng.nodes:
            eng.nodes[f.target].bad.append((*_window(f), parse_filter(f.matching)))
        if f.replay:
            end = f.end if f.end is not None else eng.duration
            for st in eng.broker.subs.values():
                if st.node is eng.nodes.get(f.target):
                    st.history = st.history or []
                    st.history_windows.append((f.at, end))

    def actions(self, eng, f):
        end = f.end if f.end is not None else eng.duration
        if f.replay and end < eng.duration:
            return [(end, lambda: eng._replay(f, end))]  # noqa: SLF001 -- the engine's seek and re-drive
        return []

    def owned(self, part, f) -> bool:
        return f.target in part.nodes


@register
class EmulatorRestart(SimFault):
    """No Pub/Sub deliveries inside the window; messages are kept and delivered after."""
    kind = "emulator_restart"

    def prepare(self, eng, f) -> None:
        eng.broker_down.append(_window(f))


class _JobTask(SimFault):
    """Read by the job's JobRunner (sim/engine.py): an attempt it hits crashes `after`
    seconds in (job_task_crash) or lasts task_timeout (job_task_hang)."""


@register
class JobTaskCrash(_JobTask):
    kind = "job_task_crash"


@register
class JobTaskHang(_JobTask):
    kind = "job_task_hang"


# ---- bigquery_job_failure: read by the handler's bigquery job and poll steps ---------------------

FAILED_JOB_ATTR = "surgesim.bigquery_job"
"""Marks the status check that finds its job failed (attribute value "failed")."""


@register
class BigqueryJobFailure(SimFault):
    """A `bigquery: {op: job}` step whose job is inserted inside the window (of service
    `target`, or of any) fails with probability `error_rate` (default 1): the job runs its
    drawn duration as usual and ends DONE with an error. The poll step's last check, the
    one that finds it done, fails at every consumer (as a status checker answers 500 for
    a failed job), so its subscription retries it and dead-letters it."""
    kind = "bigquery_job_failure"

    def prepare(self, eng, f) -> None:
        eng.job_failures.append(f)


def failed_jobs(h, n: int, idx: np.ndarray, inserted: np.ndarray) -> np.ndarray | None:
    """Which of the batch's jobs (messages idx, jobs inserted at `inserted`) end failed;
    None when no bigquery_job_failure applies (no random draw then: other runs unchanged)."""
    faults = [f for f in h.eng.job_failures if f.target in (None, h.owner)]
    if not faults:
        return None
    failed = np.zeros(n, dtype=bool)
    for f in faults:
        at, end = _window(f)
        rate = 1.0 if f.error_rate is None else f.error_rate
        hit = (inserted >= at) & (inserted < end) & (h.rng.random(idx.size) < rate)
        failed[idx[hit]] = True
    return failed


def failed_check_attrs(eng: "Engine", ids: np.ndarray) -> np.ndarray:
    """The attribute sets of failed-job checks: the check's own attributes plus the marker,
    registered as failing at every consumer (Engine.poison_attr_ids, as poison messages)."""
    out = ids.copy()
    for a in np.unique(ids).tolist():
        marked = eng.attrs.intern({**eng.attrs.get(a), FAILED_JOB_ATTR: "failed"})
        eng.poison_attr_ids.add(marked)
        out[ids == a] = marked
    return out


# ---- bigquery_job_slow: read by the handler's bigquery job step ---------------------------------

@register
class BigqueryJobSlow(SimFault):
    """A `bigquery: {op: job}` step whose job is inserted inside the window (of service
    `target`, or of any) runs `latency` longer than its drawn duration before it is DONE, so
    its poll step checks it that many more times and finds it done that much later."""
    kind = "bigquery_job_slow"

    def prepare(self, eng, f) -> None:
        # a random stream of its own: the handlers' draws, and so every job outside the window,
        # stay what they are in a run without the fault
        eng.job_slowdowns.append((f, eng.rng(f"bigquery_job_slow:{len(eng.job_slowdowns)}")))


def job_delays(h, inserted: np.ndarray) -> np.ndarray | None:
    """Run time added to the jobs inserted at `inserted` (scenario s); None when no
    bigquery_job_slow applies to the handler's service."""
    faults = [(f, rng) for f, rng in h.eng.job_slowdowns if f.target in (None, h.owner)]
    if not faults:
        return None
    extra = np.zeros(inserted.size)
    for f, rng in faults:
        at, end = _window(f)
        hit = (inserted >= at) & (inserted < end)
        if hit.any():
            extra[hit] += sample(f.latency, int(hit.sum()), rng)
    return extra
