"""examples/greetings/slow_api.yaml's windows (scenario seconds), shared by its simulator test
(tests/unit/test_example_greetings_sim.py) and its live test (tests/integration/test_example_greetings.py):
before the fault, the ramp's three thirds, the fault held, and after it."""

from __future__ import annotations

WINDOWS = {"before": (0, 10), "first": (10, 20), "middle": (20, 30), "last": (30, 40), "held": (40, 55)}


def lag_p50s(run, after: tuple[float, float]) -> dict[str, float]:
    """The push subscription's lag p50 in each window of a loaded run directory."""
    out = {}
    for name, (a, b) in {**WINDOWS, "after": after}.items():
        h = run.histogram("lag/greetings-push", a, b)
        assert h.count >= 10, (name, a, b, h.count)
        out[name] = h.percentile(50)
    return out
