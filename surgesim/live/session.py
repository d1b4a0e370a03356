"""`surgesim live`: a scenario against the real services, in compressed real time, written
as the same run directory `surgesim sim` writes (docs/run-directory.md, docs/live.md).

Clocks: wall seconds since the traffic started x time_scale = scenario seconds. Every
timeseries row, histogram window and fault time in the run directory is in scenario
seconds, as in a simulated run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import math
import os
import subprocess
import sys
import platform
import threading
import time
from pathlib import Path

import pandas as pd

from surgesim.histogram import Histogram
from surgesim.rundir import METRICS, Run, RunWriter, histogram_rows
from surgesim.schema import load_experiment
from surgesim.workflows.records import workflow_totals

from .faults import FaultInjector
from .jobs import Launcher
from .paths import PathFolder
from .runner import SystemRunner
from .totals import route_totals, trigger_bridges, trigger_totals

log = logging.getLogger(__name__)


def _input(path: Path | None) -> dict | None:
    if path is None:
        return None
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


DRAIN_SETTLE_S = 1.0
"""The drain ends when nothing is outstanding for this long, not at the first empty sample: a
consumer that re-publishes to its own topic (a status checker's loop) acks its message after
publishing the next one, but the sampler's tap sees that publish only on its next pull (up to
~0.1 s later), so the backlog reads 0 for a moment while the loop is still going."""


class LagRecorder:
    """publish -> acked per subscription (`lag/<sub>`), from the sampler's own ledgers (each
    calls record() with the message's publish time when it settles it); and
    change -> the target's 2xx per Firestore or Storage trigger (`lag/<trigger>`), from the
    trigger bridges' counters at the end."""

    def __init__(self, metrics, t0_epoch: float, time_scale: float, window_s: float) -> None:
        self.hists: dict[tuple[float, str], Histogram] = {}
        self.t0, self.ts, self.window = t0_epoch, time_scale, window_s
        for ledger in metrics.ledgers.values():
            ledger.on_settle.append(self.record)

    def record(self, sub: str, published: float) -> None:
        w = max(0.0, math.floor((published - self.t0) / self.window) * self.window) * self.ts
        self.hists.setdefault((w, sub), Histogram()).record(max(0.0, time.time() - published))

    def add_triggers(self, bridges) -> None:
        for name, bridge in trigger_bridges(bridges).items():
            for changed, seconds in bridge.counters.lags:
                w = max(0.0, math.floor((changed - self.t0) / self.window) * self.window) * self.ts
                self.hists.setdefault((w, name), Histogram()).record(seconds)

    def rows(self) -> pd.DataFrame:
        frames = [histogram_rows(t, f"lag/{sub}", h) for (t, sub), h in sorted(self.hists.items())]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["time_s", "path", "bucket", "count"])

    def summaries(self) -> dict:
        per: dict[str, Histogram] = {}
        for (_, sub), h in self.hists.items():
            per.setdefault(sub, Histogram()).merge(h)
        return {sub: h.summary() for sub, h in sorted(per.items())}


def count_remaining(runner: SystemRunner, sub: str) -> int | None:
    """Messages still in a subscription on the emulator, counted independently of the
    sampler: a peek (pubsub_peek: pull everything without acking, then hand it back) of up
    to a million messages. None: no such subscription."""
    import httpx

    from .pubsub_peek import Peeker

    host = runner.stack.endpoint("pubsub")
    peeker = Peeker(host, runner.system.project, timeout=30)
    try:
        return peeker.peek(sub, cap=1_000_000)[0]
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise
    except httpx.TransportError as exc:
        # e.g. a reused emulator stopped by the run that started it: the run's messages are
        # gone with it, so nothing can be judged.
        raise RuntimeError(f"the Pub/Sub emulator at {host} stopped answering before the run was checked "
                           f"({exc}); was it stopped by another run?") from None
    finally:
        peeker.close()


#: Seconds the emulator cross-check keeps re-counting a subscription whose emulator count
#: differs from the ledger's backlog: a message leased to a consumer that was stopped, or
#: waiting out a retry backoff, is invisible to a pull until its lease or backoff ends.
RECOUNT_S = 20.0


