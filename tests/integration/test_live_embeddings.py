"""`surgesim live` with the embeddings pipeline on the real PostgreSQL + pgvector: a Cloud Run
Job whose tasks shard a corpus by CLOUD_RUN_TASK_INDEX, call the embedding fake (rate limited:
429s are waited out) and upsert vectors with ON CONFLICT.

Every task's first attempt crashes on purpose after one batch (--crash-after-batches): the
retry resumes, and the table then holds exactly one row per document (rows == items, half
written by each attempt), the vectors are searchable (a known text's nearest neighbour is
itself), the counters reach summary.json, and the job SLO holds (exit 0). Under an outage of
the API the tasks use up their retries and the verdict fails (exit 1). About 45 s and 30 s
after the emulators are up (each test)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ITEMS, TASKS, BATCH = 200, 4, 25


def _files(tmp_path: Path, db: str, *, fault: str = "", args: str = ', --crash-after-batches, "1"', at: str = "0s",
           parallelism: int = 2, slo: str = "max(job.backfill) < 2m") -> Path:
    (tmp_path / "system.yaml").write_text(f"""
name: embedtest
project: embed-test
jobs:
  - name: backfill
    tasks: {TASKS}
    parallelism: {parallelism}
    items: {ITEMS}
    batch_size: {BATCH}
    max_retries: 2
    task_timeout: 60s
    steps:
      - call: {{api: embedding-api}}
    command: [python, -m, surgesim.services.embeddings.backfill, --database, {db}, --dimensions, "32"{args}]
stores:
  postgres:
    - {{name: {db}}}
external_apis:
  # 200 texts of ~18 words are ~3,600 tokens: more than the quota's 2,400 plus 40 a second
  # for 30 s, so some calls are answered 429 and waited out however fast the machine is
  - {{name: embedding-api, latency: {{p50: 20ms, p99: 60ms}}, rate_limit: 20/s, tokens_per_minute: 2400,
     fake: embedding}}
""")
    (tmp_path / "scenario.yaml").write_text(f"""
name: embed_live
system: system.yaml
duration: 2m
traffic:
  sources:
    - {{name: go, kind: once, at: {at}, job: backfill}}
{fault}
live:
  time_scale: 1
  rate_scale: 1
  locust: false
  drain_timeout: 100s
  slos:
    - {slo}
""")
    return tmp_path / "scenario.yaml"


def _live(tmp_path: Path, scenario: Path, state_dir) -> tuple[int, str, dict]:
    run = tmp_path / "run"
    with open(tmp_path / "live.log", "w") as log:
        rc = subprocess.run([sys.executable, "-m", "surgesim.cli", "live", str(scenario), "--out", str(run),
                             "--state-dir", str(state_dir)], stdout=log, stderr=subprocess.STDOUT,
                            timeout=180).returncode
    text = (tmp_path / "live.log").read_text()
    return rc, text, json.loads((run / "summary.json").read_text())


def test_backfill_resumes_without_duplicates_and_rows_are_searchable(gcp, pgvector, tmp_path):
    from surgesim.emulators.postgres import connect
    from surgesim.services.embeddings.backfill import TABLE, text_of, vector_literal
    from surgesim.services.fakes.embedding import embed

    db = "embed_" + secrets.token_hex(4)
    rc, text, summary = _live(tmp_path, _files(tmp_path, db), gcp.state_dir)
    assert rc == 0, text[-3000:]
    assert summary["verdict"] == "pass"
    assert summary["slos"][0]["holds"] and 0 < summary["slos"][0]["observed"] < 120
    job = summary["totals"]["jobs"]["backfill"]
    assert job["state"] == "succeeded" and job["tasks_succeeded"] == TASKS
    assert job["retries"] == TASKS  # every first attempt crashed once, by design
    c = job["counters"]
    assert c["rows_written"] == ITEMS and c["shard_size"] == ITEMS * 2  # two attempts per task read their shard
    assert c["already_done"] == TASKS * BATCH  # the retry found the crashed attempt's batch and skipped it
    assert c["nearest_neighbour_ok"] == TASKS
    assert c["api_429"] > 0 and c["backoff_s"] > 0
    assert summary["totals"]["apis"]["embedding-api"]["rate_limited"] == c["api_429"]
    assert job["counters_per_s"]["rows_written"] > 0

    port = int(pgvector.env_vars()["PGPORT"])
    with connect("127.0.0.1", port, db) as conn:
        rows, distinct = conn.execute(f"SELECT count(*), count(DISTINCT doc_no) FROM {TABLE}").fetchone()
        assert rows == distinct == ITEMS  # one row per document: none lost, none twice
        by_attempt = dict(conn.execute(f"SELECT attempt, count(*) FROM {TABLE} GROUP BY attempt").fetchall())
        assert by_attempt == {0: TASKS * BATCH, 1: ITEMS - TASKS * BATCH}
        probe = 123
        v = vector_literal(embed(text_of(probe), 32))
        nearest = conn.execute(f"SELECT doc_no, body FROM {TABLE} ORDER BY embedding <=> %s::vector LIMIT 3", (v,)).fetchall()
        assert nearest[0] == (probe, text_of(probe)) and len(nearest) == 3


def test_an_api_outage_beyond_the_retries_fails_the_verdict(gcp, pgvector, tmp_path):
    db = "embed_" + secrets.token_hex(4)
    # The API is down from before the job starts until 40 s; each attempt gives up after 2
    # failed calls, so the tasks use up their 3 attempts inside it (about 10 s on a quiet
    # machine) and the execution fails. Should a very slow machine stretch the attempts past
    # the outage, the job still cannot finish inside its SLO of 30 s: the verdict fails
    # either way, which is what the SLO is for.
    fault = "faults:\n  - {kind: dependency_outage, target: embedding-api, at: 0s, duration: 40s}\n"
    rc, text, summary = _live(tmp_path, _files(tmp_path, db, fault=fault, args=', --call-attempts, "2"', at="3s",
                                               parallelism=TASKS, slo="max(job.backfill) < 30s"),
                              gcp.state_dir)
    assert rc == 1, text[-3000:]
    assert summary["verdict"] == "fail"
    assert summary["slos"][0]["holds"] is False
    job = summary["totals"]["jobs"]["backfill"]
    assert job["retries"] >= TASKS  # every task's first attempt failed in the outage
    assert job["counters"]["api_errors"] >= TASKS * 2
    if job["state"] == "failed":  # the expected case: out of retries inside the outage
        assert job["tasks_failed"] >= 1 and summary["slos"][0]["observed"] is None
        assert "execution backfill-" in text and "tasks failed" in text
    else:  # attempts outlasted the outage: the job finished, too late
        assert summary["slos"][0]["observed"] >= 30
