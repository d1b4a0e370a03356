"""A relational database (Cloud SQL) behind the services' connection pools.

Two resources in series, both first-come-first-served in the order operations reach
the database:

- the pool: `pool_size` connections. An operation waits for the earliest free one (a
  heap of their free times, the Kiefer-Wolfowitz recursion the services use), or fails
  after `pool_timeout` without one;
- the primary's write log: it commits `write_capacity` rows a second. An operation that
  writes k rows commits no earlier than k / write_capacity after the previous commit,
  and holds its connection until then.

Below saturation the log is idle when an operation is ready, so an operation costs its
own latency.

Each route's operations of a step reach the database in a call of their own, so one call
may hold operations earlier than the last one the log committed (two routes, one step). Such
an operation waits for the log's backlog as it stood at the latest time the log has seen
(`log_free - last`), not behind the absolute commit times of operations that were in truth
later than it: without this, at 1/s and below, an operation of the second route of a step
waited for the first route's last commit, up to a whole step (an assign_driver p50 of
0.67 s with 2 s steps where its own latency is ~10 ms). In time order (one call) it is the
plain recursion. Past it, commits queue, connections stay held, the pool empties and
requests queue for a connection: the wait grows by (offered - capacity) / capacity
seconds every second, as a saturated queue does, until `pool_timeout`."""

from __future__ import annotations

import heapq

import numpy as np


class SqlDb:
    def __init__(self, spec):
        self.spec = spec
        self.free = [0.0] * spec.pool_size  # connections' free times, a heap
        self.log_free = 0.0  # when the write log next takes a commit
        self.last = 0.0  # the latest time an operation reached the write log
        self.gap = 1.0 / spec.write_capacity
        self.totals = {"ops": 0, "writes": 0, "timed_out": 0, "waited": 0}
        self.max_pool_wait = 0.0

    def run(self, tt: np.ndarray, svc: np.ndarray, writes: int) -> tuple[np.ndarray, np.ndarray]:
        """For operations reaching the database at tt with their own latencies svc, each
        writing `writes` rows: the time each takes (pool wait + run + commit wait) and
        whether it got a connection."""
        n = tt.shape[0]
        lat = np.empty(n)
        ok = np.ones(n, dtype=bool)
        free = self.free
        timeout = self.spec.pool_timeout
        commit_gap = writes * self.gap
        log_free = self.log_free
        last = self.last
        waited = 0
        wmax = self.max_pool_wait
        order = np.argsort(tt, kind="stable").tolist()
        t_l, s_l = tt.tolist(), svc.tolist()
        for i in order:
            t = t_l[i]
            start = free[0]
            if start <= t:
                start = t
            else:
                wait = start - t
                if wait > timeout:  # the pool gives up; the connection was never taken
                    lat[i] = timeout
                    ok[i] = False
                    continue
                waited += 1
                if wait > wmax:
                    wmax = wait
            done = start + s_l[i]
            if writes:
                ref = done if done > last else last
                if log_free > ref:  # the backlog the log holds at `ref`, this operation's wait
                    done += log_free - ref
                else:
                    log_free = ref
                log_free += commit_gap
                last = ref
            heapq.heapreplace(free, done)
            lat[i] = done - t
        self.log_free = log_free
        self.last = last
        self.max_pool_wait = wmax
        timed_out = int(n - ok.sum())
        self.totals["ops"] += n - timed_out
        self.totals["writes"] += (n - timed_out) * writes
        self.totals["timed_out"] += timed_out
        self.totals["waited"] += waited
        return lat, ok
