"""M/M/c and M/D/c queues written as the three files, and their theory: Erlang C, and the
exact M/D/c from its embedded chain. Shared by the tests and bench/bench_sim.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SERVICE_MEAN_S = 0.1


def erlang_c(c: int, offered: float) -> float:
    """P(an arrival waits) in M/M/c with offered load a = lambda/mu (a < c)."""
    rho = offered / c
    term, below = 1.0, 1.0  # a^k / k!, summed for k < c
    for k in range(1, c):
        term *= offered / k
        below += term
    top = term * offered / c / (1 - rho)
    return top / (below + top)


def mmc_theory(c: int, rho: float, mean_s: float = SERVICE_MEAN_S) -> tuple[float, float]:
    """(mean wait, P(wait)) of M/M/c."""
    pw = erlang_c(c, rho * c)
    return pw * mean_s / (c * (1 - rho)), pw


def mdc_theory(c: int, rho: float, d_s: float = SERVICE_MEAN_S) -> tuple[float, float]:
    """(mean wait, P(wait)) of M/D/c, exactly: with deterministic service D the number in
    system obeys N(t+D) = max(N(t) - c, 0) + Poisson(lambda D) at any t (whoever is in
    service at t leaves by t+D, whoever waits at t is still there), so its stationary law
    is that chain's; arrivals see it (PASTA): P(wait) = P(N >= c), Lq = E[(N - c)+],
    Wq = Lq / lambda (Little)."""
    a = rho * c
    size = c + int(60 * math.sqrt(a) / (1 - rho)) + 200
    k = np.arange(size)
    pois = np.exp(k * math.log(a) - a - np.array([math.lgamma(i + 1) for i in k])) if a > 0 else (k == 0) * 1.0
    P = np.zeros((size, size))
    for n in range(size):
        base = max(n - c, 0)
        row = pois[: size - base]
        P[n, base:] = row
        P[n, -1] += 1.0 - row.sum()  # what falls past the truncation stays at its edge
    A = P.T - np.eye(size)
    A[-1, :] = 1.0
    rhs = np.zeros(size)
    rhs[-1] = 1.0
    pi = np.linalg.solve(A, rhs)
    pi = np.clip(pi, 0.0, None)
    pi /= pi.sum()
    lq = float((np.maximum(k - c, 0) * pi).sum())
    return lq / (a / d_s), float(pi[c:].sum())


SYSTEM = """name: queue
description: one service, c single-slot instances
project: queue-local
services:
  - name: server
    routes:
      - name: work
        path: /work
        steps:
          - cpu: {cpu}
"""
PLAN = """name: fixed
description: exactly c single-slot instances
services:
  server: {{min_instances: {c}, max_instances: {c}, concurrency: 1, pending_timeout: 600s}}
"""
SCENARIO = """name: {name}
system: system.yaml
plan: plan.yaml
seed: {seed}
duration: {duration}s
step: {step}s
traffic:
  sources:
    - {{name: arrivals, rate: {rate}/s, request: {{service: server, route: work}}}}
slos:
  - mean(wait.server) < 1000s
"""


def write_case(where: Path, *, c: int, rho: float, service: str = "exponential", step: float = 1.0,
               duration: float = 3600.0, seed: int = 1, mean_s: float = SERVICE_MEAN_S) -> Path:
    """The three files of a queue with c slots at utilisation rho; returns the scenario's path.
    service: 'exponential' (M/M/c) or 'constant' (M/D/c)."""
    where.mkdir(parents=True, exist_ok=True)
    cpu = f"{{dist: exponential, mean: {mean_s * 1000:g}ms}}" if service == "exponential" else f"{mean_s * 1000:g}ms"
    (where / "system.yaml").write_text(SYSTEM.format(cpu=cpu))
    (where / "plan.yaml").write_text(PLAN.format(c=c))
    rate = rho * c / mean_s
    path = where / "scenario.yaml"
    path.write_text(SCENARIO.format(name="queue", seed=seed, duration=duration, step=step, rate=f"{rate:.6g}"))
    return path