def conservation(runner: SystemRunner, totals: dict, recount_s: float = RECOUNT_S, counter=None) -> dict:
    """published = acked + dead_lettered + filtered + backlog per subscription, from the
    sampler's per-message-id ledgers (backlog = messages seen on the topic and neither
    acked nor dead-lettered), cross-checked against the emulator on EVERY observed
    subscription, filtered or not: after everything stopped, the messages the emulator
    still holds for it (`emulator_visible`: the subscription itself, plus a filter relay's
    tap, which holds what the relay had not looked at yet) must equal the ledger's
    backlog. The ledger's `filtered` is the harness's own verdict on its tap, so only the
    emulator can tell a message lost among them. A disagreement is re-counted for up to
    recount_s (leases and backoffs end), then fails with both numbers (`disagreement`)."""
    counter = counter or (lambda name: count_remaining(runner, name))
    subs = {}
    ok = True
    deadline = time.monotonic() + recount_s
    for s in runner.system.subscriptions:
        t = totals.get(s.name)
        if t is None:
            continue
        observed = t["backlog"] is not None
        row = {"published": t["published"], "acked": t["acked"], "dead_lettered": t["dead_lettered"],
               "filtered": t["filtered"], "backlog": t["backlog"], "observed": observed}
        if observed:
            row["balance"] = t["published"] - t["acked"] - t["dead_lettered"] - t["filtered"] - t["backlog"]
            names = _emulator_names(runner, s.name)
            while True:
                counts = [counter(n) for n in names]
                visible = sum(c or 0 for c in counts) if any(c is not None for c in counts) else None
                # fewer than the ledger's can be leases or backoffs not over yet; more cannot
                if visible is None or visible >= t["backlog"] or time.monotonic() >= deadline:
                    break
                time.sleep(1.0)
            row["emulator_visible"] = visible
            row["backlog_in_queues"] = visible  # the emulator's own count (surgesim/checks.py reads it)
            if visible is None:
                row["disagreement"] = f"the emulator has no subscription {' / '.join(names)}"
            elif visible != t["backlog"]:
                row["disagreement"] = (f"backlog {t['backlog']:,} by the harness's ledger, {visible:,} held by "
                                       f"the emulator ({' + '.join(names)})") + _outside_consumer(runner, s.name, t, visible)
            ok &= row["balance"] == 0 and "disagreement" not in row
        else:
            row["balance"] = None
            row["why"] = "no acknowledger reports for this subscription (no consumer running)"
        subs[s.name] = row
    return {"ok": bool(ok), "subscriptions": subs}


def _outside_consumer(runner: SystemRunner, sub: str, t: dict, visible: int) -> str:
    """For a pull subscription the services consume through the run's counting proxy: a
    ledger backlog the emulator no longer holds, and fewer messages through the proxy than
    the topic carried, means another process pulled them (a consumer left running on the
    same emulator: a `surgesim up`, a stray service, the user's own dev server)."""
    proxy = getattr(getattr(runner, "bridges", None), "proxy_totals", None) or {}
    book = (proxy.get("subscriptions") or {}).get(sub)
    if not book or visible >= t["backlog"]:
        return ""
    received = book["delivered"] - book["redelivered"]
    expected = t["published"] - t["filtered"]
    if received >= expected:
        return f"; the run's services received all {expected:,} and acked {book['acked']:,} through the proxy"
    return (f"; the run's services received {received:,} of {expected:,} through the proxy: "
            f"{expected - received:,} went to a consumer outside this run pulling {sub} on the same emulator")


def _emulator_names(runner: SystemRunner, sub: str) -> list[str]:
    """Where the emulator keeps a subscription's undelivered messages: the subscription,
    and for a filter relay also its tap on the real topic (not yet relayed)."""
    relay = runner.bridges.relays.get(sub) if runner.bridges else None
    return [sub] if relay is None else [sub, relay.tap]


class LiveAborted(RuntimeError):
    """A live run ended before its end: an emulator died (the watchdog's line). The run
    directory holds a partial summary."""

    def __init__(self, message: str, run_dir: Path | None = None, leftovers: list[str] | None = None) -> None:
        super().__init__(message)
        self.run_dir, self.leftovers = run_dir, list(leftovers or [])


class LiveInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM: the run stopped everything it started (leftovers: what still runs,
    checked after the stop) and wrote a partial summary if the traffic had started."""

    def __init__(self, run_dir: Path | None, at_s: float | None, leftovers: list[str]) -> None:
        super().__init__("interrupted")
        self.run_dir, self.at_s, self.leftovers = run_dir, at_s, list(leftovers)


class UnsupportedLive(ValueError):
    """Declared faults this live run cannot inject; the run does not start its traffic."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("unsupported live: " + "; ".join(problems))
        self.problems = problems


