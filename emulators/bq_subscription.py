"""BigQuery subscription bridge: topic -> table, as a Pub/Sub BigQuery subscription writes.

The Pub/Sub emulator accepts ``bigqueryConfig`` and ignores it. This bridge provisions a
pull subscription under the BigQuery subscription's name, pulls in batches and inserts
rows into the BigQuery emulator with ``insert_rows_json(..., retry=None, timeout=...)``
(the emulator answers a bad row with HTTP 500, on which the client's default retry would
spin for ten minutes). Messages are acked only after their rows landed; a failed insert
nacks the batch so it is redelivered (and dead-lettered if a policy says so), as Pub/Sub
does when BigQuery refuses a write.

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
import json
import logging
from dataclasses import dataclass
from typing import Callable


from .pubsub_rest import PubSubRest, ShortPoller, stoppable_sleep

log = logging.getLogger(__name__)


def message_row(received: dict, subscription: str, *, write_metadata: bool = True, use_table_schema: bool = False,
                columns: set[str] | None = None) -> dict:
    """One table row for one pulled message."""
    m = received["message"]
    raw = base64.b64decode(m.get("data", "") or "")
    row: dict = {}
    if use_table_schema:
        try:
            obj = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise ValueError(f"message {m['messageId']} is not a JSON object: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"message {m['messageId']} is not a JSON object")
        row.update({k: v for k, v in obj.items() if columns is None or k in columns})
    if write_metadata:
        row.update({
            "subscription_name": subscription,
            "message_id": m["messageId"],
            "publish_time": m["publishTime"],
            "attributes": json.dumps(m.get("attributes") or {}, sort_keys=True),
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
    def __init__(self, rest: PubSubRest, bq_client, *, subscription: str, topic: str, table: str,
                 write_metadata: bool = True, use_table_schema: bool = False, batch: int = 500,
                 ack_deadline: float = 60.0, dead_letter: tuple[str, int] | None = None,
                 insert_timeout: float = 30.0, on_settled: Callable[[str, str, str], None] | None = None,
                 workers: int = 2) -> None:
        self.rest = rest
        self.bq = bq_client
        self.subscription = subscription
        self.topic = topic
        self.table = table if table.count(".") == 2 else f"{bq_client.project}.{table}"
        self.write_metadata = write_metadata
        self.use_table_schema = use_table_schema
        self.batch = batch
        self.ack_deadline = ack_deadline
        self.dead_letter = dead_letter
        self.insert_timeout = insert_timeout
        self.on_settled = on_settled
        # Two pull -> insert -> ack loops, so one pulls while the other waits on its insert
        # (one loop spent its time alternating between the two emulators).
        self.workers = max(1, workers)
        self.counters = BqCounters()
        self._columns: set[str] | None = None
        self._stop = asyncio.Event()

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
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        poller = ShortPoller(self.rest, self.subscription, self._stop, idle_min=0.01, idle_max=0.1)
        while not self._stop.is_set():
            got = await poller.pull(self.batch)
            if got:
                await self._write(got)

    async def _write(self, got: list[dict]) -> None:
        rows, good, bad = [], [], []
        for r in got:
            try:
                rows.append(message_row(r, self.subscription, write_metadata=self.write_metadata,
                                        use_table_schema=self.use_table_schema, columns=self._columns))
                good.append(r)
            except ValueError:
                bad.append(r["ackId"])
        if bad:
            # Pub/Sub cannot write such a message either: it is nacked (and dead-lettered by policy).
            self.counters.bad_messages += len(bad)
            await self.rest.modify_ack_deadline(self.subscription, bad, 0)
        if not rows:
            return
        try:
            errors = await asyncio.to_thread(self._insert, rows)
        except Exception as exc:  # the emulator answers a bad row with 500
            errors = [str(exc)]
        ack_ids = [r["ackId"] for r in good]
        if errors:
            self.counters.failed_batches += 1
            log.warning("bigquery bridge insert into %s failed: %s", self.table, str(errors)[:300])
            await self.rest.modify_ack_deadline(self.subscription, ack_ids, 0)
            await stoppable_sleep(self._stop, 0.5)
            return
        self.counters.rows += len(rows)
        self.counters.batches += 1
        await self.rest.ack(self.subscription, ack_ids)
        if self.on_settled:
            for r in good:
                self.on_settled(self.subscription, r["message"]["messageId"], "acked")
