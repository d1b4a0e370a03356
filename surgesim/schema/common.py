"""Building blocks shared by the three files: durations, rates, ranges, latency distributions."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator

from surgesim.schema.limits import MAX_DURATION_S, MAX_RATE_PER_S

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class Strict(BaseModel):
    """Every model rejects unknown keys: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True,
                              validate_default=True)


def parse_duration(value: Any) -> float:
    """'250ms', '5s', '9m', '1h30m', '7d' or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 5s, 9m or 1h30m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(f"expected a duration such as 250ms, 5s, 9m or 1h30m, got {value!r}")
    else:
        raise ValueError(f"expected a duration such as 5s, 9m or 1h30m, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be finite and >= 0, got {value!r}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"duration must be at most {MAX_DURATION_S / 86400:g}d, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_clock(value: Any) -> float:
    """'07:30' or '07:30:15' -> seconds after midnight."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 07:30 as a sexagesimal integer (450); accept it as minutes.
        return float(value) * 60.0
    if not isinstance(value, str):
        raise ValueError(f"expected a clock time such as '07:30', got {value!r}")
    parts = value.strip().split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected a clock time such as '07:30', got {value!r}") from None
    if len(nums) not in (2, 3) or not (0 <= nums[0] <= 24 and 0 <= nums[1] < 60):
        raise ValueError(f"expected a clock time such as '07:30', got {value!r}")
    seconds = nums[0] * 3600 + nums[1] * 60 + (nums[2] if len(nums) == 3 else 0)
    if seconds > 86400:
        raise ValueError(f"clock time must be within one day, got {value!r}")
    return float(seconds)


def parse_rate(value: Any) -> float:
    """'1600/s', '900/m', '210000/d' or a bare number per second -> events per second."""
    if isinstance(value, bool):
        raise ValueError(f"expected a rate such as 1600/s, got {value!r}")
    if isinstance(value, (int, float)):
        rate = float(value)
    elif isinstance(value, str) and "/" in value:
        amount, _, unit = value.replace(" ", "").partition("/")
        try:
            rate = float(amount) / parse_duration("1" + unit if unit[:1].isalpha() else unit)
        except ValueError:
            raise ValueError(f"expected a rate such as 1600/s, 900/m or 210000/d, got {value!r}") from None
    else:
        raise ValueError(f"expected a rate such as 1600/s, 900/m or 210000/d, got {value!r}")
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"rate must be finite and >= 0, got {value!r}")
    if rate > MAX_RATE_PER_S:
        raise ValueError(f"rate must be at most {MAX_RATE_PER_S:g}/s, got {value!r}")
    return rate


def in_range(lo: float, hi: float, unit: str = ""):
    """An AfterValidator giving Pub/Sub-style bound errors: 'must be 5..100, got 2'."""

    def check(value: float) -> float:
        if not lo <= value <= hi:
            shown = format_duration(value) if unit == "s" else f"{value:g}"
            lo_s = format_duration(lo) if unit == "s" else f"{lo:g}"
            hi_s = format_duration(hi) if unit == "s" else f"{hi:g}"
            raise ValueError(f"must be {lo_s}..{hi_s}, got {shown}")
        return value

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration)]
Clock = Annotated[float, BeforeValidator(parse_clock)]
Rate = Annotated[float, BeforeValidator(parse_rate)]
Fraction = Annotated[float, in_range(0.0, 1.0)]
PositiveInt = Annotated[int, Field(strict=True), in_range(1, 10**9)]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._~%+-]{2,254}$")
_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def _pubsub_name(value: str) -> str:
    """Pub/Sub's own rule for topic and subscription ids."""
    if not _NAME.match(value) or value.lower().startswith("goog"):
        raise ValueError(
            "must be 3-255 characters of letters, digits, - . _ ~ % +, start with a letter "
            f"and not start with 'goog', got {value!r}"
        )
    return value


def _service_id(value: str) -> str:
    """Cloud Run's rule for service and job names (also used for API and workflow ids)."""
    if not _ID.match(value):
        raise ValueError(f"must be lowercase letters, digits and '-', starting with a letter, got {value!r}")
    return value


PubSubName = Annotated[str, AfterValidator(_pubsub_name)]
ServiceId = Annotated[str, AfterValidator(_service_id)]


Z99 = 2.3263478740408408
"""The standard normal's 99th percentile."""
MAX_SIGMA = math.log(1e20) / Z99
"""The widest log-normal a {p50, p99} may give (p99/p50 = 1e20): beyond it the mean
overflows a float, and nothing a system measures is that spread."""

