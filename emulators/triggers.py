"""Firestore trigger bridge: document changes -> Eventarc CloudEvents to the target service.

The Firestore emulator has no Eventarc. This bridge watches a collection and POSTs, per
change, a CloudEvent in HTTP binary mode: ``ce-*`` headers (``ce-type``
``google.cloud.firestore.document.v1.written`` -- or ``created``/``updated``/``deleted``
as the trigger's ``events`` ask -- ``ce-id``, ``ce-source``, ``ce-subject``, ``ce-time``,
``ce-specversion``, ``ce-document``, ``ce-database``, ``ce-project``...) and a JSON body
``{"value": {"name", "fields", "createTime", "updateTime"}, "oldValue": {...}}`` with
plain-JSON field values (Eventarc's real body is protobuf ``DocumentEventData``; JSON
keeps any framework able to read it).

Why several listeners: the Python collection listener falls seconds behind beyond
~20-40 writes/s because each change re-sorts its whole snapshot of the query. The bridge
splits the key space into ``partitions`` ``__name__`` ranges, one listener each, so every
listener holds a fraction of the documents (figures in docs/benchmarks/bridges.md).

Exactly once per change: a change is identified by (document, update_time); a listener's
(re)connect replays documents it already knows with the same update_time and those are
dropped. Documents present when the bridge starts are the baseline (Eventarc fires only
for changes after the trigger exists). A listener delivers document *states*: two writes
to one document faster than the listener reports them arrive as one change (Eventarc
would send two) -- see docs/bridges.md.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import string
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

EVENT_PREFIX = "google.cloud.firestore.document.v1."
_KEY_CHARS = "".join(sorted(string.digits + string.ascii_letters))


def to_plain(value: Any) -> Any:
    """Firestore values as plain JSON."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if hasattr(value, "latitude") and hasattr(value, "longitude"):
        return {"latitude": value.latitude, "longitude": value.longitude}
    if hasattr(value, "path") and hasattr(value, "id"):  # DocumentReference
        return value.path
    return value


def _ts(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def partition_bounds(partitions: int) -> list[tuple[str | None, str | None]]:
    """``partitions`` half-open ranges of document ids covering every id."""
    partitions = max(1, min(partitions, len(_KEY_CHARS)))
    cuts = [_KEY_CHARS[round(i * len(_KEY_CHARS) / partitions)] for i in range(1, partitions)]
    lows: list[str | None] = [None, *cuts]
    highs: list[str | None] = [*cuts, None]
    return list(zip(lows, highs))


def classify(old: dict | None, new: dict | None) -> str:
    if old is None and new is not None:
        return "created"
    if new is None:
        return "deleted"
    return "updated"


def wanted(events: list[str], kind: str) -> str | None:
    """The event type to send for a change of ``kind``, or None if the trigger skips it."""
    if "written" in events:
        return EVENT_PREFIX + "written"
    if kind in events:
        return EVENT_PREFIX + kind
    return None


def build_event(*, project: str, database: str, collection: str, doc_id: str, kind: str, event_type: str,
                new: dict | None, old: dict | None, update_time: str | None) -> tuple[dict, dict]:
    """(headers, json body) of one CloudEvent in binary mode."""
    doc = f"{collection}/{doc_id}"
    name = f"projects/{project}/databases/{database}/documents/{doc}"
    body: dict = {}
    if new is not None:
        body["value"] = {"name": name, "fields": to_plain(new["fields"]),
                         "createTime": new.get("createTime"), "updateTime": new.get("updateTime")}
    if old is not None:
        body["oldValue"] = {"name": name, "fields": to_plain(old["fields"]),
                            "createTime": old.get("createTime"), "updateTime": old.get("updateTime")}
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": str(uuid.uuid4()),
        "ce-type": event_type,
        "ce-source": f"//firestore.googleapis.com/projects/{project}/databases/{database}",
        "ce-subject": f"documents/{doc}",
        "ce-time": update_time or dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "ce-dataschema": "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/firestore/v1/data.proto",
        "ce-project": project,
        "ce-database": database,
        "ce-namespace": "(default)",
        "ce-document": doc,
        "ce-location": "local",
    }
    return headers, body


@dataclass
class TriggerCounters:
    changes: int = 0
    sent: int = 0
    duplicates_dropped: int = 0
    failures: int = 0
    gave_up: int = 0
    skipped: int = 0


