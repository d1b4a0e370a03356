"""How numbers read in a report: clock times, durations, counts, money, SLO margins."""

from __future__ import annotations

import math

from surgesim.schema.scenario import Slo

DAY = 86400.0
TIME_METRICS = {"latency", "lag", "oldest_unacked", "bigquery_job"}


def clock(seconds: float, with_day: bool = False) -> str:
    """Scenario clock seconds -> 'HH:MM' (with '+1d' past midnight of the first day)."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(round(seconds))
    day, rest = divmod(s, int(DAY))
    if with_day and day == 1 and rest == 0:
        return "24:00"  # the end of a run that covers a whole day
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}"
    return f"{text} +{day}d" if day and with_day else text


def duration(seconds: float | None) -> str:
    """Seconds -> '850 ms', '12.5 s', '7 min 30 s', '3 h' (a reader's units)."""
    if seconds is None or (isinstance(seconds, float) and not math.isfinite(seconds)):
        return "—"
    s = float(seconds)
    if s == 0:
        return "0 s"
    if s < 1:
        return f"{s * 1000:.3g} ms"
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        m, r = divmod(round(s), 60)
        return f"{m} min {r} s" if r else f"{m} min"
    h, r = divmod(round(s / 60), 60)
    return f"{h} h {r} min" if r else f"{h} h"


def ms(seconds: float | None) -> str:
    """Latency in milliseconds, three significant figures."""
    if seconds is None or not math.isfinite(float(seconds)):
        return "—"
    v = float(seconds) * 1000
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def count(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    v = float(value)
    return f"{v:,.0f}" if abs(v - round(v)) < 1e-9 or abs(v) >= 100 else f"{v:,.2f}"


def money(value: float | None, currency: str = "USD") -> str:
    if value is None:
        return "—"
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency, currency + " ")
    return f"{symbol}{value:,.2f}"


def percent(fraction: float | None) -> str:
    if fraction is None or not math.isfinite(fraction):
        return "—"
    return f"{fraction * 100:+.1f}%"


def parse_slo(text: str) -> Slo | None:
    try:
        return Slo.model_validate(text)
    except Exception:  # noqa: BLE001 -- a text the schema no longer accepts still shows, without a threshold
        return None


def slo_is_time(slo: Slo | None) -> bool:
    return slo is not None and (slo.metric in TIME_METRICS or slo.func == "drain")


def slo_value(slo: Slo | None, value: float | None) -> str:
    if value is None:
        return "never drained" if slo is not None and slo.func == "drain" else "no data"
    return duration(value) if slo_is_time(slo) else count(value)


def slo_margin(slo: Slo | None, observed: float | None, holds: bool) -> str:
    """How far from the threshold, in words a reader can act on."""
    if slo is None or observed is None:
        return ""
    thr = slo.threshold
    if slo.op == "==":
        return "as required" if holds else f"off by {slo_value(slo, abs(observed - thr))}"
    gap = observed - thr
    if thr:
        rel = f" ({abs(gap) / abs(thr) * 100:.0f}%)"
    else:
        rel = ""
    word = "under" if gap < 0 else "over" if gap > 0 else "at"
    if word == "at":
        return "exactly at the threshold"
    return f"{slo_value(slo, abs(gap))} {word}{rel}"
