"""The embedding backfill's pure parts (services/embeddings/backfill.py), the embedding fake
(services/fakes/embedding.py) and the job plumbing around them: shards cover the corpus
exactly once, a resumed shard embeds only what is missing, the fake's vectors are
deterministic and its token quota answers 429 with a Retry-After that is honest, the task's
client waits 429s out and gives up on a run of 5xx, task counters are summed, and the
`job.NAME` SLO reads jobs.json and fails on a failed job."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from surgesim.live.jobs import read_counters
from surgesim.rundir import Run, RunWriter
from surgesim.schema.scenario import Scenario
from surgesim.services.embeddings.backfill import (
    ApiGaveUp, Counters, EmbeddingClient, batches, shard, text_of, todo, vector_literal)
from surgesim.services.fakes.embedding import EmbeddingBehaviour, TokenQuota, build_app, count_tokens, embed
from surgesim.slo import evaluate


@pytest.mark.parametrize("items,count", [(0, 3), (1, 4), (10, 3), (2_000_000, 50), (1001, 7), (5, 5)])
def test_shards_cover_every_item_exactly_once(items, count):
    parts = [shard(items, i, count) for i in range(count)]
    seen = [d for p in parts for d in p]
    assert seen == list(range(items))  # contiguous, in order, no gaps, no overlaps
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= (1 if items else 0)
    assert sizes == sorted(sizes, reverse=True)  # the first items % count take one more, as the simulator


def test_shard_rejects_an_index_out_of_range():
    with pytest.raises(ValueError):
        shard(10, 3, 3)
    with pytest.raises(ValueError):
        shard(10, 0, 0)


def test_a_resumed_shard_embeds_only_what_is_missing_in_batches():
    part = shard(1000, 2, 4)  # 500..749
    done = set(range(500, 620)) | {700, 9999}  # a crashed attempt's rows, plus another shard's
    left = todo(part, done)
    assert left[0] == 620 and 700 not in left and len(left) == 250 - 121
    bs = list(batches(left, 50))
    assert [len(b) for b in bs] == [50, 50, 29]
    assert [d for b in bs for d in b] == left
    assert todo(part, part) == [] and list(batches([], 10)) == []


def test_texts_are_deterministic_and_distinct():
    assert text_of(42) == text_of(42)
    assert len({text_of(i) for i in range(2000)}) == 2000
    assert vector_literal([1, 0.5]) == "[1.0,0.5]"


def test_fake_vectors_are_deterministic_unit_vectors_and_nearest_is_itself():
    a, b = embed("hello world", 64), embed("hello world", 64)
    assert a == b and len(a) == 64 and abs(np.linalg.norm(a) - 1) < 1e-4
    texts = [text_of(i) for i in range(300)]
    m = np.array([embed(t, 64) for t in texts])
    assert (np.argmax(m @ m.T, axis=1) == np.arange(300)).all()


def test_fake_embeds_a_batch_and_counts_tokens():
    with TestClient(build_app(dim=16)) as c:
        r = c.post("/v1/embeddings", json={"input": ["one two three", "four"]})
        assert r.status_code == 200
        body = r.json()
        assert [d["index"] for d in body["data"]] == [0, 1]
        assert body["data"][0]["embedding"] == embed("one two three", 16)
        assert body["usage"]["total_tokens"] == 4 == count_tokens("one two three") + count_tokens("four")
        assert len(c.post("/v1/embeddings", json={"input": ["x"], "dimensions": 5}).json()["data"][0]["embedding"]) == 5
        assert c.post("/v1/embeddings", json={"input": ["x"], "dimensions": 0}).status_code == 400
        assert c.post("/v1/embeddings", json={"input": []}).status_code == 400
        assert c.post("/v1/embeddings", json={"input": ["ok", 3]}).status_code == 400
        assert c.post("/v1/embeddings", content=b"not json").status_code == 400
        st = c.get("/admin/stats").json()
        assert st["calls"] == 6 and st["tokens"] == 5 and st["vectors"] == 3 and st["bad_requests"] == 4


def test_token_quota_answers_429_with_an_honest_retry_after():
    # 600 tokens a minute = 10 a second; a 300-token request empties half the bucket
    big = " ".join(["w"] * 300)
    with TestClient(build_app(EmbeddingBehaviour(tokens_per_minute=600))) as c:
        assert c.post("/v1/embeddings", json={"input": [big]}).status_code == 200
        assert c.post("/v1/embeddings", json={"input": [big]}).status_code == 200
        r = c.post("/v1/embeddings", json={"input": [big]})
        assert r.status_code == 429
        assert 25 <= int(r.headers["retry-after"]) <= 31  # 300 tokens at 10/s from ~0 left
        too_big = c.post("/v1/embeddings", json={"input": [" ".join(["w"] * 601)]})
        assert too_big.status_code == 400 and "quota" in too_big.text
        st = c.get("/admin/stats").json()
        assert st["rate_limited"] == 1 and st["token_limited"] == 1 and st["tokens"] == 600
        # the admin API lifts the quota at run time
        assert c.put("/admin/behaviour", json={"tokens_per_minute": 60_000}).status_code == 200
        assert c.post("/v1/embeddings", json={"input": [big]}).status_code == 200


def test_token_quota_refills_at_its_rate():
    q = TokenQuota(6000)  # 100 tokens/s
    assert q.take(6000) == 0.0
    wait = q.take(50)
    assert 0.4 < wait <= 0.5
    time.sleep(0.6)
    assert q.take(50) == 0.0


def test_fake_outage_and_admin_token():
    # an outage answers 503 before the quotas, and the refused call uses none of them
    with TestClient(build_app(EmbeddingBehaviour(tokens_per_minute=60), admin_token="secret")) as c:
        assert c.get("/admin/stats").status_code == 401
        auth = {"Authorization": "Bearer secret"}
        assert c.put("/admin/behaviour", json={"outage": True}, headers=auth).status_code == 200
        for _ in range(3):
            assert c.post("/v1/embeddings", json={"input": ["x " * 30]}).status_code == 503
        st = c.get("/admin/stats", headers=auth).json()
        assert st["outage_rejections"] == 3 and st["rate_limited"] == 0 and st["tokens"] == 0


@pytest.fixture
def fake_server():
    """The fake on a real port (the task's client is a real httpx client)."""
    from surgesim.emulators.process import free_port

    app = build_app(EmbeddingBehaviour(rate_limit=2.0), dim=8)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.02)
    yield app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(5)