class TriggerBridge:
    def __init__(self, db, *, collection: str, url: str, project: str, events: list[str] | None = None,
                 database: str = "(default)", partitions: int = 4, token: str | None = None,
                 concurrency: int = 32, max_attempts: int = 10, http: httpx.AsyncClient | None = None) -> None:
        self.db = db
        self.collection = collection
        self.url = url
        self.project = project
        self.events = list(events or ["written"])
        self.database = database
        self.partitions = partitions
        self.token = token
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.counters = TriggerCounters()
        self._http = http
        self._own_http = http is None
        self._state: dict[str, dict] = {}  # doc id -> {"fields", "createTime", "updateTime"}
        self._lock = threading.Lock()
        self._watches: list = []
        self._queue: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._initial_pending = 0

    # ---- listeners (their callbacks run on the client's threads) -----------------------
    def _start_listeners(self) -> None:
        from google.cloud.firestore_v1.base_query import FieldFilter

        col = self.db.collection(self.collection)
        bounds = partition_bounds(self.partitions)
        self._initial_pending = len(bounds)
        for lo, hi in bounds:
            q = col
            if lo is not None:
                q = q.where(filter=FieldFilter("__name__", ">=", col.document(lo)))
            if hi is not None:
                q = q.where(filter=FieldFilter("__name__", "<", col.document(hi)))
            first = {"pending": True}
            self._watches.append(q.on_snapshot(lambda docs, changes, read_time, first=first:
                                               self._on_snapshot(changes, first)))

    def _on_snapshot(self, changes, first: dict) -> None:
        out = []
        with self._lock:
            for ch in changes:
                doc = ch.document
                doc_id = doc.id
                if ch.type.name == "REMOVED":
                    old = self._state.pop(doc_id, None)
                    if old is None or first["pending"]:
                        continue
                    out.append((doc_id, old, None, None))
                    continue
                update = _ts(doc.update_time)
                old = self._state.get(doc_id)
                if old is not None and old["updateTime"] == update:
                    self.counters.duplicates_dropped += 1  # a reconnect replaying a known state
                    continue
                new = {"fields": doc.to_dict() or {}, "createTime": _ts(doc.create_time), "updateTime": update}
                self._state[doc_id] = new
                if first["pending"]:
                    continue  # baseline: existed before the trigger
                out.append((doc_id, old, new, update))
            if first["pending"]:
                first["pending"] = False
                self._initial_pending -= 1
                if self._initial_pending == 0:
                    self._ready.set()
        if out and self._loop is not None:
            self._loop.call_soon_threadsafe(self._enqueue, out)

    def _enqueue(self, out: list) -> None:
        for item in out:
            self.counters.changes += 1
            self._queue.put_nowait(item)

    # ---- delivery ---------------------------------------------------------------------------
    async def run(self, ready: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False, timeout=30.0)
        await asyncio.to_thread(self._start_listeners)
        await asyncio.to_thread(self._ready.wait, 30)
        if ready is not None:
            ready.set()
        self._stop = asyncio.Event()
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        try:
            await self._stop.wait()
            # let what is already queued go out before stopping (bounded by the caller's patience)
            while not self._queue.empty():
                await asyncio.sleep(0.05)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for watch in self._watches:
                await asyncio.to_thread(watch.unsubscribe)
            if self._own_http:
                await self._http.aclose()

    async def _worker(self) -> None:
        while True:
            doc_id, old, new, update = await self._queue.get()
            kind = classify(old, new)
            event_type = wanted(self.events, kind)
            if event_type is None:
                self.counters.skipped += 1
                continue
            headers, body = build_event(project=self.project, database=self.database, collection=self.collection,
                                        doc_id=doc_id, kind=kind, event_type=event_type, new=new, old=old,
                                        update_time=update)
            if self.token:
                headers["authorization"] = f"Bearer {self.token}"
            await self._send(headers, body)

    async def _send(self, headers: dict, body: dict) -> None:
        delay = 0.1
        for attempt in range(1, self.max_attempts + 1):
            try:
                r = await self._http.post(self.url, json=body, headers=headers)
                if 200 <= r.status_code < 300:
                    self.counters.sent += 1
                    return
            except httpx.HTTPError:
                pass
            self.counters.failures += 1
            # Eventarc retries a failed delivery with exponential backoff (same ce-id).
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)
        self.counters.gave_up += 1
        log.warning("trigger %s: gave up on %s after %d attempts", self.collection, headers.get("ce-subject"),
                    self.max_attempts)

    def stop(self) -> None:
        """Thread-safe: stop after the queued changes are sent."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: getattr(self, "_stop", None) and self._stop.set())

    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0
