"""Building blocks shared by the three files: durations, rates, ranges, latency distributions."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

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


class Latency(Strict):
    """A latency distribution. With p99 it is a log-normal fitted to p50 and p99;
    without it, a constant. Heavy tails are what make queues interesting, so log-normal
    is the default rather than exponential."""

    p50: Duration
    p99: Duration | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "Latency":
        if self.p99 is not None and self.p99 < self.p50:
            raise ValueError(f"p99 ({format_duration(self.p99)}) must be >= p50 ({format_duration(self.p50)})")
        return self

    @property
    def sigma(self) -> float:
        """Log-normal shape: p99 = p50 * exp(2.326 * sigma)."""
        if self.p99 is None or self.p50 <= 0 or self.p99 == self.p50:
            return 0.0
        return math.log(self.p99 / self.p50) / 2.3263478740408408

    @property
    def mean(self) -> float:
        return self.p50 * math.exp(self.sigma**2 / 2)


def latency(value: Any) -> Any:
    """Allow the shorthand `latency: 5ms` for a constant."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return {"p50": value}
    return value


LatencySpec = Annotated[Latency, BeforeValidator(latency)]