def test_client_waits_out_429s_and_gives_up_on_repeated_5xx(fake_server):
    app, url = fake_server
    c = Counters()
    client = EmbeddingClient(url, c, dimensions=8, attempts=3, base_backoff=0.01)
    t0 = time.monotonic()
    for i in range(6):  # 2 calls/s: the later calls are answered 429 and waited out
        assert client.embed([f"text {i}"]) == [embed(f"text {i}", 8)]
    assert c.api_429 >= 1 and c.backoff_s >= 1.0 and time.monotonic() - t0 >= 1.0
    auth_free = httpx.put(url + "/admin/behaviour", json={"outage": True, "rate_limit": 1000}, trust_env=False)
    assert auth_free.status_code == 200
    with pytest.raises(ApiGaveUp, match="3 times"):
        client.embed(["down"])
    assert c.api_errors == 3


def test_task_counters_file_is_read_leniently(tmp_path):
    p = tmp_path / "c.json"
    assert read_counters(p) == {}
    p.write_text(json.dumps({"rows_written": 10, "ok": True, "name": "x", "backoff_s": 1.5}))
    assert read_counters(p) == {"rows_written": 10, "backoff_s": 1.5}
    p.write_text("[1, 2]")
    assert read_counters(p) == {}


def _scenario(slo: str) -> Scenario:
    return Scenario.model_validate({"name": "s", "system": "x.yaml", "duration": "1h",
                                    "traffic": {"sources": [{"name": "go", "kind": "once", "at": "0s", "job": "backfill"}]},
                                    "slos": [slo]})


def test_job_slo_reads_jobs_json_and_fails_a_failed_or_missing_job(tmp_path):
    w = RunWriter(tmp_path / "r")
    w.write_jobs({"backfill": {"state": "succeeded", "duration_s": 900.0, "executions": 1},
                  "broken": {"state": "failed", "duration_s": None, "executions": 1}})
    run = Run(w.dir)
    assert evaluate(run, _scenario("max(job.backfill) < 20m"))[0] == {"text": "max(job.backfill) < 20m",
                                                                      "observed": 900.0, "holds": True}
    assert evaluate(run, _scenario("max(job.backfill) < 10m"))[0]["holds"] is False
    assert evaluate(run, _scenario("max(job.broken) < 10h"))[0]["holds"] is False
    assert evaluate(run, _scenario("max(job.absent) < 10h"))[0]["observed"] is None


def test_report_job_rows_join_totals_records_and_counters(tmp_path):
    from surgesim.reports.jobs import api_rows, job_rows

    w = RunWriter(tmp_path / "r")
    w.write_jobs({"backfill": {"state": "failed", "duration_s": 600.0, "executions": 1, "tasks_gave_up": 2}})
    w.write_summary({"totals": {"jobs": {"backfill": {"state": "failed", "tasks_succeeded": 48, "tasks_failed": 2,
                                                      "retries": 7, "timeouts": 1,
                                                      "counters": {"rows_written": 1000, "api_429": 5},
                                                      "counters_per_s": {"rows_written": 12.5, "api_429": 0.06}}},
                                "apis": {"embedding-api": {"calls": 90, "rate_limited": 5, "errors": 2}}}})
    run = Run(w.dir)
    [row] = job_rows(run)
    assert row["state"] == "failed" and row["duration_s"] == 600.0 and row["tasks_failed"] == 2 and row["retries"] == 7
    assert row["counters"] == [("api_429", 5, 0.06), ("rows_written", 1000, 12.5)]
    assert api_rows(run.summary) == [{"name": "embedding-api", "calls": 90, "rate_limited": 5, "errors": 2}]
