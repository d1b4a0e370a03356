"""Synthetic run directories shaped like a Meridian dispatch-wave morning.

Reports must be built and tested before (and independently of) the simulator, so this
writes a realistic run directory through `surgesim.rundir.RunWriter` alone: a diurnal ramp,
a dispatch wave that pushes telemetry backlogs up and lets them drain, a consumer outage
and a dependency error window, autoscaling with lag, latency histograms that widen under
load. It is a toy fluid model, not the simulator: tests, the benchmark and demos use it.

Conservation holds exactly (published = acked + dead-lettered + filtered + backlog),
because every count is an integer drawn per window and moved between those buckets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pandas as pd

from surgesim.histogram import SUB_BUCKETS, Histogram, bucket_of
from surgesim import slo as slo_eval
from surgesim.rundir import METRICS, Run, RunWriter
from surgesim.schema import Slo

DAY = 86400.0
# Parcels per route per day, as in scenarios/dispatch_wave.yaml.
PARCELS_PER_DAY = 210000.0
DIURNAL = [(0, 0.15), (3, 0.03), (6, 0.3), (9, 1.6), (12, 1.5), (15, 1.6), (18, 1.2), (21, 0.5), (24, 0.15)]
EVENT_TYPES = ("created", "assigned", "out_for_delivery", "delivered", "geofence")


@dataclass(frozen=True)
class SubSpec:
    name: str
    topic: str
    service: str | None  # None: a BigQuery subscription, written without a consumer limit
    matches: tuple[str, ...]  # event types it receives (telemetry subs receive every message)
    per_instance: float  # messages per second one instance handles
    min_instances: int
    max_instances: int


SUBSCRIPTIONS = [
    SubSpec("telemetry-livemap", "vehicle.telemetry", "live-map", (), 260.0, 2, 20),
    SubSpec("telemetry-geofence", "vehicle.telemetry", "geofence", (), 200.0, 2, 20),
    SubSpec("telemetry-bigquery", "vehicle.telemetry", None, (), 0.0, 0, 0),
    SubSpec("eta-sub", "logistics.events", "eta", ("assigned", "out_for_delivery", "geofence"), 40.0, 1, 30),
    SubSpec("notification-sub", "logistics.events", "notification", ("out_for_delivery", "delivered"), 40.0, 1, 50),
    SubSpec("billing-sub", "logistics.events", "billing", ("delivered",), 40.0, 1, 30),
    SubSpec("driver-scoring-sub", "logistics.events", "driver-scoring", ("delivered", "geofence"), 60.0, 0, 20),
    SubSpec("pod-sub", "logistics.events", "pod", ("delivered",), 40.0, 0, 20),
    SubSpec("client-webhook-sub", "logistics.events", "client-webhook", EVENT_TYPES, 40.0, 0, 30),
    SubSpec("dispatch-sub", "dispatch.requests", "fleet-allocator", (), 5.0, 1, 10),
]
COMMAND_ROUTES = ("create_shipment", "assign_driver", "mark_out_for_delivery", "mark_delivered")
SLOS = (
    "p99(latency.command.mark_delivered) < 100ms",
    "p99(latency.command) < 100ms",
    "max(rejected.command) == 0",
    # drain counts from when the backlog rose: the 9-minute wave plus 10 minutes to catch up
    "drain(backlog.telemetry-geofence) < 20m",
    "final(dlq.eta-sub) == 0",
)
PUSH_SERVICES = ("eta", "notification", "billing", "driver-scoring", "pod", "client-webhook")


def _diurnal(clock_s: np.ndarray) -> np.ndarray:
    hours, values = zip(*DIURNAL)
    return np.interp((clock_s % DAY) / 3600.0, hours, values)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _lognormal_profile(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Bucket offsets from the median's bucket and their probabilities. Buckets are equal
    in log space, so one profile serves every median (to within one bucket, ~1%)."""
    width = math.log(2.0) / SUB_BUCKETS
    k = np.arange(-math.ceil(4.5 * sigma / width), math.ceil(4.5 * sigma / width) + 1)
    edges = (k[:, None] + np.array([-0.5, 0.5])[None, :]) * width / sigma
    probs = _normal_cdf(edges[:, 1]) - _normal_cdf(edges[:, 0])
    return k, probs / probs.sum()