def run_live(scenario_path: str | Path, plan_path: str | Path | None = None, out: str | Path | None = None, *,
             state_dir: str | Path | None = None, say=print, progress_every: float = 5.0,
             time_scale: float | None = None, rate_scale: float | None = None,
             while_running=None, workers: int = 1, master: tuple[str, int] | None = None,
             bind: str = "127.0.0.1") -> tuple[dict, Path]:
    """time_scale / rate_scale: override the scenario's live ones (the load generator gets
    them too), e.g. to run a scenario heavier or shorter than its file says.
    while_running: called with the started SystemRunner, a context manager held until the
    runner stops (e.g. surgesim.live.prometheus.serving: /metrics while the run goes).
    workers: Locust worker processes (scenario.live.locust only; docs/loadtests.md).
    master: (bind host, port): Locust's master only, for `workers` `surgesim worker`
    processes started elsewhere (loadtests/distributed.py); their endpoints are written to
    <out>/loadgen/target.env.
    bind: the address the Cloud Run fronts listen on (`--bind`; docs/live.md, "Listen address").

    Raises UnsupportedLive (a declared fault cannot be injected; before any traffic),
    LiveAborted (an emulator died mid-run) or LiveInterrupted (Ctrl-C / SIGTERM); the last
    two leave a partial summary.json marked as such in the run directory."""
    scenario_path = Path(scenario_path).resolve()  # the load generator runs in its own directory
    exp = load_experiment(scenario_path, plan_path)
    over = {k: float(v) for k, v in (("time_scale", time_scale), ("rate_scale", rate_scale)) if v is not None}
    if over:
        from surgesim.schema.scenario import Live

        live_ = Live.model_validate({**exp.scenario.live.model_dump(), **over})  # the schema's range checks
        exp = dataclasses.replace(exp, scenario=exp.scenario.model_copy(update={"live": live_}))
    sc, live = exp.scenario, exp.scenario.live
    ts, rs = live.time_scale, live.rate_scale
    static = unsupported_faults(list(sc.faults), exp.system)
    if (workers > 1 or master is not None) and not live.locust:
        option = "--master" if master is not None else f"--workers {workers}"
        static.append(f"{option}: only Locust has workers, and {scenario_path} has live.locust: false "
                      f"(the fleet driver); set it true or leave {option.split()[0]} out")
    if static:  # before anything starts
        raise UnsupportedLive(static)
    out = Path(out) if out else Path("runs") / f"{sc.name}-{exp.plan.name}-live-{dt.datetime.now():%Y%m%d-%H%M%S}"
    writer = RunWriter(out)
    wall_duration = sc.duration / ts
    began = time.time()
    prep = _preparer(scenario_path, exp, live, out / "loadgen" / "prepare.json", say)
    runner = SystemRunner(exp.system, exp.plan, state_dir, rate_scale=rs, sample_interval=live.sample_interval,
                          log_dir=out / "logs", log_level="WARNING", purge=True, seed=sc.seed, on_message=say,
                          time_scale=ts, before_bridges=prep.before_bridges if prep else None,
                          base_dir=exp.system_path.parent, bind=bind)
    base = {"mode": "live", "scenario": sc.name, "system": exp.system.name, "plan": exp.plan.name, "seed": sc.seed,
            "duration_s": sc.duration, "start_clock_s": sc.start_clock, "step_s": live.sample_interval * ts,
            "scales": {"time_scale": ts, "rate_scale": rs},
            "inputs": {"scenario": _input(exp.scenario_path), "system": _input(exp.system_path),
                       "plan": _input(exp.plan_path)}}
    stopped_at: dict = {}
    try:
        with runner, (while_running(runner) if while_running else contextlib.nullcontext()):
            say(f"live: {sc.name} / plan {exp.plan.name}: {sc.duration:g} scenario s in {wall_duration:.0f} wall s "
                f"(time_scale {ts:g}, rate_scale {rs:g})")
            faults = FaultInjector(runner, list(sc.faults), ts, say=say)
            jobs = Launcher(sc.traffic.sources, exp.system.jobs, out, runner.job_env, plan_jobs=exp.plan.jobs, say=say,
                            on_attempt=faults.tasks.on_attempt, start_clock=sc.start_clock, duration=sc.duration,
                            time_scale=ts)
            if runner.run_api is not None:  # workflows' jobs.run steps start their executions here too
                runner.run_api.launcher = jobs
            problems = faults.unsupported()
            if problems:
                raise UnsupportedLive(problems)
            holder: dict = {}
            if prep is not None:  # what needs the services: once they are up, before either clock
                prep.run(runner.endpoints(), prep.late)
            driver = _make_driver(exp, scenario_path, runner, live, out, holder, workers, master, say)
            runner.mark_start()
            t0_mono, t0_epoch = time.monotonic(), time.time()
            lag = LagRecorder(runner.bridges.metrics, t0_epoch, ts, live.sample_interval)
            gen = threading.Thread(target=driver, name="surgesim-loadgen", daemon=True)
            gen.start()
            next_progress = 0.0
            watchdog = runner.watchdog
            try:
                while gen.is_alive():
                    el = time.monotonic() - t0_mono
                    _check_alive(watchdog)
                    faults.tick(el * ts)
                    jobs.tick(el * ts)
                    if el >= next_progress:
                        say(_progress(el, ts, holder, runner))
                        next_progress += progress_every
                    gen.join(min(0.2, live.sample_interval))
                if "error" in holder:
                    _check_alive(watchdog)  # a generator that failed because an emulator died
                    raise holder["error"]
                # drain: wait for the observed backlogs to empty (faults still on the timeline keep ticking)
                drain_deadline = time.monotonic() + live.drain_timeout
                quiet_since = None
                while time.monotonic() < drain_deadline:
                    el = time.monotonic() - t0_mono
                    _check_alive(watchdog)
                    faults.tick(el * ts)
                    jobs.tick(el * ts)
                    if not faults.holding() and not faults.pending and _backlog(runner) == 0 \
                            and _triggers_pending(runner) == 0 and jobs.idle() and _bq_jobs_running(runner) == 0:
                        quiet_since = time.monotonic() if quiet_since is None else quiet_since
                        if time.monotonic() - quiet_since >= DRAIN_SETTLE_S:
                            break
                    else:
                        quiet_since = None
                    if el >= next_progress:
                        say(_progress(el, ts, holder, runner) + " (draining)")
                        next_progress += progress_every
                    time.sleep(0.25)
                end_s = (time.monotonic() - t0_mono) * ts
                bq_running = _bq_jobs_running(runner)  # at the drain's end, before anything stops
                faults.finish(end_s)
                _check_alive(watchdog)
            except BaseException as exc:
                faults.abort()  # a frozen emulator is thawed whatever happens
                jobs.stop()
                if "proc" in holder:  # the generator goes first, then the runner stops the rest
                    holder["proc"].kill()
                if isinstance(exc, (KeyboardInterrupt, LiveAborted)):
                    at = (time.monotonic() - t0_mono) * ts
                    stopped_at.update(at_s=at)
                    try:
                        _write_partial(writer, runner, faults, base, t0_mono, ts, at, exc)
                        stopped_at["written"] = True
                    except BaseException as werr:  # noqa: BLE001 -- the stop matters more than the record
                        say(f"partial summary not written: {type(werr).__name__}: {werr}")
                raise
            jobs.finish()  # executions still running when the drain timed out are cancelled (and fail the verdict)
            runner.sample_fronts()
            processes = watchdog.processes()  # before the harness stops them
            watchdog.stop()  # what stops from here on is stopped on purpose, not an exit to report
            counters = _service_counters(runner)
            # stop what consumes, then the bridges (a final drain and sample), then count what is left
            for p in runner.procs.values():
                p.stop()
            runner.bridges.stop()
            totals = runner.bridges.metrics.totals()
            cons = conservation(runner, totals)
            triggers = trigger_totals(runner.bridges)
            lag.add_triggers(runner.bridges)
            ts_rows = _timeseries(runner, ts, t0_mono)
            front = runner.fronts.stats()
            apis = _api_totals(runner)
    except KeyboardInterrupt:
        raise LiveInterrupted(writer.dir if stopped_at.get("written") else None, stopped_at.get("at_s"),
                              runner.stopped_report) from None
    except LiveAborted as exc:
        raise LiveAborted(str(exc), writer.dir if stopped_at.get("written") else None,
                          runner.stopped_report) from None
    result = holder["result"]
    writer.write_timeseries(ts_rows)
    hist = pd.concat([result.rows, lag.rows(), _job_run_rows(runner, t0_mono, ts, live.sample_interval)],
                     ignore_index=True)
    writer.write_histograms(hist)
    writer.write_faults(faults.events + [w.event() for w in sc.traffic.waves])
    writer.write_jobs(jobs.records(ts))
    from surgesim.slo import evaluate

    # live.slos, when given, replace the production SLOs that `surgesim sim` judges
    judged = sc if live.slos is None else sc.model_copy(update={"slos": live.slos})
    slos = evaluate(Run(writer.dir), judged)
    latency = {p.split("/", 1)[1]: h.summary() for p, h in result.histograms.items() if p.startswith("latency/")}
    summary = {
        **base,
        "totals": {"topics": {t: {"published": n} for t, n in runner.bridges.metrics.published.items()},
                   "subscriptions": {k: v for k, v in totals.items()},
                   "services": {k: {**{kk: v[kk] for kk in ("requests", "rejected", "client_errors", "errors",
                                                              "cold_starts", "peak_instances")},
                                    "instance_seconds": _instance_seconds(runner, k, ts)}
                                for k, v in front.items()},
                   "routes": route_totals(sc, result.counts),
                   "triggers": triggers,
                   "apis": apis, "jobs": jobs.totals(),
                   "workflows": workflow_totals(runner.workflow_records)},
        "processes": processes,
        "faults_unsupported": _not_injected(faults.events),
        "latency": latency, "lag": lag.summaries(), "slos": slos,
        "conservation": cons,
        "loadgen": {"generator": result.generator, "counts": result.counts, "lateness": result.lateness,
                    # labelled flow steps' own latency (their routes' latency/ has them too)
                    "steps": {p.split("/", 1)[1]: h.summary() for p, h in result.histograms.items()
                              if p.startswith("flow/")},
                    "prepare": result.extra.get("prepare"), "pools": result.extra.get("pools")},
        "live": {"drained": end_s <= sc.duration + live.drain_timeout * ts, "end_s": end_s,
                 "skipped": runner.skipped,
                 "slos_from": "scenario.slos" if live.slos is None else "scenario.live.slos",
                 # inside the front: request received -> upstream answered (the service and its
                 # emulator calls); latency/... minus this is the generator and the network
                 "front_latency": {svc: _front_latency(runner, exp, svc) for svc in sorted(runner.fronts.fronts)},
                 # each service's own /metrics counters at the end, where it has them (the
                 # reference reactors count deliveries by outcome: handled, duplicate, ...)
                 "service_counters": counters,
                 # the BigQuery job clock (emulators/bq_jobs.py), when the system has job steps
                 "bigquery_jobs": _job_clock(runner, bq_running, ts),
                 # what the counting gRPC proxy saw of the services' own pulls and acks
                 "pull_proxy": runner.bridges.proxy_totals if runner.bridges else None},
    }
    checks = _checks(summary, sc, exp.system, faults.events)
    summary["checks"] = checks
    summary["verdict"] = _verdict(slos, checks, cons)  # failed job and workflow executions: implicit checks
    return finish_run(writer, summary, sc.name, began, say), writer.dir


