"""An external API's calls under dependency_latency in the simulator: at once, or ramped."""

from __future__ import annotations

import numpy as np
import pytest

from surgesim.schema import Fault
from surgesim.schema.system import ExternalApi
from surgesim.sim.deps import Api


def calls(*faults: Fault, tt: np.ndarray) -> np.ndarray:
    api = Api(None, ExternalApi(name="sms-gateway", latency="200ms"), list(faults))
    lat, ok = api.call(tt, timeout=None, rng=np.random.default_rng(3))
    assert ok.all()
    return lat


def test_a_ramp_moves_each_calls_latency_linearly_from_the_apis_to_the_faults():
    f = Fault(kind="dependency_latency", target="sms-gateway", at=100, duration=1200, ramp=600, latency="6s")
    tt = np.array([0.0, 99.9, 100.0, 250.0, 400.0, 700.0, 1000.0, 1299.9, 1300.0])
    lat = calls(f, tt=tt)
    assert lat == pytest.approx([0.2, 0.2, 0.2, 0.2 + 0.25 * 5.8, 0.2 + 0.5 * 5.8, 6.0, 6.0, 6.0, 0.2])


def test_without_a_ramp_the_fault_is_there_at_once():
    f = Fault(kind="dependency_latency", target="sms-gateway", at=100, duration=600, latency="6s")
    assert calls(f, tt=np.array([99.0, 100.0, 101.0, 700.0])) == pytest.approx([0.2, 6.0, 6.0, 0.2])


def test_a_ramped_log_normal_is_a_mix_of_draws_whose_mean_moves_linearly():
    f = Fault(kind="dependency_latency", target="sms-gateway", at=0, duration=1000, ramp=1000,
              latency={"p50": "6s", "p99": "9s"})
    n = 20000
    lat = calls(f, tt=np.full(n, 500.0))  # halfway: half the API's 200 ms, half the fault's draw
    fault_mean = 6.0 * np.exp(0.5 * (np.log(1.5) / 2.326) ** 2)
    assert lat.mean() == pytest.approx(0.5 * 0.2 + 0.5 * fault_mean, rel=0.01)
    assert lat.min() > 0.1 + 0.5 * 6.0 * np.exp(-5 * np.log(1.5) / 2.326)