def _histogram_rows(rng, times, path, n, median, sigma) -> pd.DataFrame:
    """Per-window latency counts for `n` samples per window around `median` seconds."""
    offsets, probs = _lognormal_profile(sigma)
    centre = bucket_of(np.maximum(median, 1e-6))
    counts = rng.poisson(np.asarray(n, dtype=float)[:, None] * probs[None, :])
    w, j = np.nonzero(counts)
    return pd.DataFrame({
        "time_s": times[w], "path": path, "bucket": centre[w] + offsets[j], "count": counts[w, j],
    })


def _autoscale(demand: np.ndarray, per_instance: float, lo: int, hi: int, dt: float) -> np.ndarray:
    """Instances following demand with Cloud Run-like lag: up within ~30 s, down over ~5 min."""
    out = np.empty(len(demand), dtype=np.int64)
    inst = float(lo)
    up, down = min(1.0, dt / 30.0), min(1.0, dt / 300.0)
    for i, d in enumerate(demand):
        target = min(hi, max(lo, math.ceil(d / (0.7 * per_instance)))) if per_instance else lo
        inst += (target - inst) * (up if target > inst else down)
        inst = min(hi, max(lo, inst))
        out[i] = round(inst)
    return out


def write_synthetic_run(
    directory: str | Path,
    *,
    duration_s: float = 3 * 3600.0,
    start_clock_s: float = 6 * 3600.0,
    step_s: float = 10.0,
    capacity: float = 1.0,
    plan: str = "baseline",
    mode: str = "sim",
    time_scale: float = 1.0,
    rate_scale: float = 1.0,
    latency_factor: float = 1.0,
    extra_subscriptions: int = 0,
    faults: bool = True,
    seed: int = 42,
) -> Path:
    """Write a run directory and return its path.

    capacity scales every service's min/max instances (a cheaper or richer plan);
    rate_scale and time_scale mimic a live run (fewer messages, and instance capacity
    scaled alike so the curves keep their shape); latency_factor makes one engine slower
    than the other; extra_subscriptions adds consumers to reach benchmark sizes."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    n = int(round(duration_s / step_s))
    t = np.arange(n) * step_s
    clock = start_clock_s + t
    mid = clock + step_s / 2
    curve = _diurnal(mid)

    def offset(clock_hhmm: float) -> float:
        """Scenario offset of a clock time on the run's first day."""
        return (clock_hhmm - start_clock_s) % DAY

    wave_at, wave_len, ramp = offset(7.5 * 3600), 540.0, 30.0
    in_wave = np.clip(np.minimum(t + step_s / 2 - wave_at, wave_at + wave_len - (t + step_s / 2)) / ramp, 0, 1)
    events = [{"kind": "wave", "target": "dispatch_wave", "start_s": wave_at, "end_s": wave_at + wave_len,
               "details": {"rates": {"gps": 5100.0, "mark_delivered": 900.0}}}]
    eta_down = np.zeros(n, dtype=bool)
    sms_errors = np.zeros(n)
    if faults:
        down_at, err_at = offset(7.75 * 3600), offset(8 * 3600 + 10 * 60)
        events += [
            {"kind": "consumer_down", "target": "eta", "start_s": down_at, "end_s": down_at + 600.0, "details": {}},
            {"kind": "dependency_errors", "target": "sms-gateway", "start_s": err_at, "end_s": err_at + 600.0,
             "details": {"error_rate": 0.3}},
        ]
        eta_down = (t >= down_at) & (t < down_at + 600.0)
        sms_errors = np.where((t >= err_at) & (t < err_at + 600.0), 0.3, 0.0)
    events = [e for e in events if e["start_s"] < duration_s]

    # arrivals per window (rate_scale: a live run sends a fraction of the volume)
    gps_rate = 1640.0 + (5100.0 - 1640.0) * in_wave
    route_rate = {r: PARCELS_PER_DAY / DAY * curve for r in COMMAND_ROUTES}
    route_rate["mark_delivered"] = route_rate["mark_delivered"] + (900.0 - route_rate["mark_delivered"]) * in_wave
    gps = rng.poisson(gps_rate * step_s * rate_scale)
    route_n = {r: rng.poisson(v * step_s * rate_scale) for r, v in route_rate.items()}
    kinds = {"created": route_n["create_shipment"], "assigned": route_n["assign_driver"],
             "out_for_delivery": route_n["mark_out_for_delivery"], "delivered": route_n["mark_delivered"],
             "geofence": rng.binomial(gps, 0.01)}
    logistics = sum(kinds.values())
    dispatch = rng.poisson(8200.0 / DAY * curve * step_s * rate_scale * 20)
    topic_n = {"vehicle.telemetry": gps, "logistics.events": logistics, "dispatch.requests": dispatch}
    topic_bytes = {"vehicle.telemetry": 220, "logistics.events": 600, "dispatch.requests": 400}

    specs = list(SUBSCRIPTIONS)
    extra_types = [EVENT_TYPES[i % len(EVENT_TYPES):][:2] for i in range(extra_subscriptions)]
    specs += [SubSpec(f"extra-{i:02d}-sub", "logistics.events", "extra-worker", extra_types[i], 40.0, 0, 20)
              for i in range(extra_subscriptions)]

    rows: list[pd.DataFrame] = []
    hist_rows: list[pd.DataFrame] = []
    subs_total, conservation, lag_summary = {}, {}, {}
    svc_instances: dict[str, np.ndarray] = {}
    svc_requests: dict[str, np.ndarray] = {}
    svc_errors: dict[str, np.ndarray] = {}

    def add(metric: str, entity: str, values: np.ndarray, times: np.ndarray = t) -> None:
        rows.append(pd.DataFrame({"time_s": times, "metric": METRICS[metric], "entity": entity,
                                  "value": np.asarray(values, dtype=float)}))

    for spec in specs:
        published = topic_n[spec.topic]
        incoming = sum(kinds[k] for k in spec.matches) if spec.matches else published
        filtered = published - incoming
        lo = int(round(spec.min_instances * capacity))
        hi = max(1, int(round(spec.max_instances * capacity)))
        if spec.service is None:
            cap = np.full(n, np.inf)
        else:
            demand = incoming / step_s / rate_scale
            inst = _autoscale(demand, spec.per_instance, lo, hi, step_s)
            if spec.name == "eta-sub":
                inst = np.where(eta_down, 0, inst)
            svc_instances[spec.service] = svc_instances.get(spec.service, 0) + inst
            cap = inst * spec.per_instance * step_s * rate_scale
        errors = sms_errors if spec.name == "notification-sub" else np.zeros(n)
        backlog = np.zeros(n, dtype=np.int64)
        served = np.zeros(n, dtype=np.int64)
        level = 0
        for i in range(n):
            level += int(incoming[i])
            s = int(min(level, cap[i]))
            served[i] = s
            level -= s
            backlog[i] = level
        nacked = rng.binomial(served, errors)
        dead = rng.binomial(served, errors**5)
        acked = served - dead
        delivered = served + nacked
        rate = np.maximum(cap / step_s, 1e-9)
        oldest = np.where(backlog > 0, np.minimum(backlog / rate + 1.0, t + step_s), 0.0)
        add("backlog", spec.name, backlog)
        add("oldest_unacked", spec.name, oldest)
        for metric, values in (("delivered", delivered), ("acked", acked), ("nacked", nacked),
                               ("dead_lettered", dead), ("filtered", filtered)):
            add(metric, spec.name, values)
        if spec.service is not None:
            svc_requests[spec.service] = svc_requests.get(spec.service, 0) + delivered
            svc_errors[spec.service] = svc_errors.get(spec.service, 0) + nacked
        if spec.service is not None and spec in SUBSCRIPTIONS:
            # lag histograms for the named subscriptions only: a benchmark's ~10 latency
            # paths stay ~10 however many extra subscriptions it adds
            lag_median = (0.05 + np.minimum(backlog / rate, 3600.0)) * latency_factor
            hist_rows.append(_histogram_rows(rng, t, f"lag/{spec.name}", served, lag_median, 0.6))
            add("lag_p50", spec.name, lag_median)
            add("lag_p99", spec.name, lag_median * math.exp(2.326 * 0.6))
        pub_total = int(published.sum())
        subs_total[spec.name] = {
            "published": pub_total, "delivered": int(delivered.sum()), "acked": int(acked.sum()),
            "nacked": int(nacked.sum()), "redelivered": int(nacked.sum()), "dead_lettered": int(dead.sum()),
            "filtered": int(filtered.sum()), "backlog": int(backlog[-1]), "peak_backlog": int(backlog.max()),
            "peak_oldest_unacked_s": float(oldest.max()),
        }
        balance = pub_total - int(acked.sum()) - int(dead.sum()) - int(filtered.sum()) - int(backlog[-1])
        conservation[spec.name] = {"published": pub_total, "acked": int(acked.sum()), "dead_lettered": int(dead.sum()),
                                   "filtered": int(filtered.sum()), "backlog": int(backlog[-1]), "balance": balance}

    for topic, values in topic_n.items():
        add("published", topic, values)

    # the command service answers HTTP; latency grows with utilisation, 429s at max instances
    cmd_per_instance = 60.0
    cmd_demand = sum(route_rate.values())
    cmd_inst = _autoscale(cmd_demand, cmd_per_instance, int(round(2 * capacity)), max(1, int(round(40 * capacity))), step_s)
    util = np.minimum(cmd_demand / (cmd_inst * cmd_per_instance), 1.5)
    overflow = np.maximum(0.0, 1.0 - 1.0 / np.maximum(util, 1e-9))
    cmd_total = sum(route_n.values())
    rejected = rng.binomial(cmd_total, np.where(cmd_inst >= round(40 * capacity), overflow, 0.0))
    svc_instances["command"] = cmd_inst
    svc_requests["command"] = cmd_total
    svc_errors["command"] = np.zeros(n)
    add("rejected", "command", rejected)
    add("utilisation", "command", np.minimum(util, 1.0))
    latency_summary = {}
    for route, count in route_n.items():
        median = 0.018 * (1.0 + 0.6 * util**4) * latency_factor
        if route in ("mark_out_for_delivery", "mark_delivered"):
            median = median * (1.0 + 4.0 * sms_errors)
        hist_rows.append(_histogram_rows(rng, t, f"latency/command.{route}", count, median, 0.45))
        add("latency_p50", f"command.{route}", median)
        add("latency_p99", f"command.{route}", median * math.exp(2.326 * 0.45))
    for service in PUSH_SERVICES:
        inst = np.maximum(svc_instances.get(service, np.ones(n)), 1)
        load = svc_requests.get(service, np.zeros(n)) / step_s / rate_scale / (inst * 40.0)
        median = 0.035 * (1.0 + np.minimum(load, 1.5) ** 4) * latency_factor
        if service == "notification":
            median = median * (1.0 + 6.0 * sms_errors)
        hist_rows.append(_histogram_rows(rng, t, f"latency/{service}.pubsub", svc_requests.get(service, np.zeros(n)),
                                         median, 0.5))
    event_publisher = np.maximum(1, np.ceil(logistics / step_s / rate_scale / 200.0)).astype(int)
    svc_instances["event-publisher"] = event_publisher
    svc_requests["event-publisher"] = logistics
    for service, inst in svc_instances.items():
        add("instances", service, inst)
        add("requests", service, svc_requests.get(service, np.zeros(n)))
        add("errors", service, svc_errors.get(service, np.zeros(n)))

    hist = pd.concat(hist_rows, ignore_index=True)
    writer = RunWriter(directory)
    writer.write_timeseries(pd.concat(rows, ignore_index=True))
    writer.write_histograms(hist)
    writer.write_faults(events)

    def merged(path: str) -> Histogram:
        h = Histogram()
        sel = hist[(hist["path"] == path) | hist["path"].str.startswith(path + ".")]
        np.add.at(h.counts, sel["bucket"].to_numpy(), sel["count"].to_numpy())
        h.count = int(h.counts.sum())
        from surgesim.histogram import bucket_value
        nz = np.nonzero(h.counts)[0]
        if len(nz):
            vals = bucket_value(nz)
            h.total, h.min, h.max = float((vals * h.counts[nz]).sum()), float(vals.min()), float(vals.max())
        return h

    for path in sorted(hist["path"].unique()):
        kind, _, name = path.partition("/")
        (latency_summary if kind == "latency" else lag_summary)[name] = merged(path).summary()

    services = {}
    for service, inst in svc_instances.items():
        inst = np.asarray(inst)
        instance_seconds = float(inst.sum() * step_s)
        services[service] = {
            "requests": int(np.sum(svc_requests.get(service, 0))),
            "rejected": int(rejected.sum()) if service == "command" else 0,
            "errors": int(np.sum(svc_errors.get(service, 0))),
            "instance_seconds": instance_seconds,
            "cold_starts": int(np.maximum(np.diff(inst, prepend=inst[0]), 0).sum()),
            "peak_instances": int(inst.max()),
            "vcpu_seconds": instance_seconds, "gib_seconds": instance_seconds * 0.5,
        }

    # the SLOs of scenarios/dispatch_wave.yaml, observed the way the engines observe them
    scenario = SimpleNamespace(duration=duration_s, slos=[Slo.model_validate(text) for text in SLOS])
    slos = slo_eval.evaluate(Run(directory), scenario)

    scale_day = DAY / duration_s / rate_scale
    run_cost = sum(s["vcpu_seconds"] * 0.000024 + s["gib_seconds"] * 0.0000025 for s in services.values()) * scale_day
    ps_cost = sum(int(v.sum()) * topic_bytes[k] for k, v in topic_n.items()) / 2**40 * 40.0 * scale_day
    fs_cost = 4 * int(cmd_total.sum()) / 1e5 * 0.18 * scale_day
    per_day = {"cloud_run": run_cost, "pubsub": ps_cost, "firestore": fs_cost, "bigquery": 0.0}
    per_day["total"] = sum(per_day.values())
    summary = {
        "mode": mode, "scenario": "dispatch_wave", "system": "meridian", "plan": plan, "seed": seed,
        "duration_s": duration_s, "start_clock_s": start_clock_s, "step_s": step_s,
        "scales": {"time_scale": time_scale, "rate_scale": rate_scale},
        "inputs": {"scenario": {"file": "scenarios/dispatch_wave.yaml", "sha256": "0" * 64},
                   "system": {"file": "scenarios/systems/meridian.yaml", "sha256": "0" * 64},
                   "plan": {"file": f"scenarios/plans/{plan}.yaml", "sha256": "0" * 64}},
        "totals": {
            "topics": {k: {"published": int(v.sum()), "bytes": int(v.sum()) * topic_bytes[k]} for k, v in topic_n.items()},
            "subscriptions": subs_total,
            "services": services,
            "firestore": {"parcels": {"reads": int(cmd_total.sum()), "writes": int(cmd_total.sum())}},
            "bigquery": {"fleet.telemetry_raw": {"rows": int(gps.sum()), "bytes": int(gps.sum()) * 220}},
            "apis": {"sms-gateway": {"calls": subs_total["notification-sub"]["delivered"],
                                     "errors": subs_total["notification-sub"]["nacked"], "rate_limited": 0}},
            "jobs": {}, "workflows": {},
        },
        "latency": latency_summary,
        "lag": lag_summary,
        "slos": slos,
        "verdict": "pass" if all(s["holds"] for s in slos) else "fail",
        "conservation": {"ok": all(c["balance"] == 0 for c in conservation.values()), "subscriptions": conservation},
        "cost": {"as_of": "2025-01", "currency": "USD", "per_day": per_day,
                 "per_month": {k: v * 30 for k, v in per_day.items()}},
    }
    writer.write_summary(summary)
    writer.write_meta({"run_id": directory.name, "started": "synthetic", "host": "synthetic"})
    return directory