def finish_run(writer: RunWriter, summary: dict, scenario: str, began: float, say, **meta) -> dict:
    """What ends every live run, harnessed or load-only: summary.json, junit.xml, meta.json
    (`meta` adds to it) and the report (a bonus: the verdict stands without it)."""
    from surgesim.slo import junit_xml

    writer.write_summary(summary)
    (writer.dir / "junit.xml").write_text(
        junit_xml(junit_results(summary["slos"], summary["checks"]), f"surgesim.live.{scenario}"), encoding="utf-8")
    writer.write_meta({"run_id": writer.dir.name, "engine": "live", **meta, "host": platform.node(),
                       "python": platform.python_version(),
                       "wall_start": dt.datetime.fromtimestamp(began).isoformat(timespec="seconds"),
                       "wall_seconds": round(time.time() - began, 3)})
    try:
        from surgesim.reports import build_report

        build_report(writer.dir)
    except Exception as exc:  # noqa: BLE001
        say(f"report not built: {type(exc).__name__}: {exc}")
    return summary


def _check_alive(watchdog) -> None:
    if watchdog is not None and watchdog.fatal:
        raise LiveAborted(watchdog.fatal)


def _checks(summary: dict, scenario, system, fault_events: list[dict]) -> list[dict]:
    """The implicit checks (surgesim/checks.py) for this run."""
    from surgesim.checks import implicit_checks

    return implicit_checks(summary, scenario, system, fault_events)


