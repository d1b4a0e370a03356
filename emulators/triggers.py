"""Firestore trigger bridge: document changes -> Eventarc CloudEvents to the target service.

The Firestore emulator has no Eventarc. This bridge watches a collection and POSTs, per
change, a CloudEvent in HTTP binary mode: ``ce-*`` headers (``ce-type``
``google.cloud.firestore.document.v1.written`` -- or ``created``/``updated``/``deleted``
as the trigger's ``events`` ask -- ``ce-id``, ``ce-source``, ``ce-subject``, ``ce-time``,
``ce-specversion``, ``ce-document``, ``ce-database``, ``ce-namespace``...) and, as Eventarc
sends it, a ``google.events.cloud.firestore.v1.DocumentEventData`` protobuf body (``value``,
``old_value``, ``update_mask``; ``content-type: application/protobuf``) built with the
``google-events`` types; with ``encoding="json"`` the same message in its proto3 JSON form
(``application/json``), as Eventarc sends when asked for JSON. Only documents matching the
trigger's path pattern (``orders/{orderId}``, Eventarc's ``match-path-pattern``) fire.

Three sources (``source=``):

* ``"emulator"`` (what ``surgesim live`` uses when the stack started the Firestore emulator
  with its trigger hook, emulators/firestore.py): the emulator itself POSTs every write
  that matches a registered trigger, as it does for the Firebase Functions emulator
  (``--functions_emulator host:port``; the trigger is registered with ``POST
  /emulator/v1/projects/{p}/eventarcTrigger?eventarcTriggerId=...``). One request per
  write, in write order, one at a time, with the old and new document
  (``DocumentEventData`` protobuf, sent as base64 text), and O(1) per write whatever the
  collection holds. The emulator does not retry and sends nothing else until answered,
  so :class:`TriggerHook` answers at once and queues. No trigger can be deleted: at stop
  the bridge re-registers its id on a collection nobody writes.
* ``"listen"``: collection listeners (``on_snapshot``), one per ``__name__``
  key range (``partitions``). The emulator pushes the state after every commit, so each
  write is one event (an outbox relies on it: four commands on one document
  within milliseconds are four events). Cost: on every commit the Firestore emulator
  re-sends *every* document of *every* listen target (200 writes into one collection
  gave ~21,000 ``document_change`` messages on a raw ``Listen`` stream; 800 writes
  ~324,000 with 8 key-range targets), and the Python listener handles each: it keeps up
  to ~20-40 writes/s (docs/benchmarks/bridges.md).
* ``"poll"``: a change feed polled with ``RunQuery`` (raw gRPC, raw protobuf), comparing
  each document's update time with the last state read. A read costs O(documents)
  whatever the write rate; after each read the poller pauses ``max(poll_interval,
  poll_pause_factor x the read's duration)``. Exact to 160-320 writes/s, but writes to
  one document between two reads arrive as **one** change (and a document created and
  deleted between two reads is not seen): for collections written at high rates where
  each document changes rarely.

Exactly once per change: a change is (document, update_time); re-sent or replayed states
with a known update time are dropped; documents present at start are the baseline
(Eventarc fires only for changes after the trigger exists). See docs/bridges.md.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import re

import grpc
from google.cloud.firestore_v1 import types as _ft
from google.events.cloud import firestore as _events
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from . import service_http
from .identity import Issuer, identity_headers
from .metrics import rfc3339_epoch
from .pubsub_rest import stoppable_sleep

log = logging.getLogger(__name__)

EVENT_PREFIX = "google.cloud.firestore.document.v1."
_RunQueryRequest = _ft.RunQueryRequest.pb()
_RunQueryResponse = _ft.RunQueryResponse.pb()
_RUN_QUERY = "/google.firestore.v1.Firestore/RunQuery"
_GRPC_OPTIONS = [("grpc.max_receive_message_length", -1)]
_KEY_CHARS = "".join(sorted(string.digits + string.ascii_letters))


#: google.events.cloud.firestore.v1 messages (raw protobuf classes: C speed). Their wire
#: format is google.firestore.v1's, so the emulator's documents parse into them as they are.
_EventData = _events.DocumentEventData.pb()
_EventDocument = _events.Document.pb()
DATASCHEMA = ("https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/"
              "firestore/v1/data.proto")


def path_matcher(pattern: str) -> Callable[[str], bool]:
    """Eventarc's path pattern (``orders/{orderId}``; ``{x}`` is one segment, ``{x=**}``
    any number of them) as a test of a document path such as ``orders/O1``."""
    parts = []
    for seg in pattern.split("/"):
        if re.fullmatch(r"\{\w+=\*\*\}", seg):
            parts.append(r"[^/]+(?:/[^/]+)*")
        elif re.fullmatch(r"\{\w+\}", seg):
            parts.append(r"[^/]+")
        else:
            parts.append(re.escape(seg))
    rx = re.compile("/".join(parts))
    return lambda path: rx.fullmatch(path) is not None


def partition_bounds(partitions: int) -> list[tuple[str | None, str | None]]:
    """``partitions`` half-open ranges of document ids covering every id."""
    partitions = max(1, min(partitions, len(_KEY_CHARS)))
    cuts = [_KEY_CHARS[round(i * len(_KEY_CHARS) / partitions)] for i in range(1, partitions)]
    lows: list[str | None] = [None, *cuts]
    highs: list[str | None] = [*cuts, None]
    return list(zip(lows, highs))


def classify(old, new) -> str:
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


def changed_fields(old, new) -> list[str]:
    """The update mask of an update: the top-level fields whose value changed, was added
    or removed (sorted)."""
    keys = set(old.fields) | set(new.fields)
    return sorted(k for k in keys if k not in old.fields or k not in new.fields or old.fields[k] != new.fields[k])


def event_data(new, old):
    """The DocumentEventData of one change (google-events' raw protobuf message)."""
    data = _EventData()
    if new is not None:
        data.value.CopyFrom(new)
    if old is not None:
        data.old_value.CopyFrom(old)
    if new is not None and old is not None:
        data.update_mask.field_paths.extend(changed_fields(old, new))
    return data


def build_event(*, project: str, database: str, document: str, event_type: str, new, old,
                update_time: str | None, encoding: str = "protobuf") -> tuple[dict, bytes]:
    """(headers, body) of one Firestore CloudEvent in binary mode, as Eventarc sends it.

    ``document``: the document's path (``orders/O1``); ``new``/``old``: google-events
    ``Document`` protobufs (None: absent). The content type carries ``datacontenttype``
    (binary mode maps it to Content-Type, there is no ``ce-datacontenttype`` header)."""
    data = event_data(new, old)
    if encoding == "json":
        body, ctype = json_format.MessageToJson(data, indent=None).encode(), "application/json"
    else:
        body, ctype = data.SerializeToString(), "application/protobuf"
    headers = {
        "content-type": ctype,
        "ce-specversion": "1.0",
        "ce-id": str(uuid.uuid4()),
        "ce-type": event_type,
        "ce-source": f"//firestore.googleapis.com/projects/{project}/databases/{database}",
        "ce-subject": f"documents/{document}",
        "ce-time": update_time or dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "ce-dataschema": DATASCHEMA,
        "ce-project": project,
        "ce-database": database,
        "ce-namespace": "(default)",
        "ce-document": document,
        "ce-location": "local",
    }
    return headers, body


def snapshot_document(snap, name: str):
    """A listener's DocumentSnapshot as a google-events ``Document`` protobuf."""
    from google.cloud.firestore_v1 import _helpers

    doc = _ft.Document(name=name, fields=_helpers.encode_dict(snap.to_dict() or {}),
                       create_time=snap.create_time, update_time=snap.update_time)
    return _EventDocument.FromString(_ft.Document.pb(doc).SerializeToString())


#: Where a stopped bridge points its trigger (the emulator cannot delete one).
DISABLED_PATTERN = "surgesim-trigger-disabled/{id}"


class TriggerHook:
    """The HTTP receiver the Firestore emulator POSTs document events to (the address given
    to its ``--functions_emulator``): one per run, on the stack's ``firestore_events`` port,
    serving every trigger bridge by trigger id. Serve it in the bridges' event loop."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port, self.host = port, host
        self.handlers: dict[str, Callable[[bytes], None]] = {}
        self.unknown = 0
        """Events for no trigger of this run (one left registered by an earlier run)."""
        self._server = None

    async def start(self) -> None:
        """Raises OSError when the port is taken."""
        from .front import serve

        self._server = await serve(self._app, self.port, self.host, lifespan="off")

    async def close(self) -> None:
        from .front import stop

        if self._server is not None:
            await stop(self._server)
            self._server = None

    async def _app(self, scope, receive, send) -> None:
        body = await service_http.read_body(receive)
        # /functions/projects/{project}/triggers/{trigger id}
        handler = self.handlers.get(scope["path"].rstrip("/").rsplit("/", 1)[-1])
        if handler is None:
            self.unknown += 1
        else:
            handler(body)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


async def register_trigger(http, endpoint: str, project: str, trigger_id: str, pattern: str,
                           database: str = "(default)") -> None:
    """Register (or, with DISABLED_PATTERN, neutralise) a document trigger with the
    Firestore emulator, which then POSTs each matching write to its ``--functions_emulator``
    address (the run's TriggerHook) under ``trigger_id``. ``http``: a service_http.session."""
    async with http.post(
            f"http://{endpoint}/emulator/v1/projects/{project}/eventarcTrigger",
            params={"eventarcTriggerId": trigger_id},
            json={"eventType": EVENT_PREFIX + "written", "database": database, "namespace": "(default)",
                  "document": {"value": pattern, "matchType": "PATH_PATTERN"}}) as r:
        if r.status != 200:
            raise RuntimeError(f"trigger {trigger_id}: the Firestore emulator refused the registration "
                               f"({r.status} {(await r.text())[:200]})")


#: Eventarc retries a failed delivery with exponential backoff (same ce-id). These are the
#: defaults of a bridge used on its own (a quick rehearsal); Bridges passes each trigger's
#: `retry` (Eventarc's 10 s doubling to 600 s, divided by the run's time scale).
RETRY_FIRST_S, RETRY_MAX_S = 0.1, 10.0


async def deliver(http, url: str, headers: dict, body: bytes, counters: "TriggerCounters", max_attempts: int,
                  what: str, backoff: tuple[float, float] = (RETRY_FIRST_S, RETRY_MAX_S)) -> bool:
    """POST one CloudEvent until a 2xx, retrying with backoff (first, max); False after max_attempts.
    A delivered event's change-to-2xx time (from its ce-time) goes to ``counters.lags``."""
    delay, most = backoff
    changed = change_epoch(headers.get("ce-time"))
    for _ in range(max_attempts):
        try:
            if 200 <= await service_http.post_status(http, url, body, headers) < 300:
                counters.sent += 1
                if changed is not None:
                    counters.lags.append((changed, max(0.0, time.time() - changed)))
                return True
        except service_http.FAILURES:
            pass
        counters.failures += 1
        await asyncio.sleep(delay)
        delay = min(most, delay * 2)
    counters.gave_up += 1
    log.warning("trigger %s: gave up on %s after %d attempts", what, headers.get("ce-subject"), max_attempts)
    return False


def change_epoch(ce_time: str | None) -> float | None:
    """Epoch seconds of a CloudEvent's ce-time (RFC 3339), None when absent or unreadable."""
    if not ce_time:
        return None
    try:
        return rfc3339_epoch(ce_time)
    except ValueError:
        return None


@dataclass
class TriggerCounters:
    changes: int = 0
    sent: int = 0
    duplicates_dropped: int = 0
    failures: int = 0
    gave_up: int = 0
    skipped: int = 0
    polls: int = 0
    poll_seconds: float = 0.0
    bad_events: int = 0
    #: (change epoch, seconds from the change to the target's 2xx) per delivered event: the
    #: trigger path's lag, `lag/<trigger>` in the run directory
    lags: list[tuple[float, float]] = field(default_factory=list)


class TriggerBridge:
    def __init__(self, db, *, collection: str, url: str, project: str, events: list[str] | None = None,
                 database: str = "(default)", partitions: int = 4, issuer: Issuer | None = None,
                 service_account: str | None = None,
                 concurrency: int = 32, max_attempts: int = 10, http=None,
                 source: str = "listen", endpoint: str | None = None, poll_interval: float = 0.05,
                 poll_pause_factor: float = 1.0, hook: TriggerHook | None = None, name: str | None = None,
                 document: str | None = None, encoding: str = "protobuf",
                 backoff: tuple[float, float] = (RETRY_FIRST_S, RETRY_MAX_S)) -> None:
        if source not in ("listen", "poll", "emulator"):
            raise ValueError(f"source must be 'emulator', 'listen' or 'poll', not {source!r}")
        if source == "emulator" and hook is None:
            raise ValueError("source 'emulator' needs the TriggerHook the Firestore emulator posts to")
        self.source = source
        self.hook = hook
        # one id per trigger: registering it again (a later run) replaces the emulator's
        self.trigger_id = "surgesim-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in (name or collection))
        self.db = db
        self.collection = collection
        # Eventarc's match-path-pattern; the listeners and the poll watch its collection
        self.document = document or f"{collection}/{{docId}}"
        if self.document.split("/", 1)[0] != collection:
            raise ValueError(f"trigger {name or collection}: pattern {self.document!r} is not in {collection!r}")
        if source != "emulator" and self.document.count("/") != 1:
            raise ValueError(f"trigger {name or collection}: the {source!r} source watches one collection; "
                             f"pattern {self.document!r} needs the emulator's own trigger events")
        self._matches = path_matcher(self.document)
        if encoding not in ("protobuf", "json"):
            raise ValueError(f"encoding must be 'protobuf' or 'json', not {encoding!r}")
        self.encoding = encoding
        self.url = url
        self.project = project
        self.events = list(events or ["written"])
        self.database = database
        self.partitions = partitions  # listeners, one per key range (the poll reads the collection at once)
        self.poll_interval = poll_interval
        self.poll_pause_factor = poll_pause_factor
        self.issuer = issuer  # signs the trigger's service account's ID tokens (Eventarc's identity)
        self.service_account = service_account
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff = backoff
        # the emulator's gRPC address: given, or the one the Firestore client uses
        self.endpoint = endpoint or getattr(db, "_emulator_host", None) or os.environ.get("FIRESTORE_EMULATOR_HOST")
        self.counters = TriggerCounters()
        self._http = http  # a service_http.session of the loop that runs the bridge, or one of its own
        self._own_http = http is None
        self._state: dict[str, Any] = {}  # doc id -> its last google-events Document
        self._queue: asyncio.Queue | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._watches: list = []
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
        prefix = f"{self._db_path()}/documents/{self.collection}/"
        with self._lock:
            for ch in changes:
                doc = ch.document
                doc_id = doc.id
                if ch.type.name == "REMOVED":
                    old = self._state.pop(doc_id, None)
                    if old is None or first["pending"]:
                        continue
                    out.append((doc_id, old, None))
                    continue
                old = self._state.get(doc_id)
                new = snapshot_document(doc, prefix + doc_id)
                if old is not None and old.update_time == new.update_time:
                    self.counters.duplicates_dropped += 1  # a reconnect replaying a known state
                    continue
                self._state[doc_id] = new
                if first["pending"]:
                    continue  # baseline: existed before the trigger
                out.append((doc_id, old, new))
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

    # ---- or the emulator's own trigger posts ----------------------------------------------
    async def _register(self, pattern: str) -> None:
        await register_trigger(self._http, self.endpoint, self.project, self.trigger_id, pattern, self.database)

    def _on_event(self, body: bytes) -> None:
        try:
            data = _EventData.FromString(base64.b64decode(body))
        except (ValueError, DecodeError):  # binascii.Error is a ValueError
            self.counters.bad_events += 1
            log.warning("trigger %s: undecodable event (%d bytes)", self.collection, len(body))
            return
        new = data.value if data.HasField("value") else None
        old = data.old_value if data.HasField("old_value") else None
        name = (new if new is not None else old).name
        self.counters.changes += 1
        self._queue.put_nowait((name.split("/documents/", 1)[-1][len(self.collection) + 1:], old, new))

    # ---- or a change feed: polling RunQuery ---------------------------------------------
    def _db_path(self) -> str:
        return f"projects/{self.project}/databases/{self.database}"

    def _query(self):
        parts = self.collection.split("/")
        req = _RunQueryRequest(parent="/".join([self._db_path(), "documents", *parts[:-1]]))
        req.structured_query.from_.add(collection_id=parts[-1])
        return req

    async def _poll(self, ready: asyncio.Event) -> None:
        """Read the whole collection, compare every document's update time with the last
        state, emit the differences; the first read is the baseline."""
        prefix = f"{self._db_path()}/documents/{self.collection}/"
        metadata = [("google-cloud-resource-prefix", self._db_path()), ("authorization", "Bearer owner")]
        req = self._query()
        baseline, failures = True, 0
        while not self._stop.is_set():
            t0 = time.monotonic()
            seen: set[str] = set()
            try:
                async for r in self._run_query(req, metadata=metadata, timeout=60):
                    if r.HasField("document"):
                        doc = r.document
                        doc_id = doc.name[len(prefix):]
                        seen.add(doc_id)
                        self._changed(doc_id, doc, emit=not baseline)
            except grpc.aio.AioRpcError as exc:
                failures += 1
                log.warning("trigger %s: runQuery failed (%s)", self.collection, exc.code().name)
                await stoppable_sleep(self._stop, min(5.0, 0.1 * 2 ** failures))
                continue
            failures = 0
            for doc_id in [k for k in self._state if k not in seen]:
                self._removed(doc_id, emit=not baseline)
            baseline = False
            ready.set()
            self.counters.polls += 1
            self.counters.poll_seconds += time.monotonic() - t0
            took = time.monotonic() - t0
            # keep the emulator mostly free for the system under test: a read of a large
            # collection is followed by a proportionally longer pause
            await stoppable_sleep(self._stop, max(self.poll_interval, self.poll_pause_factor * took))

    def _changed(self, doc_id: str, doc, *, emit: bool) -> None:
        old = self._state.get(doc_id)
        if old is not None and old.update_time == doc.update_time:
            return  # unchanged since the last read
        new = _EventDocument.FromString(doc.SerializeToString())  # same wire format
        self._state[doc_id] = new
        if emit:
            self.counters.changes += 1
            self._queue.put_nowait((doc_id, old, new))

    def _removed(self, doc_id: str, *, emit: bool) -> None:
        old = self._state.pop(doc_id, None)
        if old is not None and emit:
            self.counters.changes += 1
            self._queue.put_nowait((doc_id, old, None))

    # ---- delivery ---------------------------------------------------------------------------
    async def run(self, ready: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._stop = asyncio.Event()
        if self._http is None:
            self._http = service_http.session(30.0)
        channel = poller = None
        registered = False
        if self.source == "emulator":
            self.hook.handlers[self.trigger_id] = self._on_event
            await self._register(self.document)
            registered = True
        elif self.source == "poll":
            channel = grpc.aio.insecure_channel(self.endpoint, options=_GRPC_OPTIONS)
            self._run_query = channel.unary_stream(_RUN_QUERY, request_serializer=_RunQueryRequest.SerializeToString,
                                                   response_deserializer=_RunQueryResponse.FromString)
            polled = asyncio.Event()
            poller = asyncio.create_task(self._poll(polled))
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        try:
            if poller is not None:
                await asyncio.wait_for(polled.wait(), 30)
            elif self.source == "listen":
                await asyncio.to_thread(self._start_listeners)
                await asyncio.to_thread(self._ready.wait, 30)
            if ready is not None:
                ready.set()
            await self._stop.wait()
            # let what is already queued go out before stopping (bounded by the caller's patience)
            while not self._queue.empty():
                await asyncio.sleep(0.05)
        finally:
            self._stop.set()
            if registered:
                try:
                    await self._register(DISABLED_PATTERN)
                except (*service_http.FAILURES, RuntimeError) as exc:
                    log.warning("trigger %s: could not disable it on the emulator: %s", self.trigger_id, exc)
                self.hook.handlers.pop(self.trigger_id, None)
            tasks = [t for t in (poller, *workers) if t is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for watch in self._watches:
                await asyncio.to_thread(watch.unsubscribe)
            if channel is not None:
                await channel.close()
            if self._own_http:
                await self._http.close()

    async def _worker(self) -> None:
        while True:
            doc_id, old, new = await self._queue.get()
            document = f"{self.collection}/{doc_id}"
            event_type = wanted(self.events, classify(old, new))
            if event_type is None or not self._matches(document):
                self.counters.skipped += 1
                continue
            # ce-time: the write's time; the emulator's own ce-time has whole seconds only
            update = _pb_ts(new.update_time) if new is not None else None
            headers, body = build_event(project=self.project, database=self.database, document=document,
                                        event_type=event_type, new=new, old=old, update_time=update,
                                        encoding=self.encoding)
            headers.update(identity_headers(self.issuer, self.url, self.service_account))
            await self._send(headers, body)

    async def _send(self, headers: dict, data: bytes) -> None:
        await deliver(self._http, self.url, headers, data, self.counters, self.max_attempts, self.collection,
                      self.backoff)

    def stop(self) -> None:
        """Thread-safe: stop after the queued changes are sent."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._set_stop)

    def _set_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0


def _pb_ts(ts) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=dt.timezone.utc).isoformat().replace("+00:00", "Z")
