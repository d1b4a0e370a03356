"""`surgesim live`: a scenario against the real services, in compressed real time, written
as the same run directory `surgesim sim` writes (docs/run-directory.md, docs/live.md).

Clocks: wall seconds since the traffic started x time_scale = scenario seconds. Every
timeseries row, histogram window and fault time in the run directory is in scenario
seconds, as in a simulated run.
"""

from __future__ import annotations

import asyncio
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

from .faults import FaultInjector
from .runner import SystemRunner

log = logging.getLogger(__name__)


def _input(path: Path | None) -> dict | None:
    if path is None:
        return None
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


class LagRecorder:
    """publish -> acked per subscription (`lag/<sub>`), from the sampler's own ledgers: each
    ledger's settle() is wrapped to read the message's publish time before it is popped."""

    def __init__(self, metrics, t0_epoch: float, time_scale: float, window_s: float) -> None:
        self.hists: dict[tuple[float, str], Histogram] = {}
        self.t0, self.ts, self.window = t0_epoch, time_scale, window_s
        for name, ledger in metrics.ledgers.items():
            ledger.settle = self._wrap(name, ledger, ledger.settle)

    def _wrap(self, name, ledger, settle):
        def wrapped(mid: str) -> None:
            published = ledger.outstanding.get(mid)
            if published is not None:
                now = time.time()
                w = max(0.0, math.floor((published - self.t0) / self.window) * self.window) * self.ts
                self.hists.setdefault((w, name), Histogram()).record(max(0.0, now - published))
            settle(mid)

        return wrapped

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
    sampler: pull everything (without acking) then hand it back (deadline 0)."""
    import httpx

    base = f"http://{runner.stack.endpoint('pubsub')}/v1/projects/{runner.system.project}/subscriptions/{sub}"
    seen: set[str] = set()
    ack_ids: list[str] = []
    with httpx.Client(trust_env=False, timeout=30) as http:
        for _ in range(1000):
            try:
                r = http.post(base + ":pull", json={"maxMessages": 1000, "returnImmediately": True})
            except httpx.TransportError as exc:
                # e.g. a reused emulator stopped by the run that started it: the run's
                # messages are gone with it, so nothing can be judged.
                raise RuntimeError(f"the Pub/Sub emulator at {runner.stack.endpoint('pubsub')} stopped answering "
                                   f"before the run was checked ({exc}); was it stopped by another run?") from None
            if r.status_code == 404:
                return None
            r.raise_for_status()
            got = r.json().get("receivedMessages", [])
            if not got:
                break
            ack_ids += [m["ackId"] for m in got]
            seen |= {m["message"]["messageId"] for m in got}
        for i in range(0, len(ack_ids), 1000):
            http.post(base + ":modifyAckDeadline", json={"ackIds": ack_ids[i:i + 1000], "ackDeadlineSeconds": 0})
    return len(seen)


def conservation(runner: SystemRunner, totals: dict) -> dict:
    """published = acked + dead_lettered + filtered + backlog per subscription, from the
    sampler's per-message-id ledgers (backlog = messages seen on the topic and neither
    acked nor dead-lettered). Cross-check: where that backlog is 0, the emulator must hold
    no visible message either (counted independently after everything stopped). Messages
    leased in a retry backoff are invisible to that count, so it is only a check at 0."""
    subs = {}
    ok = True
    for s in runner.system.subscriptions:
        t = totals.get(s.name)
        if t is None:
            continue
        observed = t["backlog"] is not None
        row = {"published": t["published"], "acked": t["acked"], "dead_lettered": t["dead_lettered"],
               "filtered": t["filtered"], "backlog": t["backlog"], "observed": observed}
        if observed:
            row["balance"] = t["published"] - t["acked"] - t["dead_lettered"] - t["filtered"] - t["backlog"]
            row["emulator_visible"] = count_remaining(runner, _emulator_name(runner, s.name))
            ok &= row["balance"] == 0 and not (t["backlog"] == 0 and (row["emulator_visible"] or 0) > 0)
        else:
            row["balance"] = None
            row["why"] = "no acknowledger reports for this subscription (no consumer running)"
        subs[s.name] = row
    return {"ok": bool(ok), "subscriptions": subs}


def _emulator_name(runner: SystemRunner, sub: str) -> str:
    relay = runner.bridges.relays.get(sub) if runner.bridges else None
    return sub if relay is None else relay.tap


def run_live(scenario_path: str | Path, plan_path: str | Path | None = None, out: str | Path | None = None, *,
             state_dir: str | Path | None = None, say=print, progress_every: float = 5.0,
             time_scale: float | None = None, rate_scale: float | None = None) -> tuple[dict, Path]:
    """time_scale / rate_scale: override the scenario's live ones (the load generator gets
    them too), e.g. to run a scenario heavier or shorter than its file says."""
    scenario_path = Path(scenario_path).resolve()  # the load generator runs in its own directory
    exp = load_experiment(scenario_path, plan_path)
    over = {k: float(v) for k, v in (("time_scale", time_scale), ("rate_scale", rate_scale)) if v is not None}
    if over:
        from surgesim.schema.scenario import Live

        live_ = Live.model_validate({**exp.scenario.live.model_dump(), **over})  # the schema's range checks
        exp = dataclasses.replace(exp, scenario=exp.scenario.model_copy(update={"live": live_}))
    sc, live = exp.scenario, exp.scenario.live
    ts, rs = live.time_scale, live.rate_scale
    out = Path(out) if out else Path("runs") / f"{sc.name}-{exp.plan.name}-live-{dt.datetime.now():%Y%m%d-%H%M%S}"
    writer = RunWriter(out)
    wall_duration = sc.duration / ts
    began = time.time()
    stock = _stocker(scenario_path, live, out / "loadgen" / "stock.json", say)
    runner = SystemRunner(exp.system, exp.plan, state_dir, rate_scale=rs, sample_interval=live.sample_interval,
                          log_dir=out / "logs", log_level="WARNING", purge=True, seed=sc.seed, on_message=say,
                          time_scale=ts, before_bridges=stock, base_dir=exp.system_path.parent)
    with runner:
        say(f"live: {sc.name} / plan {exp.plan.name}: {sc.duration:g} scenario s in {wall_duration:.0f} wall s "
            f"(time_scale {ts:g}, rate_scale {rs:g})")
        faults = FaultInjector(runner, list(sc.faults), ts, say=say)
        holder: dict = {}
        driver = _make_driver(exp, scenario_path, runner, live, out, holder)
        runner.mark_start()
        t0_mono, t0_epoch = time.monotonic(), time.time()
        lag = LagRecorder(runner.bridges.metrics, t0_epoch, ts, live.sample_interval)
        gen = threading.Thread(target=driver, name="surgesim-loadgen", daemon=True)
        gen.start()
        next_progress = 0.0
        try:
            while gen.is_alive():
                el = time.monotonic() - t0_mono
                faults.tick(el * ts)
                if el >= next_progress:
                    say(_progress(el, ts, holder, runner))
                    next_progress += progress_every
                gen.join(min(0.2, live.sample_interval))
        except BaseException:
            faults.abort()  # a frozen emulator is thawed whatever happens
            if "proc" in holder:  # Ctrl-C / SIGTERM: the generator goes first, then the runner stops the rest
                holder["proc"].kill()
            raise
        if "error" in holder:
            faults.abort()
            raise holder["error"]
        # drain: wait for the observed backlogs to empty (faults still on the timeline keep ticking)
        drain_deadline = time.monotonic() + live.drain_timeout
        try:
            while time.monotonic() < drain_deadline:
                el = time.monotonic() - t0_mono
                faults.tick(el * ts)
                if not faults.active and not faults.pending and _backlog(runner) == 0:
                    break
                if el >= next_progress:
                    say(_progress(el, ts, holder, runner) + " (draining)")
                    next_progress += progress_every
                time.sleep(0.25)
            end_s = (time.monotonic() - t0_mono) * ts
            faults.finish(end_s)
        except BaseException:
            faults.abort()
            raise
        runner.sample_fronts()
        # stop what consumes, then the bridges (a final drain and sample), then count what is left
        for name, p in runner.procs.items():
            p.stop()
        runner.bridges.stop()
        totals = runner.bridges.metrics.totals()
        cons = conservation(runner, totals)
        ts_rows = _timeseries(runner, ts, t0_mono)
        front = runner.fronts.stats()
        apis = {}
        for api in runner.fake_procs:
            try:
                s = runner.fake_stats(api, keys=False)
                apis[api] = {"calls": s["calls"], "errors": s["errors_injected"] + s["outage_rejections"],
                             "rate_limited": s["rate_limited"]}
            except Exception:  # noqa: BLE001
                pass
    result = holder["result"]
    writer.write_timeseries(ts_rows)
    hist = pd.concat([result.rows, lag.rows()], ignore_index=True)
    writer.write_histograms(hist)
    waves = [{"kind": "wave", "target": ",".join(sorted(set(w.rates) | set(w.multiply))), "start_s": w.at,
              "end_s": w.at + w.duration, "details": {"name": w.name}} for w in sc.traffic.waves]
    writer.write_faults(faults.events + waves)
    from surgesim.slo import evaluate, junit_xml, verdict

    # live.slos, when given, replace the production SLOs that `surgesim sim` judges
    judged = sc if live.slos is None else sc.model_copy(update={"slos": live.slos})
    slos = evaluate(Run(writer.dir), judged)
    latency = {p.split("/", 1)[1]: h.summary() for p, h in result.histograms.items() if p.startswith("latency/")}
    summary = {
        "mode": "live", "scenario": sc.name, "system": exp.system.name, "plan": exp.plan.name, "seed": sc.seed,
        "duration_s": sc.duration, "start_clock_s": sc.start_clock, "step_s": live.sample_interval * ts,
        "scales": {"time_scale": ts, "rate_scale": rs},
        "inputs": {"scenario": _input(exp.scenario_path), "system": _input(exp.system_path), "plan": _input(exp.plan_path)},
        "totals": {"topics": {t: {"published": n} for t, n in runner.bridges.metrics.published.items()},
                   "subscriptions": {k: v for k, v in totals.items()},
                   "services": {k: {**{kk: v[kk] for kk in ("requests", "rejected", "errors", "cold_starts",
                                                              "peak_instances")},
                                    "instance_seconds": _instance_seconds(runner, k, ts)}
                                for k, v in front.items()},
                   "apis": apis},
        "latency": latency, "lag": lag.summaries(), "slos": slos, "verdict": verdict(slos),
        "conservation": cons,
        "loadgen": {"generator": result.generator, "counts": result.counts, "lateness": result.lateness},
        "live": {"drained": end_s <= sc.duration + live.drain_timeout * ts, "end_s": end_s,
                 "skipped": runner.skipped,
                 "slos_from": "scenario.slos" if live.slos is None else "scenario.live.slos",
                 # inside the front: request received -> upstream answered (the service and its
                 # emulator calls); latency/... minus this is the generator and the network
                 "front_latency": _front_latency(runner, "command")},
    }
    if not cons["ok"]:
        summary["verdict"] = "fail"
    writer.write_summary(summary)
    (writer.dir / "junit.xml").write_text(junit_xml(slos, f"surgesim.live.{sc.name}"), encoding="utf-8")
    writer.write_meta({"run_id": writer.dir.name, "engine": "live", "host": platform.node(),
                       "python": platform.python_version(),
                       "wall_start": dt.datetime.fromtimestamp(began).isoformat(timespec="seconds"),
                       "wall_seconds": round(time.time() - began, 3)})
    try:
        from surgesim.reports import build_report

        build_report(writer.dir)
    except Exception as exc:  # noqa: BLE001 -- the report is a bonus; the verdict stands without it
        say(f"report not built: {type(exc).__name__}: {exc}")
    return summary, writer.dir


def _stocker(scenario_path, live, path: Path, say):
    """The warm-up (live.stock): parcels ready for each lifecycle command, written into
    Firestore before the bridges start and before either clock (surgesim/live/stock.py);
    None when the scenario turns it off or sends no lifecycle command."""
    path.unlink(missing_ok=True)
    if not live.stock:
        return None
    from surgesim.loadtests.actions import run_tag, stock_counts
    from surgesim.loadtests.plan import LivePlan

    plan = LivePlan(scenario_path, time_scale=live.time_scale, rate_scale=live.rate_scale)
    if not stock_counts(plan):
        return None

    def write(clients) -> None:
        from .stock import write_stock

        info = write_stock(clients.firestore(), plan, path, run_tag())
        say(f"stock: {info['counts']} parcels ready ({info['documents']} documents) in {info['seconds']:.1f} s")

    return write


def _make_driver(exp, scenario_path, runner: SystemRunner, live, out: Path, holder: dict):
    """The traffic, in its own process either way: Locust headless when scenario.live.locust,
    else the asyncio fleet driver on uvloop (surgesim.live.loadgen_proc). Sharing the
    harness's process (fronts, bridges) cost the driver its timing: docs/benchmarks/live.md.
    The parcel stock (if any) was written before the clocks: the generator only reads
    stock.json, so the fault clock and the traffic clock still start together."""
    endpoints = runner.endpoints()
    stock_file = out / "loadgen" / "stock.json"
    if live.locust:
        from surgesim.loadtests import run_locust

        group = LocustGroup()
        holder["proc"] = group

        def drive() -> None:
            try:
                env = dict(runner.emulator_env)
                if stock_file.exists():
                    env["SURGESIM_STOCK_FILE"] = str(stock_file)
                holder["result"] = run_locust(scenario_path, endpoints, None, out / "loadgen", env=env,
                                              preload=False, on_start=group.attach, time_scale=live.time_scale,
                                              rate_scale=live.rate_scale)
            except BaseException as exc:  # noqa: BLE001 -- re-raised in the main thread
                holder["error"] = exc

        return drive
    from surgesim.loadtests.plan import LivePlan

    plan = LivePlan(scenario_path, time_scale=live.time_scale, rate_scale=live.rate_scale)
    proc = DriverProcess(scenario_path, endpoints, out / "loadgen", plan.duration_s, env=runner.emulator_env,
                         scales=(live.time_scale, live.rate_scale),
                         stock=stock_file if stock_file.exists() else None).start()
    holder["proc"] = proc

    def drive() -> None:
        try:
            proc.go()
            holder["result"] = proc.wait()
        except BaseException as exc:  # noqa: BLE001
            holder["error"] = exc

    return drive


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
                 scales: tuple[float, float] | None = None, stock: Path | None = None) -> None:
        self.cmd = [sys.executable, "-m", "surgesim.live.loadgen_proc", "--scenario", str(scenario_path),
                    "--out", str(out_dir), "--no-preload"]
        if stock is not None:
            self.cmd += ["--stock", str(stock)]
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


def _front_latency(runner: SystemRunner, service: str) -> dict:
    """The front's own latency per route (request received -> upstream answered), ids in
    paths folded (/parcels/{id}/assign)."""
    import re

    front = runner.fronts.fronts.get(service)
    per: dict[str, Histogram] = {}
    for path, h in (front.stats.latency.items() if front else ()):
        per.setdefault(re.sub(r"/parcels/[^/]+", "/parcels/{id}", path), Histogram()).merge(h)
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


def _progress(el: float, ts: float, holder: dict, runner: SystemRunner) -> str:
    # the generator runs in its own process: count what the fronts received instead
    stats = runner.fronts.stats()
    requests = sum(v["requests"] for v in stats.values())
    rejected = sum(v["rejected"] for v in stats.values())
    clock = int(el * ts)
    return (f"  wall {el:6.1f}s  scenario {clock // 3600:02d}:{clock // 60 % 60:02d}:{clock % 60:02d}  "
            f"requests {requests}  429 {rejected}  backlog {_backlog(runner)}")


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