def _verdict(slos: list[dict], checks: list[dict], cons: dict) -> str:
    from surgesim.checks import final_verdict

    return final_verdict(slos, checks) if cons["ok"] else "fail"


def junit_results(slos: list[dict], checks: list[dict]) -> list[dict]:
    """SLOs and implicit checks as JUnit test cases; a failed check's case names what failed."""
    return slos + [c if c["holds"] else {**c, "text": f"{c['text']} -- {c['detail']}"} for c in checks]


def unsupported_faults(faults: list, system) -> list[str]:
    """Declared faults that cannot be injected live whatever runs (before anything starts);
    FaultInjector.unsupported() adds what depends on the running stack."""
    from .fault_kinds import fault_kind
    from .faults import describe

    out = []
    for f in faults:
        why = fault_kind(f).refused(f, system)
        if why:
            out.append(f"{describe(f)}: {why}")
    return out


def _not_injected(events: list[dict]) -> list[str]:
    return [f"{e['kind']} on {e['target']} at {e['start_s']:g}s: "
            + (e["details"].get("reason") or e["details"].get("failed") or "")
            for e in events if e["details"].get("unsupported") or e["details"].get("failed")]


def _service_counters(runner: SystemRunner) -> dict[str, dict[str, float]]:
    """GET /metrics of every running service process, kept where it answers a JSON object
    of numbers (a user's service without one is simply left out)."""
    out = {}
    for name, p in runner.procs.items():
        if not p.alive():
            continue
        try:
            m = runner.service_get(p, "/metrics").json()
        except Exception:  # noqa: BLE001 -- no /metrics, or not JSON: nothing to keep
            continue
        if isinstance(m, dict):
            nums = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if nums:
                out[name] = nums
    return out


def _bq_jobs_running(runner: SystemRunner) -> int:
    """BigQuery jobs the job clock still runs: their pollers are not done, whatever the backlog."""
    return runner.job_table.running_count() if runner.job_table is not None else 0


