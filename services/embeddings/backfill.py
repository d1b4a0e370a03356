"""The embedding backfill's task: one Cloud Run Job task embeds its shard of the corpus.

    python -m surgesim.services.embeddings.backfill --database embeddings [--items N] ...

Its shard is contiguous: of `items` documents, task i of CLOUD_RUN_TASK_COUNT takes
`shard(items, i, count)` (the first items % count tasks one more, as the simulator splits
them). It reads which of its documents already have a vector (a previous attempt's work),
embeds the rest in batches through EMBEDDING_API_URL (`POST /v1/embeddings`), and writes them
with `INSERT ... ON CONFLICT (doc_no) DO NOTHING`: a retried or re-run task resumes where the
last one stopped and never duplicates a row, even if two attempts overlap.

The API's 429 is waited out for its Retry-After; a 5xx or a dropped connection is retried
with exponential backoff (jitter) up to --call-attempts, after which the task exits 1 and
Cloud Run retries it (up to max_retries). At the end it checks its work: the shard's row
count is the shard's size, and the vector the API gave for one of its texts, searched among
all rows, finds that very document as its nearest neighbour (cosine, pgvector `<=>`);
either failing exits 2.

The corpus is synthetic and deterministic (document n's text is the same in every process),
so a shard can be re-read from nothing; a real job would read a table or bucket here.
Counters (rows written, API calls, 429s, back-off seconds, ...) go to the file named by
SURGESIM_TASK_COUNTERS when the harness gives one (surgesim/live/jobs.py).

Every variable: CLOUD_RUN_TASK_INDEX / COUNT / ATTEMPT (Cloud Run), EMBEDDING_API_URL,
PGHOST / PGPORT / PGUSER (libpq), SURGESIM_JOB_ITEMS and SURGESIM_JOB_BATCH_SIZE (the live
harness: the job's items at the run's volume, its batch size).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import httpx

TABLE = "doc_embeddings"
WORDS = ("harbour lantern copper meadow signal orchard granite velvet ember tundra quarry "
         "falcon mosaic cobalt prairie saffron glacier nectar basalt willow cipher beacon "
         "thistle marble canyon pepper lagoon sparrow walnut comet").split()


def shard(items: int, index: int, count: int) -> range:
    """Task `index`'s documents: contiguous, sizes differing by at most one, covering
    0..items-1 exactly once over all tasks (the first items % count tasks get one more)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"task index {index} of {count}")
    base, extra = divmod(items, count)
    start = index * base + min(index, extra)
    return range(start, start + base + (1 if index < extra else 0))


def batches(docs: Iterable[int], size: int) -> Iterator[list[int]]:
    batch: list[int] = []
    for d in docs:
        batch.append(d)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def todo(part: range, done: Iterable[int]) -> list[int]:
    """The shard's documents not yet written, in order (what a resumed attempt embeds)."""
    have = set(done)
    return [d for d in part if d not in have]


def text_of(doc_no: int) -> str:
    """Document n's text: the same in every process (seeded by n), 8 to 24 words, unique."""
    rng = random.Random(doc_no)
    return f"document {doc_no}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24)))


def vector_literal(v: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


@dataclass
class Counters:
    shard_size: int = 0
    already_done: int = 0
    rows_written: int = 0
    batches: int = 0
    api_calls: int = 0
    api_429: int = 0
    api_errors: int = 0
    backoff_s: float = 0.0
    nearest_neighbour_ok: int = 0


class ApiGaveUp(RuntimeError):
    pass


class EmbeddingClient:
    """POST /v1/embeddings with the waits an API quota needs."""

    def __init__(self, url: str, counters: Counters, *, dimensions: int = 64, attempts: int = 8, base_backoff: float = 0.2,
                 max_backoff: float = 10.0, timeout: float = 60.0, seed: int = 0) -> None:
        self.url = url.rstrip("/") + "/v1/embeddings"
        self.http = httpx.Client(timeout=timeout, trust_env=False)
        self.c, self.attempts, self.base, self.cap = counters, attempts, base_backoff, max_backoff
        self.rng = random.Random(seed)
        self.dimensions = dimensions

    def _wait(self, seconds: float) -> None:
        self.c.backoff_s += seconds
        time.sleep(seconds)

    def embed(self, texts: list[str]) -> list[list[float]]:
        failures = 0
        while True:
            self.c.api_calls += 1
            try:
                r = self.http.post(self.url, json={"input": texts, "model": "backfill", "dimensions": self.dimensions})
            except httpx.TransportError as exc:
                r, why = None, f"{type(exc).__name__}: {exc}"
            if r is not None and r.status_code == 200:
                data = sorted(r.json()["data"], key=lambda d: d["index"])
                return [d["embedding"] for d in data]
            if r is not None and r.status_code == 429:
                # a quota, not a fault: wait what the API says, and do not count it as a failure
                self.c.api_429 += 1
                self._wait(float(r.headers.get("retry-after", "1")) + self.rng.uniform(0, 0.2))
                continue
            if r is not None and r.status_code < 500:
                raise ApiGaveUp(f"embedding API answered {r.status_code}: {r.text[:300]}")
            failures += 1
            self.c.api_errors += 1
            why = why if r is None else f"HTTP {r.status_code}"
            if failures >= self.attempts:
                raise ApiGaveUp(f"embedding API failed {failures} times in a row (last: {why})")
            self._wait(min(self.cap, self.base * 2 ** (failures - 1)) * self.rng.uniform(0.5, 1.0))


def ensure_table(conn, dim: int) -> None:
    # tasks start together: serialise the DDL (CREATE ... IF NOT EXISTS still races on the catalog)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(hashlib.sha256(TABLE.encode()).digest()[:7], "big"),))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (doc_no bigint PRIMARY KEY, body text NOT NULL, "
                     f"embedding vector({dim}) NOT NULL, task_index int NOT NULL, attempt int NOT NULL, "
                     "written_at timestamptz NOT NULL DEFAULT now())")


