"""Speed of the traffic model and the fleet: what the engine and the live harness call per step.

    .venv/bin/python bench/bench_traffic.py      (results: docs/benchmarks/traffic.md)
"""
import time
import numpy as np
from surgesim.schema import load_experiment
from surgesim.sim import traffic as tr
exp = load_experiment("scenarios/dispatch_wave.yaml")
src = {s.name: s for s in exp.scenario.traffic.sources}
def best(f, n=5):
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return min(ts)
rng=np.random.default_rng(0)
print("rate_series 86400 steps     %.4f s" % best(lambda: tr.rate_series(exp, src["create_shipment"], 0, 1, 86400)))
print("arrival_counts 86400 steps  %.4f s" % best(lambda: tr.arrival_counts(exp, src["gps"], 0, 1, 86400, rng)))
print("arrival_times 1 h dispatch  %.4f s" % best(lambda: tr.arrival_times(exp, src["dispatch"], 0, 3600, rng)))
print("arrival_times 9 min wave mark_delivered (~450k)  %.4f s" % best(lambda: tr.arrival_times(exp, src["mark_delivered"], 5400, 5940, rng), 3))
from surgesim.sim.fleet import Fleet
f=Fleet(8200, 1)
print("Fleet(8200).step(5)         %.4f s" % best(lambda: f.step(5.0), 20))
ids=np.arange(8200)
print("Fleet.pings(8200 ids)       %.4f s" % best(lambda: f.pings(ids, 1.7e9), 3))