def _job_clock(runner: SystemRunner, running_at_end: int, ts: float) -> dict | None:
    t = runner.job_table
    if t is None:
        return None
    return {"inserted": t.inserted, "timed": len(t.done_at), "running_answers": t.delayed_reads,
            "running_at_end": running_at_end,
            # jobs a bigquery_job_failure made end with an errorResult, and the reads answered so
            "failed": len(t.failed), "failed_answers": t.failed_reads,
            # jobs a bigquery_job_slow ran longer, and by how much in all (scenario seconds)
            "slowed": t.slowed, "slowed_added_s": round(t.added_s * ts, 3)}


def _job_run_rows(runner: SystemRunner, t0_mono: float, ts: float, window_s: float) -> pd.DataFrame:
    """`bigquery_job/<service>`: each job's run time, jobs.insert -> DONE on the job clock
    (scenario seconds), in the window it was inserted in, as the simulator records it."""
    hists: dict[tuple[float, str], Histogram] = {}
    for service, inserted, run in (runner.job_table.runs if runner.job_table is not None else []):
        w = max(0.0, math.floor((inserted - t0_mono) / window_s) * window_s) * ts
        hists.setdefault((w, service), Histogram()).record(run * ts)
    frames = [histogram_rows(t, f"bigquery_job/{svc}", h) for (t, svc), h in sorted(hists.items())]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["time_s", "path", "bucket", "count"])


def _api_totals(runner: SystemRunner) -> dict:
    apis = {}
    for api in runner.fake_procs:
        try:
            s = runner.fake_stats(api, keys=False)
            apis[api] = {"calls": s["calls"], "errors": s["errors_injected"] + s["outage_rejections"],
                         "rate_limited": s["rate_limited"],
                         # calls repeating an idempotency key that had already succeeded: the
                         # side effects a re-delivery would have duplicated without the key
                         "replayed": s.get("replayed"), "duplicate_keys": s.get("duplicate_keys")}
        except Exception:  # noqa: BLE001
            pass
    return apis


def _write_partial(writer: RunWriter, runner: SystemRunner, faults, base: dict, t0_mono: float, ts: float,
                   at_s: float, why: BaseException) -> None:
    """What was measured until an interruption (or an emulator's death), written before the
    runner stops everything: the sampler's and the fronts' timeseries, the fault timeline
    so far, the per-service and per-subscription totals, the processes. No SLO verdict
    and no conservation (the run did not finish); `surgesim report RUN` renders it."""
    runner.sample_fronts()
    writer.write_timeseries(_timeseries(runner, ts, t0_mono))
    writer.write_histograms(pd.DataFrame(columns=["time_s", "path", "bucket", "count"]))
    writer.write_faults(list(faults.events))
    interrupted = isinstance(why, KeyboardInterrupt)
    summary = {
        **base, "interrupted": True, "interrupted_at_s": round(at_s, 3),
        "interrupted_by": "signal" if interrupted else str(why),
        "totals": {"topics": {t: {"published": n} for t, n in runner.bridges.metrics.published.items()},
                   "subscriptions": runner.bridges.metrics.totals(),
                   "services": {k: {kk: v[kk] for kk in ("requests", "rejected", "client_errors", "errors",
                                                          "cold_starts", "peak_instances")}
                                for k, v in runner.fronts.stats().items()},
                   "triggers": trigger_totals(runner.bridges)},
        "processes": runner.watchdog.processes() if runner.watchdog is not None else {},
        "faults_unsupported": _not_injected(faults.events),
        "latency": {}, "lag": {}, "slos": [], "checks": [], "verdict": "interrupted" if interrupted else "fail",
        "conservation": {"ok": False, "subscriptions": {}, "why": "the run did not finish"},
    }
    writer.write_summary(summary)


def _preparer(scenario_path, exp, live, path: Path, say):
    """The scenario's `prepare:` phase (surgesim/loadtests/prepare.py), run by the harness
    before either clock: its leading Firestore-only entries before the trigger bridges start
    (what they write is the triggers' baseline, not a change), the rest once the services
    are up; the generator loads the pools from prepare.json. None without `prepare:`."""
    path.unlink(missing_ok=True)
    from surgesim.loadtests.plan import LivePlan

    plan = LivePlan(scenario_path, time_scale=live.time_scale, rate_scale=live.rate_scale, experiment=exp)
    if not plan.prepare:
        return None
    from surgesim.loadtests.prepare import Preparer

    return Preparer(plan, path, say)


