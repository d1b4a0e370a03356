"""The function relay: two Cloud Run functions (HTTP, behind Pub/Sub push subscriptions).

start_job (relay-start, on relay.requests): records the request in Firestore, starts a
BigQuery query job with jobs.insert (the call returns as soon as the job is created; it
does not wait for it), and publishes the first status check to relay.status with the time it
is due (`checkAt`, one poll interval later).

check_job (relay-status, on relay.status): waits until the message's `checkAt`, calls
jobs.get; while the job is not DONE it publishes the next check (attempt + 1, due one poll
interval later) to relay.status itself, and acks. When the job is DONE it records the outcome
in Firestore and publishes a completion event to relay.done. A job that ended with an
errorResult is answered 500: the subscription retries it and, after its max delivery
attempts, dead-letters it to relay.status.dlq, where it is kept for inspection and replay.

The delay. Pub/Sub has no delayed delivery. The options are (1) nack and let the
subscription's retry backoff bring the message back, or (2) carry the due time in the
message and wait for it before the check. (1) spends delivery attempts (a job longer than
max_attempts backoffs is dead-lettered although nothing failed) and its interval is an
exponential backoff, not a fixed minute; relay.yaml models one new message per poll on a
fixed interval (`poll: {every: 60s}`), which is (2). Its cost: the checker's instance is
held while it waits (at most WAIT_CAP_S, kept under the 30 s ack deadline; a check due later
than that is re-published unchanged, as a not-yet-due check).

Knows nothing of surgesim except SURGESIM_TIME_SCALE (absent in the cloud: 1), which puts
the poll interval on a compressed run's clock, and GET /metrics, which reports counters.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time

import functions_framework
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, firestore, pubsub_v1

PROJECT = os.environ.get("GOOGLE_CLOUD_PROJECT", "relay-local")
DATASET = os.environ.get("RELAY_DATASET", "analytics")
STATUS_TOPIC = os.environ.get("RELAY_STATUS_TOPIC", "relay.status")
DONE_TOPIC = os.environ.get("RELAY_DONE_TOPIC", "relay.done")
TIME_SCALE = float(os.environ.get("SURGESIM_TIME_SCALE", "1"))
POLL_S = float(os.environ.get("RELAY_POLL_SECONDS", "60")) / TIME_SCALE
"""Wall seconds between two checks of one job (60 s on the scenario's clock)."""
WAIT_CAP_S = 20.0
"""Longest wait inside one delivery: under relay-status-sub's 30 s ack deadline."""
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

_lock = threading.Lock()
_clients: dict = {}
_counters: dict[str, float] = {}
_latencies: list[float] = []  # submit -> seen DONE, scenario seconds (wall x time scale), one per finished job
_wall: list[float] = []  # the same in wall seconds
_checks: list[int] = []  # checks (relay.status messages handled) per finished job
_failed: set[str] = set()  # jobs seen DONE with an errorResult (each is re-delivered until dead-lettered)


def _bq() -> bigquery.Client:
    with _lock:
        if "bq" not in _clients:
            host = os.environ.get("BIGQUERY_EMULATOR_HOST")
            if host:  # the emulator: anonymous, plain HTTP (docs/emulators.md)
                _clients["bq"] = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                                                 client_options=ClientOptions(api_endpoint=f"http://{host}"))
            else:
                _clients["bq"] = bigquery.Client(project=PROJECT)
        return _clients["bq"]


def _publisher() -> pubsub_v1.PublisherClient:
    with _lock:
        if "pub" not in _clients:
            _clients["pub"] = pubsub_v1.PublisherClient()  # PUBSUB_EMULATOR_HOST is read by the client
        return _clients["pub"]


def _db() -> firestore.Client:
    with _lock:
        if "db" not in _clients:
            _clients["db"] = firestore.Client(project=PROJECT)
        return _clients["db"]


def _count(name: str, n: float = 1) -> None:
    with _lock:
        _counters[name] = _counters.get(name, 0) + n


def _publish(topic: str, body: dict, **attributes: str) -> None:
    pub = _publisher()
    pub.publish(pub.topic_path(PROJECT, topic), json.dumps(body).encode(), **attributes).result(timeout=30)
    _count(f"published_{topic.replace('.', '_')}")


def _message(request) -> tuple[dict, dict]:
    """(data, attributes) of a Pub/Sub push envelope; data is {} when it is not a JSON object."""
    envelope = request.get_json(silent=True) or {}
    msg = envelope.get("message") or {}
    try:
        data = json.loads(base64.b64decode(msg.get("data") or b"").decode() or "{}")
    except ValueError:
        data = {}
    return (data if isinstance(data, dict) else {}), dict(msg.get("attributes") or {})