DISTS = ("constant", "lognormal", "exponential", "gamma", "erlang", "uniform", "empirical")
_DIST_KEYS = {
    # dist: (required key sets, any one of which is enough; optional keys)
    "constant": ([{"value"}], set()),
    "lognormal": ([{"p50", "p99"}, {"mean", "cv"}], set()),
    "exponential": ([{"mean"}], set()),
    "gamma": ([{"mean", "cv"}], set()),
    "erlang": ([{"mean", "k"}], set()),
    "uniform": ([{"min", "max"}], set()),
    "empirical": ([{"file"}, {"samples"}, {"histogram"}], set()),
}
_DERIVED = ("p50", "p99", "mean")


def _gamma_cdf(shape: float, x: float) -> float:
    """Regularised lower incomplete gamma P(shape, x), by its power series (the few calls
    the schema makes, for a distribution's p50/p99, need no library)."""
    if x <= 0:
        return 0.0
    term = total = 1.0 / shape
    n = 0
    while abs(term) > 1e-15 * abs(total) and n < 100_000:
        n += 1
        term *= x / (shape + n)
        total += term
    return min(1.0, math.exp(-x + shape * math.log(x) - math.lgamma(shape)) * total)


def _gamma_quantile(shape: float, scale: float, q: float) -> float:
    lo, hi = 0.0, max(1.0, shape) * 4.0
    while _gamma_cdf(shape, hi) < q:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _gamma_cdf(shape, mid) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi) * scale


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def _read_latencies(path: Path) -> tuple[list[float] | None, list[tuple[float, float]] | None]:
    """A CSV of measured latencies: one column of values (one a line), or two columns
    `upper,count` (a histogram: bucket upper bounds and counts). Values are durations
    (`12ms`, `1.5s`) or bare numbers in the header's unit (`latency_ms`, `seconds`...;
    seconds when the header names none). A first line that is not a value is a header."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"empirical file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read empirical file {str(path)!r}: {exc}") from None
    rows = [(n + 1, [c.strip() for c in line.split(",")]) for n, line in enumerate(text.splitlines())
            if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise ValueError(f"empirical file {path.name!r} has no values")
    def is_value(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            pass
        try:
            parse_duration(cell)
            return True
        except ValueError:
            return False

    unit = 1.0
    if not is_value(rows[0][1][0]):
        head = ",".join(rows[0][1]).lower()
        unit = 0.001 if ("ms" in head or "milli" in head) else 1e-6 if ("us" in head or "micro" in head) else 1.0
        rows = rows[1:]
    if not rows:
        raise ValueError(f"empirical file {path.name!r} has no values")
    width = len(rows[0][1])
    for line, cells in rows:
        if len(cells) != width or width not in (1, 2):
            raise ValueError(f"empirical file {path.name!r} line {line}: expected one column of latencies "
                             "or two (upper,count) on every line")

    def value(cell: str, line: int) -> float:
        try:
            v = float(cell) * unit  # a bare number, in the header's unit
        except ValueError:
            try:
                v = parse_duration(cell)
            except ValueError:
                raise ValueError(f"empirical file {path.name!r} line {line}: expected a latency, got {cell!r}") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"empirical file {path.name!r} line {line}: a latency must be finite and >= 0, got {cell!r}")
        return v

    if width == 1:
        return [value(cells[0], line) for line, cells in rows], None
    hist = []
    for line, (up, cnt) in rows:
        try:
            c = float(cnt)
        except ValueError:
            raise ValueError(f"empirical file {path.name!r} line {line}: count must be a number, got {cnt!r}") from None
        hist.append((value(up, line), c))
    return None, hist


def _cdf_points(samples: list[float] | None, histogram: list[tuple[float, float]] | None) -> tuple[list[float], list[float]]:
    """(x, F) of a piecewise-linear CDF: between sorted samples, or uniform within each
    histogram bucket (the first from 0)."""
    if samples is not None:
        xs = sorted(samples)
        if len(xs) == 1:
            return [xs[0], xs[0]], [0.0, 1.0]
        return xs, [i / (len(xs) - 1) for i in range(len(xs))]
    assert histogram is not None
    total = sum(c for _, c in histogram)
    xs, fs, acc = [0.0], [0.0], 0.0
    for up, c in histogram:
        acc += c
        xs.append(up)
        fs.append(acc / total)
    return xs, fs


def _interp(q: float, xs: list[float], fs: list[float]) -> float:
    for i in range(1, len(xs)):
        if fs[i] >= q:
            span = fs[i] - fs[i - 1]
            return xs[i] if span <= 0 else xs[i - 1] + (xs[i] - xs[i - 1]) * (q - fs[i - 1]) / span
    return xs[-1]


class Latency(Strict):
    """A latency distribution, written one of these ways:

    - `5ms` or `{p50: 5ms}`: a constant; `{p50: 20ms, p99: 80ms}`: a log-normal fitted to
      the two percentiles (heavy tails are what make queues interesting);
    - `{dist: constant, value: 5ms}`; `{dist: exponential, mean: 100ms}`;
      `{dist: gamma, mean: 100ms, cv: 0.5}` (cv = standard deviation / mean);
      `{dist: erlang, mean: 100ms, k: 4}` (gamma with cv = 1/sqrt(k));
      `{dist: lognormal, p50: .., p99: ..}` or `{dist: lognormal, mean: .., cv: ..}`;
      `{dist: uniform, min: 10ms, max: 30ms}`;
    - `{dist: empirical, file: latencies.csv}` (measured latencies, path relative to the
      YAML file: one column of values, or `upper,count` rows of a histogram),
      `{dist: empirical, samples: [12ms, 15ms, ...]}` or
      `{dist: empirical, histogram: [[10ms, 40], [20ms, 55], ...]}`; sampled from the
      piecewise-linear CDF through the samples (or uniform within each bucket).

    After validation p50, p99 (None for a constant) and mean are filled for every form:
    the live harness's fakes take a latency as p50/p99."""

    dist: Literal["constant", "lognormal", "exponential", "gamma", "erlang", "uniform", "empirical"] | None = None
    """None: the p50/p99 form (constant without p99, log-normal with it)."""
    p50: Duration | None = None
    """Median (the p50/p99 and lognormal forms); filled for every form."""
    p99: Duration | None = None
    """99th percentile (the p50/p99 and lognormal forms); filled for every form but a constant."""
    mean: Duration | None = None
    """exponential, gamma, erlang, lognormal with cv; filled for every form."""
    cv: float | None = None
    """Coefficient of variation (standard deviation / mean) of gamma and lognormal."""
    k: PositiveInt | None = None
    """Erlang's number of phases."""
    value: Duration | None = None
    """constant: the one value."""
    min: Duration | None = None
    """uniform: lower bound."""
    max: Duration | None = None
    """uniform: upper bound."""
    file: str | None = None
    """Empirical: a CSV of measured latencies, relative to the YAML file that names it."""
    samples: list[Duration] | None = None
    """Empirical: measured latencies (filled from a one-column file)."""
    histogram: list[tuple[Duration, Annotated[float, Field(ge=0)]]] | None = None
    """Empirical: [upper bound, count] per bucket, bounds increasing, the first bucket from 0."""

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        d = dict(data)
        dist = d.get("dist")
        if dist is None:
            given = {k for k in d if k not in ("p50", "p99")}
            if given == {"mean"} and "p50" in d:  # a dumped model read back: mean was derived
                given = set()
                d.pop("mean")
            if given & set(cls.model_fields) - {"dist"}:
                raise ValueError(f"{', '.join(sorted(given))} need a dist (one of {', '.join(DISTS)}); "
                                 "without one a latency is {p50} (constant) or {p50, p99} (log-normal)")
            if "p50" not in d:
                raise ValueError("give p50 (and p99 for a log-normal), or a dist: one of " + ", ".join(DISTS))
            p50 = parse_duration(d["p50"])
            p99 = parse_duration(d["p99"]) if d.get("p99") is not None else None
            if p99 is not None and p99 < p50:
                raise ValueError(f"p99 ({format_duration(p99)}) must be >= p50 ({format_duration(p50)})")
            sigma = math.log(p99 / p50) / Z99 if p99 is not None and p50 > 0 and p99 > p50 else 0.0
            if sigma > MAX_SIGMA:
                raise ValueError(f"p99 ({format_duration(p99)}) is more than 1e20 times p50 "
                                 f"({format_duration(p50)}): no log-normal has that spread; give a dist")
            d["mean"] = p50 * math.exp(sigma ** 2 / 2)
            return d
        if dist not in _DIST_KEYS:
            return d  # the Literal's own error names the choices
        needs, optional = _DIST_KEYS[dist]
        user = {k for k in d if k != "dist"}
        derived = {k for k in _DERIVED if k in user and not any(k in n for n in needs)}
        extra = user - derived - set().union(*needs) - optional
        if extra:
            takes = " or ".join("{" + ", ".join(sorted(n)) + "}" for n in needs)
            raise ValueError(f"{dist} takes {takes}, not {', '.join(sorted(extra))}")
        match = [n for n in needs if n <= user]
        if dist == "empirical" and "file" in user and len(match) == 2:
            match = [n for n in match if n != {"file"}]  # a dumped model: the file was read
        if len(match) != 1:
            takes = " or ".join("{" + ", ".join(sorted(n)) + "}" for n in needs)
            got = ", ".join(sorted(user)) or "nothing"
            raise ValueError(f"{dist} takes {takes}, got {got}")
        form = match[0]
        for k in derived:  # a dumped model read back carries its p50/p99/mean
            d.pop(k)

        def dur(key: str) -> float:
            return parse_duration(d[key])

        def positive(key: str) -> float:
            v = _number(d[key], key)
            if v <= 0:
                raise ValueError(f"{dist}: {key} must be > 0, got {d[key]!r}")
            return v

        if dist == "constant":
            v = dur("value")
            d.update(p50=v, p99=None, mean=v)
        elif dist == "exponential":
            m = dur("mean")
            d.update(p50=m * math.log(2.0), p99=m * math.log(100.0))
        elif dist in ("gamma", "erlang"):
            m = dur("mean")
            if dist == "erlang":
                k = d["k"]
                if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                    raise ValueError(f"erlang: k must be a whole number >= 1, got {k!r}")
                shape = float(k)
            else:
                shape = 1.0 / positive("cv") ** 2
            if m <= 0:
                raise ValueError(f"{dist}: mean must be > 0, got {d['mean']!r}")
            d.update(p50=_gamma_quantile(shape, m / shape, 0.5), p99=_gamma_quantile(shape, m / shape, 0.99))
        elif dist == "lognormal":
            if form == {"p50", "p99"}:
                p50, p99 = dur("p50"), dur("p99")
                if p99 < p50:
                    raise ValueError(f"p99 ({format_duration(p99)}) must be >= p50 ({format_duration(p50)})")
                if p50 <= 0:
                    raise ValueError("lognormal: p50 must be > 0")
                sigma = math.log(p99 / p50) / Z99
                d["mean"] = p50 * math.exp(sigma ** 2 / 2)
            else:
                m, cv = dur("mean"), positive("cv")
                if m <= 0:
                    raise ValueError(f"lognormal: mean must be > 0, got {d['mean']!r}")
                sigma = math.sqrt(math.log1p(cv * cv))
                p50 = m * math.exp(-sigma * sigma / 2)
                d.update(p50=p50, p99=p50 * math.exp(Z99 * sigma))
        elif dist == "uniform":
            lo, hi = dur("min"), dur("max")
            if hi < lo:
                raise ValueError(f"uniform: max ({format_duration(hi)}) must be >= min ({format_duration(lo)})")
            d.update(p50=(lo + hi) / 2, p99=lo + 0.99 * (hi - lo), mean=(lo + hi) / 2)
        else:  # empirical
            samples = hist = None
            if form == {"file"}:
                if not isinstance(d["file"], str) or not d["file"]:
                    raise ValueError(f"empirical: file must be a path, got {d['file']!r}")
                base = (info.context or {}).get("base_dir") if info is not None else None
                path = Path(d["file"]) if base is None else Path(base) / d["file"]
                samples, hist = _read_latencies(path)
                if samples is not None:
                    d["samples"] = samples
                else:
                    d["histogram"] = hist
            elif form == {"samples"}:
                if not isinstance(d["samples"], list) or not d["samples"]:
                    raise ValueError("empirical: samples must be a non-empty list of latencies")
                samples = [parse_duration(v) for v in d["samples"]]
            else:
                raw = d["histogram"]
                if not isinstance(raw, list) or not raw:
                    raise ValueError("empirical: histogram must be a non-empty list of [upper bound, count]")
                hist = []
                for row in raw:
                    if not isinstance(row, (list, tuple)) or len(row) != 2:
                        raise ValueError(f"empirical: each histogram row is [upper bound, count], got {row!r}")
                    hist.append((parse_duration(row[0]), _number(row[1], "a histogram count")))
            if hist is not None:
                uppers = [u for u, _ in hist]
                if any(b <= a for a, b in zip(uppers, uppers[1:])):
                    raise ValueError("empirical: histogram bucket bounds must increase")
                if any(c < 0 for _, c in hist) or sum(c for _, c in hist) <= 0:
                    raise ValueError("empirical: histogram counts must be >= 0 and not all 0")
            if samples is not None and any(v < 0 for v in samples):
                raise ValueError("empirical: latencies must be >= 0")
            xs, fs = _cdf_points(samples, hist)
            area = sum((xs[i] + xs[i - 1]) / 2 * (fs[i] - fs[i - 1]) for i in range(1, len(xs)))
            d.update(p50=_interp(0.5, xs, fs), p99=_interp(0.99, xs, fs), mean=area)
        return d

    @property
    def sigma(self) -> float:
        """Log-normal shape of the p50/p99 form: p99 = p50 * exp(2.326 * sigma)."""
        if self.p99 is None or not self.p50 or self.p99 == self.p50:
            return 0.0
        return math.log(self.p99 / self.p50) / Z99

    def cdf_points(self) -> tuple[list[float], list[float]]:
        """Empirical: (x, F) of the piecewise-linear CDF the simulator samples."""
        return _cdf_points(self.samples, self.histogram)


def latency(value: Any) -> Any:
    """Allow the shorthand `latency: 5ms` for a constant."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return {"p50": value}
    return value


LatencySpec = Annotated[Latency, BeforeValidator(latency)]