def _make_driver(exp, scenario_path, runner: SystemRunner, live, out: Path, holder: dict, workers: int = 1,
                 master: tuple[str, int] | None = None, say=print):
    """The harnessed run's traffic (traffic_driver) on the runner's endpoints and emulators;
    the wall duration from the scenario already loaded (the driver process loads its own copy)."""
    endpoints = runner.endpoints()
    prepared = out / "loadgen" / "prepare.json"

    def announce() -> None:
        _announce_master(scenario_path, endpoints, runner.emulator_env, prepared, out, master, workers, live, say)

    return traffic_driver(scenario_path, endpoints, runner.emulator_env, live, exp.scenario.duration / live.time_scale,
                          out / "loadgen", holder, workers=workers, master=master, announce=announce)


def traffic_driver(scenario_path, endpoints: dict, env: dict, live, wall_s: float, out: Path, holder: dict, *,
                   workers: int = 1, master: tuple[str, int] | None = None, announce=None):
    """The traffic, in its own process either way: Locust headless when scenario.live.locust
    (`announce()` first, when it waits for a master's remote workers), else the asyncio fleet
    driver on uvloop (surgesim.live.loadgen_proc). Sharing the harness's process (fronts,
    bridges) cost the driver its timing: docs/benchmarks/live.md. The prepare phase (if any)
    ran before the clocks: the generator only reads out/prepare.json, so the fault clock and
    the traffic clock still start together. Returns the function that drives it to the end,
    leaving `result` or `error` in holder (and the process or Locust group in holder["proc"])."""
    prepared = out / "prepare.json"
    env = dict(env)
    if prepared.exists():
        env["SURGESIM_PREPARED"] = str(prepared)
    if live.locust:
        from surgesim.loadtests import run_locust

        group = LocustGroup()
        holder["proc"] = group
        if master is not None and announce is not None:
            announce()

        def drive_locust() -> None:
            try:
                holder["result"] = run_locust(scenario_path, endpoints, None, out, env=env, preload=False,
                                              on_start=group.attach, time_scale=live.time_scale,
                                              rate_scale=live.rate_scale, workers=workers, master=master)
            except BaseException as exc:  # noqa: BLE001 -- re-raised in the main thread
                holder["error"] = exc

        return drive_locust
    proc = DriverProcess(scenario_path, endpoints, out, wall_s, env=env, scales=(live.time_scale, live.rate_scale),
                         prepared=prepared if prepared.exists() else None).start()
    holder["proc"] = proc

    def drive() -> None:
        try:
            proc.go()
            holder["result"] = proc.wait()
        except BaseException as exc:  # noqa: BLE001
            holder["error"] = exc

    return drive


def _announce_master(scenario_path, endpoints: dict, emulator_env: dict, prepared: Path, out: Path,
                     master: tuple[str, int], workers: int, live, say) -> None:
    """The target.env the workers need (this run's endpoints, the prepare phase's output) and the
    command to start each with. The fronts listen on --bind (default 127.0.0.1, reached from
    another machine through a tunnel); the emulators on 127.0.0.1 (docs/live.md, Listen address)."""
    from surgesim.loadtests.runner import host_env
    from surgesim.loadtests.target_env import write_target_env

    env = {**emulator_env, **host_env(endpoints)}
    if prepared.exists():  # what the prepare phase made: the workers share it out, as local ones do
        env["SURGESIM_PREPARED"] = str(prepared)
    path = write_target_env(out / "loadgen" / "target.env", env,
                            comment="endpoints of this `surgesim live --master` run, for `surgesim worker --target-env`")
    host = master[0] if master[0] not in ("0.0.0.0", "::", "*") else "THIS_HOST"
    scales = f" --time-scale {live.time_scale:g} --rate-scale {live.rate_scale:g}"
    say(f"master: waiting for {workers} worker(s) on {master[0]}:{master[1]}; start each with\n"
        f"  surgesim worker --master-host {host}:{master[1]} --target-env {path}{scales} {scenario_path}")
    if master[0] in ("0.0.0.0", "::"):
        say(f"  ({path} names 127.0.0.1: on another machine, put this machine's address there, "
            "or tunnel the ports; the emulators listen on 127.0.0.1 only)")


