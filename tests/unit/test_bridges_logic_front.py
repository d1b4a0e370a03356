"""Admission, cold starts and scale-down of the Cloud Run front, with a fake clock."""

from __future__ import annotations

import asyncio
import random

from surgesim.emulators.front import FrontSettings, Slots, cold_start_sample


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_fills_instances_then_scales_out_then_refuses():
    clock = Clock()
    s = Slots(FrontSettings(concurrency=2, max_instances=2, cold_start_p50=1.0, cold_start_p99=None), clock=clock)
    got = [s.try_acquire() for _ in range(5)]
    assert [g is not None for g in got] == [True, True, True, True, False]
    assert [round(g[1], 3) for g in got[:4]] == [1.0, 1.0, 1.0, 1.0]  # both instances were cold
    assert s.cold_starts == 2 and len(s.instances) == 2


def test_min_instances_are_warm_and_idle_ones_scale_down_to_min():
    clock = Clock()
    s = Slots(FrontSettings(concurrency=1, max_instances=5, min_instances=1, scale_down_delay=10,
                            cold_start_p50=2.0, cold_start_p99=None), clock=clock)
    inst, delay = s.try_acquire()
    assert delay == 0.0 and s.cold_starts == 0
    second, delay2 = s.try_acquire()
    assert delay2 == 2.0 and len(s.instances) == 2
    asyncio.run(s.release(inst))
    asyncio.run(s.release(second))
    clock.t += 11
    assert s.scale_down() == 1 and len(s.instances) == 1


def test_pending_request_gets_slot_when_one_frees_or_times_out():
    async def scenario():
        s = Slots(FrontSettings(concurrency=1, max_instances=1, cold_start_p50=0, cold_start_p99=None,
                                pending_timeout=0.05))
        inst, _ = s.try_acquire()
        assert await s.acquire() is None  # times out: 429
        waiter = asyncio.create_task(s.acquire())
        await asyncio.sleep(0)
        await s.release(inst)
        assert (await waiter) is not None

    asyncio.run(scenario())


def test_cold_start_lognormal_matches_p50_and_p99():
    rng = random.Random(1)
    xs = sorted(cold_start_sample(rng, 1.5, 4.0) for _ in range(20000))
    assert abs(xs[10000] - 1.5) < 0.05
    assert abs(xs[19800] - 4.0) < 0.3
