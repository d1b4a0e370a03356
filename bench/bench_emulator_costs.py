"""What the emulators themselves cost, and who uses the CPU during a live run.

    .venv/bin/python bench/bench_emulator_costs.py pulls             # Pub/Sub: emulator CPU per empty gRPC pull
    .venv/bin/python bench/bench_emulator_costs.py commits           # Firestore: commits/s and latency vs concurrency
    .venv/bin/python bench/bench_emulator_costs.py hot               # Firestore: hot-document writers vs a probe's latency
    .venv/bin/python bench/bench_emulator_costs.py cpu -- .venv/bin/surgesim live scenarios/dispatch_wave.yaml --out /tmp/dw

``pulls``, ``commits`` and ``hot`` start the one emulator they need on free ports
(127.0.0.1) and stop it at the end. ``cpu`` runs the command and samples every process's
CPU once a second (psutil), then prints the cores each group used per 10 s and over the
run (docs/benchmarks/live.md, docs/emulators.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import psutil


def _stack(only: str):
    from surgesim.emulators import stack as st
    from surgesim.emulators.process import free_port

    ports = {"pubsub": free_port(), "firestore": free_port(), "firestore_events": free_port()}
    state_dir = tempfile.mkdtemp(prefix="surgesim-costs-")
    return st.up(only=only, ports=ports, project="costs", state_dir=state_dir), st, state_dir


def _jvm(port: int) -> psutil.Process:
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "java" in cmd and str(port) in cmd:
            return p
    raise RuntimeError(f"no emulator JVM listening on {port}")


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


async def pulls(endpoint: str, jvm: psutil.Process, rates: list[float], seconds: float) -> None:
    from surgesim.emulators.pubsub_grpc import PubSubGrpc
    from surgesim.emulators.pubsub_rest import PubSubRest

    rest, grpc_client = PubSubRest(endpoint, "costs"), PubSubGrpc(endpoint, "costs")
    await rest.ensure_topic("costs-topic")
    await rest.create_subscription("costs-sub", "costs-topic", ack_deadline=10)
    for k, rate in enumerate([100.0] + rates):  # the first level only warms the JVM up
        c0, t0, n = _cpu(jvm), time.time(), 0
        while time.time() - t0 < seconds:
            await grpc_client.pull("costs-sub", 1000)
            n += 1
            await asyncio.sleep(1 / rate)
        d, used = time.time() - t0, _cpu(jvm) - c0
        if k == 0:
            continue
        print(f"{n / d:6.0f} empty pulls/s: emulator {used / d:.3f} core, {1000 * used / n:.2f} ms CPU per pull", flush=True)
    await grpc_client.aclose()
    await rest.aclose()


async def _two_doc_commit(db, fs_writes) -> float:
    b, k = db.batch(), uuid.uuid4().hex
    fs_writes.create(b, db.collection("claims").document(k), {"state": "busy", "n": 1})
    fs_writes.create(b, db.collection("billing").document(k), {"amount": 3, "parcel": k})
    t = time.perf_counter()
    await b.commit()
    return time.perf_counter() - t


async def commits(levels: list[int], seconds: float) -> None:
    from google.cloud import firestore

    from surgesim.services.common import fs_writes

    db = firestore.AsyncClient(project="costs")
    for k, c in enumerate([4] + levels):  # the first level only warms the JVM up
        lat: list[float] = []
        end = time.perf_counter() + seconds

        async def worker():
            while time.perf_counter() < end:
                lat.append(await _two_doc_commit(db, fs_writes))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        if k == 0:
            continue
        d, a = time.perf_counter() - t0, np.array(lat) * 1000
        print(f"{c:3d} in flight: {len(lat) / d:7.1f} two-document commits/s, p50 {np.percentile(a, 50):6.1f} ms, "
              f"p99 {np.percentile(a, 99):6.1f} ms", flush=True)


async def hot(specs: list[tuple[int, int]], seconds: float) -> None:
    from google.cloud import firestore

    from surgesim.services.common import fs_writes

    db = firestore.AsyncClient(project="costs")
    for writers, docs in specs:
        end, done, probe = time.perf_counter() + seconds, [0], {"get": [], "commit": []}

        async def writer():
            i = 0
            while time.perf_counter() < end:
                i += 1
                b = db.batch()
                b.create(db.collection("dedupe").document(uuid.uuid4().hex), {"x": 1})
                b.set(db.collection("drivers").document(f"d{i % docs}"), {"score": firestore.Increment(1)}, merge=True)
                await b.commit()
                done[0] += 1

        async def prober():  # a command-like read then write, 20 a second
            while time.perf_counter() < end:
                refs = [db.collection("parcels").document(uuid.uuid4().hex)]
                t = time.perf_counter()
                _ = [s async for s in db.get_all(refs)]
                probe["get"].append(time.perf_counter() - t)
                probe["commit"].append(await _two_doc_commit(db, fs_writes))
                await asyncio.sleep(0.05)

        await asyncio.gather(prober(), *(writer() for _ in range(writers)))
        g, c = np.array(probe["get"]) * 1000, np.array(probe["commit"]) * 1000
        print(f"{writers:3d} writers on {docs:4d} documents: {done[0] / seconds:6.0f} commits/s | probe BatchGet p50 "
              f"{np.percentile(g, 50):5.1f} / p99 {np.percentile(g, 99):5.1f} ms, commit p50 {np.percentile(c, 50):5.1f} / "
              f"p99 {np.percentile(c, 99):5.1f} ms", flush=True)


def _group(cmd: str) -> str:
    for key in ("pubsub-emulator", "cloud-firestore-emulator", "bqemulator", "loadgen_proc", "surgesim live"):
        if key in cmd:
            return key
    if "surgesim.services" in cmd:
        return cmd.split()[-1].rsplit(".", 1)[-1]
    return "other"


def cpu(command: list[str]) -> int:
    """Run ``command``; per-process CPU once a second, grouped; cores per 10 s and CPU-s in all."""
    proc = subprocess.Popen(command)
    samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
    while True:
        rows = {}
        for p in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
            try:
                t = p.info["cpu_times"]
                rows[p.info["pid"]] = (_group(" ".join(p.info["cmdline"] or [])), t.user + t.system)
            except (psutil.Error, TypeError):
                continue
        samples.append((time.time(), rows))
        if proc.poll() is not None:
            break
        time.sleep(1.0)
    per_s = []
    for (t0, a), (t1, b) in zip(samples, samples[1:]):
        use = collections.Counter()
        for pid, (g, c) in b.items():
            if pid in a:
                use[g] += (c - a[pid][1]) / (t1 - t0)
        per_s.append(use)
    groups = ["surgesim live", "pubsub-emulator", "cloud-firestore-emulator", "loadgen_proc"]
    print("cores per 10 s:  all | " + " | ".join(groups))
    for i in range(0, len(per_s), 10):
        chunk = per_s[i:i + 10]
        mean = lambda g: sum(u.get(g, 0.0) for u in chunk) / len(chunk)  # noqa: E731
        print(f"+{i:4d} s  {sum(sum(u.values()) for u in chunk) / len(chunk):4.2f} | "
              + " | ".join(f"{mean(g):4.2f}" for g in groups))
    total = collections.Counter()
    for u in per_s:
        total.update(u)
    print("CPU-s over the run: " + ", ".join(f"{g} {v:.1f}" for g, v in total.most_common(8)))
    return proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["pulls", "commits", "hot", "cpu"])
    ap.add_argument("--seconds", type=float, default=5.0, help="per level (pulls, commits, hot)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="cpu: the command to run, after --")
    a = ap.parse_args()
    if a.what == "cpu":
        cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
        if not cmd:
            ap.error("cpu needs a command after --")
        return cpu(cmd)
    stack, st, state_dir = _stack("pubsub" if a.what == "pulls" else "firestore")
    try:
        if a.what == "pulls":
            port = int(stack.endpoint("pubsub").rsplit(":", 1)[1])
            asyncio.run(pulls(stack.endpoint("pubsub"), _jvm(port), [10, 30, 50, 100, 200], a.seconds))
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = stack.endpoint("firestore")
            if a.what == "commits":
                asyncio.run(commits([1, 2, 4, 8, 16, 32, 64], a.seconds))
            else:
                asyncio.run(hot([(0, 1), (8, 1000), (32, 1000), (8, 5), (32, 5), (32, 1)], a.seconds))
    finally:
        st.down(state_dir=state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