class LocustGroup:
    """Locust headless (and whatever it spawns) as the process group run_locust starts it
    in, killable from the harness's main thread. That group has its own session, so a
    terminal's Ctrl-C never reaches it: kill() is the only way it goes before its own
    timeout. A kill() that comes before Locust has started makes attach() kill it at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._killed = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def attach(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._proc = proc
            killed = self._killed
        if killed:
            self._kill(proc)

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            proc = self._proc
        if proc is not None:
            self._kill(proc)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        from surgesim.loadtests.runner import _kill_group

        _kill_group(proc)


class DriverProcess:
    """The fleet driver in its own process group: started (imports done) before the run's
    clocks, released by go(), killed if it outlives duration + grace_s or on kill()."""

    def __init__(self, scenario_path, endpoints: dict[str, str], out_dir: Path, duration_s: float, *,
                 env: dict[str, str] | None = None, grace_s: float = 60.0,
                 scales: tuple[float, float] | None = None, prepared: Path | None = None) -> None:
        self.cmd = [sys.executable, "-m", "surgesim.live.loadgen_proc", "--scenario", str(scenario_path),
                    "--out", str(out_dir), "--no-preload"]
        if prepared is not None:
            self.cmd += ["--prepared", str(prepared)]
        if scales is not None:
            self.cmd += ["--time-scale", repr(scales[0]), "--rate-scale", repr(scales[1])]
        from surgesim.loadtests.runner import host_env

        self.env = {**os.environ, **(env or {}), **host_env(endpoints)}
        self.out_dir, self.duration_s, self.grace_s = out_dir, duration_s, grace_s
        self.log_path = out_dir / "driver.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "DriverProcess":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "loadgen.json").unlink(missing_ok=True)
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.PIPE, stderr=log_file,
                                         stdin=subprocess.PIPE, start_new_session=True)
        ready = threading.Thread(target=self.proc.stdout.readline, daemon=True)
        ready.start()
        ready.join(timeout)
        if ready.is_alive() or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError("the fleet driver did not start:\n" + self._log())
        return self

    def go(self) -> None:
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def wait(self):
        from surgesim.loadtests.recorder import read_result

        try:
            rc = self.proc.wait(timeout=self.duration_s + self.grace_s)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            rest = self.proc.stdout.read() if self.proc.poll() is not None else b""
            self.kill()
        if rest:
            with open(self.log_path, "ab") as f:
                f.write(rest)
        if not (self.out_dir / "loadgen.json").exists():
            raise RuntimeError(f"the fleet driver wrote no results (exit {rc}):\n" + self._log())
        return read_result(self.out_dir)

    def kill(self) -> None:
        from surgesim.loadtests.runner import _kill_group

        if self.proc is not None:
            _kill_group(self.proc)

    def _log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]


def _front_latency(runner: SystemRunner, exp, service: str) -> dict:
    """A front's own latency per route (request received -> upstream answered), request
    paths folded to the templates the service's routes declare (`/x/{id}/y`)."""
    front = runner.fronts.fronts.get(service)
    folder = PathFolder([r.path for r in exp.routes(service)])
    per: dict[str, Histogram] = {}
    for path, h in (front.stats.latency.items() if front else ()):
        per.setdefault(folder.fold(path), Histogram()).merge(h)
    return {route: h.summary() for route, h in sorted(per.items())}


def _instance_seconds(runner: SystemRunner, service: str, ts: float) -> float:
    """Scenario instance-seconds of a front: its sampled instance gauge x window length."""
    level = [r["value"] for r in runner.front_rows if r["entity"] == service and r["metric"] == METRICS["instances"]]
    return round(sum(level) * runner.sample_interval * ts, 3)


def _backlog(runner: SystemRunner) -> int:
    """Messages waiting for a running consumer (dead-letter holding subscriptions excluded)."""
    consumed = {s.name for s in runner.system.subscriptions if s.consumer is not None or s.delivery == "bigquery"}
    return sum(max(0, t["backlog"]) for name, t in runner.bridges.metrics.totals().items()
               if name in consumed and t["backlog"] is not None)


def _triggers_pending(runner: SystemRunner) -> int:
    """Trigger deliveries still queued or being retried (a give-up takes the bridge's attempts)."""
    return sum(t["pending"] for t in trigger_totals(runner.bridges).values())


def _progress(el: float, ts: float, holder: dict, runner: SystemRunner) -> str:
    # the generator runs in its own process: count what the fronts received instead
    stats = runner.fronts.stats()
    requests = sum(v["requests"] for v in stats.values())
    rejected = sum(v["rejected"] for v in stats.values())
    client = sum(v["client_errors"] for v in stats.values())
    server = sum(v["errors"] for v in stats.values())
    clock = int(el * ts)
    return (f"  wall {el:6.1f}s  scenario {clock // 3600:02d}:{clock // 60 % 60:02d}:{clock % 60:02d}  "
            f"requests {requests}  429 {rejected}  4xx {client}  5xx {server}  backlog {_backlog(runner)}")


def _timeseries(runner: SystemRunner, ts: float, t0_mono: float) -> pd.DataFrame:
    rows = []
    off = runner.bridges.metrics.start - t0_mono
    interval = runner.sample_interval
    for r in runner.bridges.metrics.rows:
        t = r["time_s"] + off
        if t < -interval:
            continue
        rows.append({**r, "time_s": max(0.0, t) * ts})
    for r in runner.front_rows:
        rows.append({**r, "time_s": r["time_s"] * ts})
    return pd.DataFrame(rows, columns=["time_s", "metric", "entity", "value"])
