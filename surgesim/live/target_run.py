"""`surgesim live SCENARIO --target-env FILE`: load only, against a system surgesim did not
start (a staging project, services someone else runs). Nothing is started but the load
generator: no emulators, no services, no fronts, no bridges. The target file
(loadtests/target_env.py) names where to send; the run sends the scenario's seeded traffic
there, measures it from the client side (intended-time latency, answers per route), peeks
the backlog of the subscriptions the file names (surgesim/live/pubsub_peek.py), and writes
the run directory a live run writes.

What load-only cannot measure is said, never passed silently (docs/live.md, "Load only"):

- an SLO on a metric this run has no data for (instances, dead letters, front rejections and
  errors, lag, waits, jobs; backlog and oldest-unacked of a subscription not peeked) is
  `not_measured` and FAILS the verdict, as an SLO without data does in every run: a
  load-only scenario states what it can judge in `live.slos`;
- the implicit checks that need the harness in the messages' path (dead letters,
  conservation, expiry, triggers, processes, workflows, jobs) are listed in
  summary.json `not_measured` and in the report, and do not enter the verdict; the
  client-error checks, per route, do.
Faults and `job:` sources need the harness to act on the system: a scenario that declares
them is refused before any traffic (exit 2).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from pathlib import Path

import pandas as pd

from surgesim.rundir import RunWriter
from surgesim.schema import load_experiment

from .session import LiveInterrupted, UnsupportedLive, _input, finish_run, traffic_driver
from .totals import route_totals

SUBSCRIPTIONS_VAR = "SURGESIM_SUBSCRIPTIONS"
"""Target-file key: comma-separated subscriptions whose backlog the run peeks (needs PUBSUB_EMULATOR_HOST)."""

NOT_MEASURED_CHECKS = {
    "dead_letters": "dead letters are counted by the harness's bridges, which do not run",
    "conservation": "published = acked + dead-lettered + backlog needs the harness in every message's path",
    "expired": "message expiry is counted by the harness's bridges",
    "triggers": "Firestore/Eventarc trigger deliveries go through the harness's trigger bridge",
    "processes": "the target's processes are not this run's: none is watched",
    "workflows": "workflow executions are recorded by the harness's executor",
    "jobs": "Cloud Run Jobs are started by the harness",
}
"""Implicit checks a load-only run cannot evaluate, and why (summary.json `not_measured`)."""

_NO_DATA = {
    "instances": "instances are counted by the harness's Cloud Run fronts",
    "rejected": "429s per service are counted by the fronts (the client's per-route counts judge errors)",
    "errors": "5xx per service are counted by the fronts (the client's per-route counts judge errors)",
    "dlq": "dead letters are counted by the harness's bridges",
    "lag": "publish-to-ack lag needs the harness's sampler ledgers",
    "freshness": "freshness is a simulator metric",
    "wait": "queueing waits are measured inside the fronts",
    "pwait": "queueing waits are measured inside the fronts",
    "job": "jobs are started by the harness",
}


def not_measured_slo(slo, peeked: set[str]) -> str | None:
    """Why this SLO cannot be evaluated in a load-only run (None: it can)."""
    if slo.metric == "latency":
        return None
    if slo.metric in ("backlog", "oldest_unacked"):
        if slo.entity in peeked:
            return None
        return (f"subscription {slo.entity} is not peeked (name it in the target file's {SUBSCRIPTIONS_VAR}, "
                "with PUBSUB_EMULATOR_HOST)")
    return _NO_DATA.get(slo.metric, f"{slo.metric} is not measured without the harness")


def refused(scenario, system) -> list[str]:
    """What a load-only run cannot do for this scenario (UnsupportedLive before any traffic)."""
    out = [f"{f.kind} at {f.at:g}s: faults need the harness to act on the system; a load-only run "
           "(--target-env) injects none" for f in scenario.faults]
    out += [f"source {s.name}: a job: source starts a Cloud Run Job, which only the harness can"
            for s in scenario.traffic.sources if getattr(s, "job", None) is not None]
    return out


def run_target(scenario_path: str | Path, plan_path: str | Path | None, out: str | Path | None,
               target: dict[str, str], *, target_file: str | Path | None = None, say=print,
               progress_every: float = 5.0, time_scale: float | None = None, rate_scale: float | None = None,
               workers: int = 1, master: tuple[str, int] | None = None) -> tuple[dict, Path]:
    """The load-only run. target: the target file's variables (read_target_env). Raises
    UnsupportedLive (faults, job sources, missing endpoints, an unpeekable subscription:
    bad input, before any traffic) or LiveInterrupted (Ctrl-C)."""
    from surgesim.loadtests.plan import PROJECT, LivePlan, endpoints_from_env, missing_endpoints

    scenario_path = Path(scenario_path).resolve()
    exp = load_experiment(scenario_path, plan_path)
    over = {k: float(v) for k, v in (("time_scale", time_scale), ("rate_scale", rate_scale)) if v is not None}
    if over:
        from surgesim.schema.scenario import Live

        live_ = Live.model_validate({**exp.scenario.live.model_dump(), **over})
        exp = dataclasses.replace(exp, scenario=exp.scenario.model_copy(update={"live": live_}))
    sc, live = exp.scenario, exp.scenario.live
    ts, rs = live.time_scale, live.rate_scale
    problems = refused(sc, exp.system)
    if (workers > 1 or master is not None) and not live.locust:
        problems.append("--workers/--master: only Locust has workers, and this scenario has live.locust: false")
    plan = LivePlan(scenario_path, time_scale=ts, rate_scale=rs)
    endpoints = endpoints_from_env(plan, target)
    missing = missing_endpoints(plan, endpoints)
    where = target_file or "the target file"
    if missing:
        problems.append(f"{where}: no {', '.join(missing)} (the endpoints {scenario_path.name} sends to)")
    subs = [s.strip() for s in target.get(SUBSCRIPTIONS_VAR, "").split(",") if s.strip()]
    peeker = None
    if subs and not target.get("PUBSUB_EMULATOR_HOST"):
        problems.append(f"{where}: {SUBSCRIPTIONS_VAR} names subscriptions to peek, but there is no "
                        "PUBSUB_EMULATOR_HOST to peek them on")
    elif subs:
        from .pubsub_peek import Peeker, PeekRefused

        peeker = Peeker(target["PUBSUB_EMULATOR_HOST"], endpoints[PROJECT])
        for sub in subs:
            try:
                peeker.check(sub)
            except PeekRefused as exc:
                problems.append(f"{where}: {SUBSCRIPTIONS_VAR}: {exc}")
    if problems:
        if peeker is not None:
            peeker.close()
        raise UnsupportedLive(problems)

    out = Path(out) if out else Path("runs") / f"{sc.name}-{exp.plan.name}-target-{dt.datetime.now():%Y%m%d-%H%M%S}"
    writer = RunWriter(out)
    loadgen = out / "loadgen"
    loadgen.mkdir(parents=True, exist_ok=True)
    began = time.time()
    wall = sc.duration / ts
    shown = {k: v for k, v in sorted(endpoints.items())}
    say(f"load only: {sc.name}: {sc.duration:g} scenario s in {wall:.0f} wall s (time_scale {ts:g}, rate_scale {rs:g}) "
        f"against {', '.join(f'{k}={v}' for k, v in shown.items())}; nothing is started but the load generator")
    prepared = loadgen / "prepare.json"
    prepared.unlink(missing_ok=True)
    if plan.prepare:  # before the clock, as the harness does it (the generators only read prepare.json)
        from surgesim.loadtests.prepare import Preparer

        from surgesim.loadtests.target_env import target_headers

        prep = Preparer(plan, prepared, say, headers=target_headers(target))
        prep.run(endpoints, prep.early + prep.late)
    holder: dict = {}
    driver = _driver(scenario_path, endpoints, target, live, wall, loadgen, holder, workers, master, say)
    from .pubsub_peek import PeekSampler

    sampler = PeekSampler(peeker, subs, live.sample_interval) if peeker is not None else None
    t0 = time.monotonic()
    end_s = 0.0
    try:
        if sampler is not None:
            sampler.start()
        gen = threading.Thread(target=driver, name="surgesim-loadgen", daemon=True)
        gen.start()
        next_progress = 0.0
        while gen.is_alive():
            el = time.monotonic() - t0
            if el >= next_progress:
                say(_progress(el, ts, sampler))
                next_progress += progress_every
            gen.join(min(0.2, live.sample_interval))
        if "error" in holder:
            raise holder["error"]
        # drain: the peeked backlogs back to 0 (a target that consumes), or the drain timeout
        deadline = time.monotonic() + (live.drain_timeout if sampler is not None else 0.0)
        while sampler is not None and time.monotonic() < deadline and sampler.backlog() > 0:
            el = time.monotonic() - t0
            if el >= next_progress:
                say(_progress(el, ts, sampler) + " (draining)")
                next_progress += progress_every
            time.sleep(0.25)
        end_s = (time.monotonic() - t0) * ts
    except KeyboardInterrupt:
        if "proc" in holder:
            holder["proc"].kill()
        raise LiveInterrupted(None, (time.monotonic() - t0) * ts, []) from None
    except BaseException:
        if "proc" in holder:
            holder["proc"].kill()
        raise
    finally:
        if sampler is not None:
            sampler.stop()
    if sampler is not None:
        sampler.sample()  # the backlog at the end, after the thread stopped
        peeker.close()
    result = holder["result"]
    rows = [{**r, "time_s": r["time_s"] * ts} for r in (sampler.rows if sampler is not None else [])]
    writer.write_timeseries(pd.DataFrame(rows, columns=["time_s", "metric", "entity", "value"]))
    writer.write_histograms(result.rows)
    writer.write_faults([w.event() for w in sc.traffic.waves])
    summary = _summary(exp, writer, result, sampler, endpoints, target_file, subs, end_s)
    return finish_run(writer, summary, sc.name, began, say, load_only=True), writer.dir


def _summary(exp, writer: RunWriter, result, sampler, endpoints: dict, target_file, subs: list[str],
             end_s: float) -> dict:
    from surgesim.checks import client_error_checks
    from surgesim.rundir import Run
    from surgesim.slo import evaluate

    sc, live = exp.scenario, exp.scenario.live
    judged = sc if live.slos is None else sc.model_copy(update={"slos": live.slos})
    peeked = set(subs)
    why = [not_measured_slo(s, peeked) for s in judged.slos]
    measured = evaluate(Run(writer.dir), judged.model_copy(update={"slos": [s for s, w in zip(judged.slos, why)
                                                                           if w is None]}))
    slos, it = [], iter(measured)
    for slo, reason in zip(judged.slos, why):
        if reason is None:
            slos.append(next(it))
        else:  # fails: an SLO the run cannot judge is not a pass (docs/live.md, Load only)
            slos.append({"text": slo.text, "observed": None, "holds": False, "not_measured": True, "why": reason})
    routes = route_totals(sc, result.counts)
    summary = {
        "mode": "live", "load_only": True, "scenario": sc.name, "system": exp.system.name, "plan": exp.plan.name,
        "seed": sc.seed, "duration_s": sc.duration, "start_clock_s": sc.start_clock,
        "step_s": live.sample_interval * live.time_scale,
        "scales": {"time_scale": live.time_scale, "rate_scale": live.rate_scale},
        "inputs": {"scenario": _input(exp.scenario_path), "system": _input(exp.system_path),
                   "plan": _input(exp.plan_path)},
        "target": {"file": str(target_file) if target_file else None, "endpoints": endpoints,
                   "peeked_subscriptions": subs},
        "totals": {"routes": routes,
                   "subscriptions": {s: dict(sampler.latest.get(s, {})) for s in subs} if sampler else {}},
        "latency": {p.split("/", 1)[1]: h.summary() for p, h in result.histograms.items() if p.startswith("latency/")},
        "loadgen": {"generator": result.generator, "counts": result.counts, "lateness": result.lateness,
                    "steps": {p.split("/", 1)[1]: h.summary() for p, h in result.histograms.items()
                              if p.startswith("flow/")},
                    "prepare": result.extra.get("prepare"), "pools": result.extra.get("pools")},
        "live": {"end_s": end_s, "slos_from": "scenario.slos" if live.slos is None else "scenario.live.slos"},
        "slos": slos,
        "conservation": {"ok": None, "subscriptions": {}, "why": "not measured in a load-only run"},
        "not_measured": [{"name": k, "why": v} for k, v in NOT_MEASURED_CHECKS.items()]
                        + [{"name": f"slo: {s['text']}", "why": s["why"]} for s in slos if s.get("not_measured")],
    }
    checks = client_error_checks(summary, sc, exp.system)
    summary["checks"] = checks
    summary["verdict"] = "pass" if all(s["holds"] for s in slos) and all(c["holds"] for c in checks) else "fail"
    return summary


def _driver(scenario_path, endpoints: dict, target: dict, live, wall_s: float, out: Path, holder: dict,
            workers: int, master, say):
    """The traffic in its own process, as in a harnessed run (session.traffic_driver), with
    the target file's variables; a master announces the target.env its workers need."""
    env = {k: v for k, v in target.items() if k != SUBSCRIPTIONS_VAR}

    def announce() -> None:
        from surgesim.loadtests.runner import host_env
        from surgesim.loadtests.target_env import HEADER_PREFIX, write_target_env

        # no SURGESIM_HEADER_* (a staging token) in the run directory, which gets shared
        secret = sorted(k for k in env if k.startswith(HEADER_PREFIX))
        path = write_target_env(out / "target.env",
                                {k: v for k, v in {**env, **host_env(endpoints)}.items() if k not in secret},
                                comment="endpoints of this load-only run, for `surgesim worker --target-env`"
                                        + (f"\nnot written here: {', '.join(secret)}" if secret else ""))
        host = master[0] if master[0] not in ("0.0.0.0", "::", "*") else "THIS_HOST"
        say(f"master: waiting for {workers} worker(s) on {master[0]}:{master[1]}; start each with\n"
            f"  surgesim worker --master-host {host}:{master[1]} --target-env {path} "
            f"--time-scale {live.time_scale:g} --rate-scale {live.rate_scale:g} {scenario_path}")
        if secret:
            say(f"  ({path} leaves out {', '.join(secret)}: a worker's own target file names them)")

    return traffic_driver(scenario_path, endpoints, env, live, wall_s, out, holder, workers=workers, master=master,
                          announce=announce)


def _progress(el: float, ts: float, sampler) -> str:
    clock = int(el * ts)
    line = f"  wall {el:6.1f}s  scenario {clock // 3600:02d}:{clock // 60 % 60:02d}:{clock % 60:02d}"
    if sampler is not None and sampler.latest:
        line += "  backlog " + ", ".join(f"{k} {v['backlog']}" for k, v in sorted(sampler.latest.items()))
    return line