def write(conn, rows: list[tuple[int, str, list[float]]], index: int, attempt: int) -> int:
    """Insert what is not there yet; the number of rows this call added."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {TABLE} (doc_no, body, embedding, task_index, attempt) "
                        "VALUES (%s, %s, %s::vector, %s, %s) ON CONFLICT (doc_no) DO NOTHING",
                        [(n, body, vector_literal(v), index, attempt) for n, body, v in rows])
        return max(cur.rowcount, 0)


def verify(conn, client: EmbeddingClient, part: range, fresh: tuple[int, list[float]] | None) -> str | None:
    """What is wrong with the shard's rows (None: complete and searchable). `fresh` is a
    document and the vector the API gave for its text in this attempt (None: ask for one);
    the table's nearest neighbour of that vector must be that document."""
    n = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE doc_no >= %s AND doc_no < %s", (part.start, part.stop)).fetchone()[0]
    if n != len(part):
        return f"shard {part.start}..{part.stop - 1} has {n} rows, expected {len(part)}"
    if not part:
        return None
    if fresh is None:  # nothing embedded in this attempt (a previous one did it all)
        probe = part.start + len(part) // 2
        fresh = (probe, client.embed([text_of(probe)])[0])
    probe, vec = fresh
    row = conn.execute(f"SELECT doc_no, embedding <=> %s::vector FROM {TABLE} ORDER BY embedding <=> %s::vector LIMIT 1",
                       (vector_literal(vec), vector_literal(vec))).fetchone()
    if row is None or row[0] != probe:
        return f"nearest neighbour of document {probe}'s text is {row}, not itself"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database", required=True)
    ap.add_argument("--items", type=int, default=None, help="corpus size (default: $SURGESIM_JOB_ITEMS)")
    ap.add_argument("--batch-size", type=int, default=None, help="texts per API call (default: $SURGESIM_JOB_BATCH_SIZE or 100)")
    ap.add_argument("--dimensions", type=int, default=64, help="the embedding API's vector size")
    ap.add_argument("--call-attempts", type=int, default=8, help="failed calls in a row before the task gives up")
    ap.add_argument("--crash-after-batches", type=int, default=None,
                    help="rehearsal: on the first attempt, exit 3 after writing this many batches")
    a = ap.parse_args(argv)
    env = os.environ
    index, count = int(env.get("CLOUD_RUN_TASK_INDEX", "0")), int(env.get("CLOUD_RUN_TASK_COUNT", "1"))
    attempt = int(env.get("CLOUD_RUN_TASK_ATTEMPT", "0"))
    items = a.items if a.items is not None else int(env.get("SURGESIM_JOB_ITEMS", "0"))
    size = a.batch_size or int(env.get("SURGESIM_JOB_BATCH_SIZE", "100"))
    part = shard(items, index, count)
    c = Counters(shard_size=len(part))
    counters_path = env.get("SURGESIM_TASK_COUNTERS")

    def done(code: int, msg: str) -> int:
        print(f"task {index}/{count} attempt {attempt}: {msg}; {json.dumps(asdict(c))}", flush=True)
        if counters_path:
            with open(counters_path, "w") as f:
                json.dump(asdict(c), f)
        return code

    import psycopg

    client = EmbeddingClient(env["EMBEDDING_API_URL"], c, dimensions=a.dimensions, attempts=a.call_attempts,
                             seed=index * 1000 + attempt)
    began = time.monotonic()
    with psycopg.connect(dbname=a.database, autocommit=True, connect_timeout=10) as conn:
        ensure_table(conn, a.dimensions)
        have = [r[0] for r in conn.execute(f"SELECT doc_no FROM {TABLE} WHERE doc_no >= %s AND doc_no < %s",
                                           (part.start, part.stop))]
        c.already_done = len(have)
        fresh = None
        try:
            for batch in batches(todo(part, have), size):
                texts = [text_of(n) for n in batch]
                vectors = client.embed(texts)
                c.rows_written += write(conn, list(zip(batch, texts, vectors)), index, attempt)
                fresh = (batch[-1], vectors[-1])
                c.batches += 1
                if a.crash_after_batches is not None and attempt == 0 and c.batches >= a.crash_after_batches:
                    done(3, f"crashing on purpose after {c.batches} batches (--crash-after-batches)")
                    os._exit(3)  # no clean-up, as a killed container
            problem = verify(conn, client, part, fresh)
        except ApiGaveUp as exc:
            return done(1, str(exc))
        if problem is None:
            c.nearest_neighbour_ok = 1
    took = time.monotonic() - began
    if problem:
        return done(2, f"verification failed: {problem}")
    return done(0, f"shard {part.start}..{part.stop - 1} complete ({c.rows_written} written, "
                   f"{c.already_done} already there) in {took:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
