"""'What happened': a few sentences from the data, for a reader who did not run it."""

from __future__ import annotations

from surgesim.reports import fmt
from surgesim.reports.metrics import RunData, event_label, is_wave


def _slo_sentence(slos: list[dict]) -> str:
    if not slos:
        return "The scenario sets no SLOs, so there is no verdict."
    failed = [s for s in slos if not s.get("holds")]
    if not failed:
        return f"All {len(slos)} SLOs held."
    parts = []
    for s in failed:
        slo = fmt.parse_slo(s["text"])
        observed = fmt.slo_value(slo, s.get("observed"))
        margin = fmt.slo_margin(slo, s.get("observed"), False)
        parts.append(f"{s['text']} (observed {observed}{', ' + margin if margin else ''})")
    return f"{len(failed)} of {len(slos)} SLOs failed: " + "; ".join(parts) + "."


def narrative(data: RunData) -> list[str]:
    s = data.summary
    start = data.start_clock_s
    mode = "simulated" if s.get("mode") == "sim" else "run live on the emulators"
    lines = [
        f"Scenario {s.get('scenario')} on system {s.get('system')} with plan {s.get('plan')} was {mode}, "
        f"covering {fmt.clock(start)}–{fmt.clock(start + data.duration_s, True)} ({fmt.duration(data.duration_s)})"
        + (f" at time scale {data.scales['time_scale']:g} and rate scale {data.scales['rate_scale']:g}"
           if s.get("mode") == "live" else "") + ".",
        _slo_sentence(s.get("slos") or []),
    ]
    failed_checks = [c for c in s.get("checks") or [] if not c.get("holds")]
    if failed_checks:
        lines.append(f"{len(failed_checks)} implicit check(s) failed: "
                     + "; ".join(c.get("detail") or c.get("name", "") for c in failed_checks) + ".")

    events = sorted(data.events, key=lambda e: e["start_s"])
    if events:
        described = []
        for e in events:
            end = e.get("end_s")
            span = (f"{fmt.clock(start + e['start_s'])}–{fmt.clock(start + end)}" if end is not None and end > e["start_s"]
                    else f"at {fmt.clock(start + e['start_s'])}" if end is not None else
                    f"from {fmt.clock(start + e['start_s'])} to the end")
            described.append(f"{event_label(e)} {span}")
        waves = sum(1 for e in events if is_wave(e))
        lines.append(f"Timeline ({waves} wave(s), {len(events) - waves} fault(s)): " + "; ".join(described) + ".")
    else:
        lines.append("No faults or waves were scheduled.")

    peaks = data.peak_backlog()
    if peaks and max(p for p, _ in peaks.values()) > 0:
        sub, (peak, at) = max(peaks.items(), key=lambda kv: kv[1][0])
        drain = data.drains.get(sub)
        final = ((s.get("totals") or {}).get("subscriptions") or {}).get(sub, {}).get("backlog")
        sentence = f"The largest backlog was {fmt.count(peak)} messages on {sub}"
        if at == at:  # not NaN
            sentence += f" at {fmt.clock(start + at)}"
        if drain is None:
            sentence += f"; it had not drained by the end ({fmt.count(final)} left)" if final is not None else \
                "; it had not drained by the end"
        elif drain > 0:
            sentence += f"; it was up for {fmt.duration(drain)} before it was back to its earlier level"
        others = sorted(((p, n) for n, (p, _) in peaks.items() if n != sub and p > 0), reverse=True)[:2]
        if others:
            sentence += ". Next largest: " + ", ".join(f"{n} {fmt.count(p)}" for p, n in others)
        lines.append(sentence + ".")
    elif peaks:
        lines.append("No subscription built a backlog.")

    subs = (s.get("totals") or {}).get("subscriptions") or {}
    dead = {n: t.get("dead_lettered", 0) for n, t in subs.items() if t.get("dead_lettered")}
    if dead:
        lines.append(f"{fmt.count(sum(dead.values()))} messages were dead-lettered: "
                     + ", ".join(f"{n} {fmt.count(v)}" for n, v in sorted(dead.items(), key=lambda kv: -kv[1])) + ".")
    elif subs:
        lines.append("No message was dead-lettered.")

    services = (s.get("totals") or {}).get("services") or {}
    rejected = {n: t["rejected"] for n, t in services.items() if t.get("rejected")}
    errors = {n: t["errors"] for n, t in services.items() if t.get("errors")}
    if rejected:
        lines.append("Requests were turned away with 429: " + ", ".join(f"{n} {fmt.count(v)}" for n, v in rejected.items()) + ".")
    if errors:
        lines.append("Handlers failed: " + ", ".join(f"{n} {fmt.count(v)}" for n, v in errors.items()) + ".")
    if services:
        busiest = max(services.items(), key=lambda kv: kv[1].get("peak_instances", 0))
        lines.append(f"The busiest service was {busiest[0]} at {fmt.count(busiest[1].get('peak_instances'))} instances.")

    cons = s.get("conservation") or {}
    if cons:
        bad = {n: c.get("balance") for n, c in (cons.get("subscriptions") or {}).items() if c.get("balance")}
        if cons.get("ok") and not bad:
            lines.append(f"Every message is accounted for in all {len(cons.get('subscriptions') or {})} subscriptions "
                         "(published = acked + dead-lettered + filtered + backlog).")
        else:
            lines.append("Conservation is VIOLATED (messages unaccounted for): "
                         + ", ".join(f"{n} balance {v:+,}" for n, v in bad.items()) + ".")
    return lines