def _log(message: str, **fields) -> None:
    print(json.dumps({"severity": "INFO", "message": message, **fields}), flush=True)


def _metrics():
    """Counters and the per-job distributions so far (surgesim keeps GET /metrics in summary.json)."""
    with _lock:
        out = dict(_counters)
        for name, values in (("job_latency_s", sorted(_latencies)), ("job_latency_wall_s", sorted(_wall)),
                             ("checks_per_job", sorted(_checks))):
            if values:
                out[f"{name}_p50"] = values[len(values) // 2]
                out[f"{name}_p99"] = values[min(len(values) - 1, int(0.99 * len(values)))]
                out[f"{name}_max"] = values[-1]
                out[f"{name}_mean"] = sum(values) / len(values)
        return out


@functions_framework.http
def start_job(request):
    if request.method == "GET" and request.path == "/metrics":
        return _metrics()
    data, attrs = _message(request)
    kind = attrs.get("jobKind") or data.get("jobKind") or "rollup"
    source = attrs.get("sourceTable") or data.get("sourceTable") or "daily_rollup"
    if not TABLE_NAME.match(source):
        _count("requests_refused")
        return (f"sourceTable {source!r} is not a table name", 400)
    sql = (f"INSERT INTO `{PROJECT}.{DATASET}.daily_rollup` (day, job_kind, metric, value) "
           f"SELECT CURRENT_DATE() AS day, @kind AS job_kind, 'rows_seen' AS metric, "
           f"CAST(COUNT(*) AS FLOAT64) AS value FROM `{PROJECT}.{DATASET}.{source}`")
    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("kind", "STRING", kind)])
    submitted = time.time()
    # jobs.insert only: the job runs on; relay-status polls it
    job = _bq().query(sql, job_config=config, job_id_prefix="relay-", api_method="INSERT", job_retry=None)
    _count("jobs_submitted")
    _db().collection("relay_jobs").document(job.job_id).set(
        {"kind": kind, "state": "SUBMITTED", "submittedAt": submitted, "requestedBy": data.get("requestedBy")})
    _publish(STATUS_TOPIC, {"jobId": job.job_id, "location": job.location, "attempt": 1,
                            "submittedAt": submitted, "checkAt": submitted + POLL_S}, jobId=job.job_id)
    return ("", 204)


@functions_framework.http
def check_job(request):
    if request.method == "GET" and request.path == "/metrics":
        return _metrics()
    data, _ = _message(request)
    job_id, attempt = data.get("jobId"), int(data.get("attempt") or 1)
    if not job_id:
        _count("checks_refused")
        return ("no jobId in the message", 400)
    wait = float(data.get("checkAt") or 0) - time.time()
    if wait > WAIT_CAP_S:  # not due within this delivery: pass it on unchanged
        time.sleep(WAIT_CAP_S)
        _publish(STATUS_TOPIC, data, jobId=job_id)
        return ("", 204)
    if wait > 0:
        time.sleep(wait)
    _count("checks")
    job = _bq().get_job(job_id, location=data.get("location"))
    if job.state != "DONE":
        _publish(STATUS_TOPIC, {**data, "attempt": attempt + 1, "checkAt": time.time() + POLL_S}, jobId=job_id)
        return ("", 204)
    wall = time.time() - float(data.get("submittedAt") or time.time())
    latency = wall * TIME_SCALE
    failed = job.error_result is not None
    outcome = {"state": "FAILED" if failed else "DONE", "checks": attempt, "latencyS": latency,
               "error": (job.error_result or {}).get("message")}
    _db().collection("relay_jobs").document(job_id).set(outcome, merge=True)
    if failed:
        with _lock:
            _failed.add(job_id)
            _counters["jobs_failed"] = len(_failed)
        _count("failed_job_deliveries")
        _log("relay job failed", jobId=job_id, **outcome)
        return (f"job {job_id} failed: {outcome['error']}", 500)
    _publish(DONE_TOPIC, {"jobId": job_id, **outcome}, jobId=job_id, state="DONE")
    with _lock:
        _counters["jobs_done"] = _counters.get("jobs_done", 0) + 1
        _latencies.append(latency)
        _wall.append(wall)
        _checks.append(attempt)
    _log("relay job done", jobId=job_id, **outcome)
    return ("", 204)
