"""How fast hostile files are refused: size before reading, node count while parsing.

    .venv/bin/python bench/bench_parse_limits.py      (results: docs/benchmarks.md, "file limits")

Each case runs `validate_file` in a fresh process and reports its wall and CPU time (CPU is
the better guide on a loaded machine) and the peak RSS of that process (ru_maxrss: the
interpreter and its imports are included in every row)."""
import os
import subprocess
import sys
import tempfile
import textwrap

from surgesim.schema.loading import MAX_BYTES, MAX_NODES

CHILD = textwrap.dedent("""
    import resource, sys, time
    from surgesim.schema import SchemaError, validate_file
    t, c = time.perf_counter(), time.process_time()
    try:
        validate_file(sys.argv[1]); msg = "valid"
    except SchemaError as exc:
        msg = exc.problems[0]
    dt, cpu = time.perf_counter() - t, time.process_time() - c
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{dt * 1000:8.1f} ms wall {cpu * 1000:8.1f} ms CPU {rss:6.0f} MB  {msg[:90]}")
""")


def case(label: str, path: str) -> None:
    size = os.path.getsize(path)
    out = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True, check=True).stdout.strip()
    print(f"{label:<44} {size / 2**20:8.2f} MiB {out}")


with tempfile.TemporaryDirectory() as d:
    # The file: 54 MB, 1.4 M small items (refused by size, before reading).
    big = os.path.join(d, "big.yaml")
    with open(big, "w") as f:
        f.write("name: x\nitems:\n")
        f.write("  - {k: 12345678901234567890123456789}\n" * 1_400_000)
    case("54 MB, 1.4 M items (issue 20)", big)
    # Just under the byte limit, as many nodes as fit: refused by the streaming node count.
    dense = os.path.join(d, "dense.yaml")
    with open(dense, "w") as f:
        f.write("name: x\nitems: [" + "0," * ((MAX_BYTES - 32) // 2) + "0]\n")
    case(f"{MAX_BYTES // 2**20} MiB of '0,' ({(MAX_BYTES - 32) // 2:,} items)", dense)
    # Just over the node limit.
    edge = os.path.join(d, "edge.yaml")
    with open(edge, "w") as f:
        f.write("name: x\nitems: [" + "0," * (MAX_NODES + 1) + "0]\n")
    case(f"{MAX_NODES + 2:,} items", edge)
    case("seed system (meridian.yaml)", "scenarios/systems/meridian.yaml")
    case("seed scenario + system + plan", "scenarios/dispatch_wave.yaml")
