"""BigQuery subscription bridge: topic -> table, as a Pub/Sub BigQuery subscription writes.

The Pub/Sub emulator accepts ``bigqueryConfig`` and ignores it. This bridge provisions a
pull subscription under the BigQuery subscription's name, pulls in batches and inserts
rows into the BigQuery emulator with ``insert_rows_json(..., retry=None, timeout=...)``
(the emulator answers a bad row with HTTP 500, on which the client's default retry would
spin for ten minutes). Messages are acked only after their rows landed; a failed insert
nacks the batch so it is redelivered (and dead-lettered if a policy says so), as Pub/Sub
does when BigQuery refuses a write.

Throughput (docs/benchmarks/bridges.md): the bridge pulls and acks over **gRPC** (unary
``Pull`` with raw protobuf messages, ``emulators.pubsub_grpc``; REST pull + ack was its
limit at ~3-6k msg/s), and ``workers`` pull -> insert -> ack loops run side by side so
that one pulls and builds rows while another's insert is in flight. Admin calls
(creating the subscription) stay on REST.

Row shapes, as Pub/Sub's:

* ``write_metadata``: ``subscription_name``, ``message_id``, ``publish_time``,
  ``data`` (the payload as a string) and ``attributes`` (a JSON string);
* ``use_table_schema``: the message's JSON object mapped onto the table's columns
  (fields the table lacks are dropped), plus the metadata columns when
  ``write_metadata`` is also set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable


from .pubsub_grpc import PACED_BELOW, Poller, PubSubGrpc
from .pubsub_rest import PubSubRest, PubSubRestError, stoppable_sleep

#: Least time between two pulls that return only a trickle (pubsub_grpc.Poller.pace).
PULL_PACE_S = 0.05

log = logging.getLogger(__name__)


def message_row(received: dict, subscription: str, *, write_metadata: bool = True, use_table_schema: bool = False,
                columns: set[str] | None = None) -> dict:
    """One table row for one message pulled over REST (``{"ackId", "message": {...}}``)."""
    m = received["message"]
    return _row(base64.b64decode(m.get("data", "") or ""), m.get("attributes") or {}, m["messageId"],
                m["publishTime"], subscription, write_metadata, use_table_schema, columns)


def pb_message_row(received, subscription: str, *, write_metadata: bool = True, use_table_schema: bool = False,
                   columns: set[str] | None = None) -> dict:
    """The same row for a raw protobuf ``ReceivedMessage`` pulled over gRPC."""
    m = received.message
    return _row(m.data, dict(m.attributes), m.message_id, m.publish_time.ToJsonString(), subscription,
                write_metadata, use_table_schema, columns)


def _row(raw: bytes, attributes: dict, message_id: str, publish_time: str, subscription: str,
         write_metadata: bool, use_table_schema: bool, columns: set[str] | None) -> dict:
    row: dict = {}
    if use_table_schema:
        try:
            obj = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise ValueError(f"message {message_id} is not a JSON object: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"message {message_id} is not a JSON object")
        row.update({k: v for k, v in obj.items() if columns is None or k in columns})
    if write_metadata:
        row.update({
            "subscription_name": subscription,
            "message_id": message_id,
            "publish_time": publish_time,
            "attributes": json.dumps(attributes, sort_keys=True),
        })
        if not use_table_schema:
            row["data"] = raw.decode("utf-8", errors="replace")
    return row


@dataclass
class BqCounters:
    rows: int = 0
    batches: int = 0
    failed_batches: int = 0
    bad_messages: int = 0


class BigQuerySubscriptionBridge:
    """``batch``: messages per pull; ``max_insert_rows``: the most rows one insert carries;
    ``max_linger``: the longest a pulled message waits for its insert to fill while a
    backlog remains (once a pull comes back empty, what is pending is written at once);
    ``min_interval``: the least time between two inserts that are not full (see _inserter);
    ``workers``: inserts in flight at once."""

    def __init__(self, rest: PubSubRest, bq_client, *, subscription: str, topic: str, table: str,
                 write_metadata: bool = True, use_table_schema: bool = False, batch: int = 1000,
                 ack_deadline: float = 60.0, dead_letter: tuple[str, int] | None = None,
                 insert_timeout: float = 30.0, on_settled: Callable[[str, str, str], None] | None = None,
                 workers: int = 2, max_insert_rows: int = 5000, max_linger: float = 1.0,
                 min_interval: float = 0.5) -> None:
        self.rest = rest
        self.bq = bq_client
        self.subscription = subscription
        self.topic = topic
        self.table = table if table.count(".") == 2 else f"{bq_client.project}.{table}"
        self.write_metadata = write_metadata
        self.use_table_schema = use_table_schema
        self.batch = batch
        self.max_insert_rows = max(batch, max_insert_rows)
        self.ack_deadline = ack_deadline
        self.dead_letter = dead_letter
        self.insert_timeout = insert_timeout
        self.on_settled = on_settled
        self.workers = max(1, workers)
        self.counters = BqCounters()
        self._columns: set[str] | None = None
        self._stop = asyncio.Event()
        self._grpc: PubSubGrpc | None = None
        # pulled and converted, not yet handed to an insert: (row, ack id, message id)
        self._pending: list[tuple[dict, str, str]] = []
        self._changed: asyncio.Condition | None = None
        self._caught_up = True  # the last pull was empty: no backlog behind what is pending
        self._pending_since = 0.0
        self.max_linger = max_linger
        self.min_interval = min_interval
        self._last_insert = -math.inf

    async def provision(self) -> None:
        await self.rest.ensure_topic(self.topic)
        await self.rest.create_subscription(self.subscription, self.topic, ack_deadline=self.ack_deadline,
                                            dead_letter=self.dead_letter)
        if self.use_table_schema:
            table = await asyncio.to_thread(self.bq.get_table, self.table)
            self._columns = {f.name for f in table.schema}

    def stop(self) -> None:
        self._stop.set()

    def _insert(self, rows: list[dict]) -> list:
        return self.bq.insert_rows_json(self.table, rows, retry=None, timeout=self.insert_timeout)

    async def run(self) -> None:
        # The gRPC channel belongs to the loop that runs the bridge.
        self._grpc = PubSubGrpc(self.rest.endpoint, self.rest.project)
        self._changed = asyncio.Condition()
        puller = asyncio.create_task(self._puller())
        inserters = [asyncio.create_task(self._inserter()) for _ in range(self.workers)]
        try:
            await self._stop.wait()
            async with self._changed:
                self._changed.notify_all()
            await puller  # ends after its current pull: nothing pulled is left unwritten
        finally:
            puller.cancel()
            await asyncio.gather(puller, return_exceptions=True)
            async with self._changed:
                self._changed.notify_all()  # inserters finish what is pending, then leave
            await asyncio.gather(*inserters, return_exceptions=True)
            await self._grpc.aclose()

    # One puller keeps the buffer filled while inserts are in flight: the BigQuery emulator
    # copies the whole table into a time-travel snapshot on every insertAll (bqemulator's
    # SnapshotManager.record_change), so an insert costs more as the table grows and few
    # large inserts beat many small ones. Pulling stops while the buffer holds a full insert;
    # while a backlog remains the inserters wait for a full one, once caught up they write
    # what there is (no lingering at low rates).
    async def _puller(self) -> None:
        # paced: BigQuery subscriptions write in batches anyway, and the telemetry path's
        # steady trickle was the emulator's largest source of pulls in a live run
        poller = Poller(self._grpc, self.subscription, self._stop, idle_min=0.01, pace=PULL_PACE_S)
        while not self._stop.is_set():
            async with self._changed:
                await self._changed.wait_for(lambda: len(self._pending) < self.max_insert_rows or self._stop.is_set())
            if self._stop.is_set():
                return
            want = min(self.batch, self.max_insert_rows - len(self._pending))
            got = await poller.pull(want)
            # The emulator answers a backlog in parts of a hundred or more, so a smaller
            # pull (or an empty one) says the backlog is gone: write what there is.
            self._caught_up = len(got) < PACED_BELOW
            if got:
                await self._convert(got)
            async with self._changed:
                self._changed.notify_all()

    async def _convert(self, got: list) -> None:
        bad = []
        async with self._changed:
            for r in got:
                try:
                    row = pb_message_row(r, self.subscription, write_metadata=self.write_metadata,
                                         use_table_schema=self.use_table_schema, columns=self._columns)
                except ValueError:
                    bad.append(r.ack_id)
                    continue
                if not self._pending:
                    self._pending_since = time.monotonic()
                self._pending.append((row, r.ack_id, r.message.message_id))
            self._changed.notify_all()
        if bad:
            # Pub/Sub cannot write such a message either: it is nacked (and dead-lettered by policy).
            self.counters.bad_messages += len(bad)
            await self._nack(bad)

    # Inserts that are not full start at most every min_interval: at a trickle (telemetry at
    # rate_scale 0.02 is 33-100 rows/s, which polls hand over a few rows at a time)
    # an insert per pull made the emulator copy the growing table tens of times a second,
    # 0.2-0.4 of a core by the end of a 3-minute dispatch wave. Production's BigQuery
    # subscriptions land rows seconds after publish too.
    async def _inserter(self) -> None:
        while True:
            async with self._changed:
                # With a backlog behind, wait for a full insert; caught up, write at once.
                while not self._insert_due():
                    left = self._interval_left()
                    if left is None:
                        await self._changed.wait()
                    else:
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._changed.wait(), left)
                if not self._pending:
                    return  # stopped, nothing left
                take, self._pending = self._pending[:self.max_insert_rows], self._pending[self.max_insert_rows:]
                self._last_insert = time.monotonic()
                self._changed.notify_all()  # room for the puller
            await self._write(take)

    def _interval_left(self) -> float | None:
        left = self._last_insert + self.min_interval - time.monotonic()
        return left if self._pending and left > 0 else None

    def _insert_due(self) -> bool:
        if self._stop.is_set() or len(self._pending) >= self.max_insert_rows:
            return True
        if not self._pending or self._interval_left() is not None:
            return False
        return self._caught_up or time.monotonic() - self._pending_since >= self.max_linger

    async def _nack(self, ack_ids: list[str]) -> None:
        try:
            await self._grpc.modify_ack_deadline(self.subscription, ack_ids, 0)
        except PubSubRestError as exc:  # they come back when their deadline passes anyway
            log.warning("bigquery bridge %s: %s", self.subscription, exc)

    async def _write(self, take: list[tuple[dict, str, str]]) -> None:
        rows = [row for row, _, _ in take]
        ack_ids = [a for _, a, _ in take]
        try:
            errors = await asyncio.to_thread(self._insert, rows)
        except Exception as exc:  # noqa: BLE001 -- the emulator answers a bad row with 500
            errors = [str(exc)]
        if errors:
            self.counters.failed_batches += 1
            log.warning("bigquery bridge insert into %s failed: %s", self.table, str(errors)[:300])
            await self._nack(ack_ids)
            await stoppable_sleep(self._stop, 0.5)
            return
        self.counters.rows += len(rows)
        self.counters.batches += 1
        # at least once: acked only after the insert returned without errors
        try:
            await self._grpc.ack(self.subscription, ack_ids)
        except PubSubRestError as exc:  # redelivered and written again, as Pub/Sub may
            log.warning("bigquery bridge %s: ack failed: %s", self.subscription, exc)
            return
        if self.on_settled:
            for _, _, message_id in take:
                self.on_settled(self.subscription, message_id, "acked")
