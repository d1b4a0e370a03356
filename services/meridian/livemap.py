"""Meridian's live-map updater: pulls vehicle.telemetry and keeps one LiveMap document per
vehicle, written at most once per DEBOUNCE_SECONDS (batched, 500 per commit).

Pings are acked as soon as they are folded into memory: the live map shows the latest
position only, so a crash loses at most one debounce interval of positions, which the
next pings restore. Undecodable pings are nacked (dead-lettered after max attempts).

Env: SUBSCRIPTION (default telemetry-livemap), DEBOUNCE_SECONDS (5), LIVEMAP_COLLECTION
(LiveMap), MAX_OUTSTANDING, PULL_STREAMS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading

from fastapi import FastAPI

from surgesim.services.common.puller import make_pull_app

from .telemetry import receive_ping

_pending: dict[str, dict] = {}
_lock = threading.Lock()


def on_message(message, counters) -> None:
    ping = receive_ping(message, counters)
    if ping is None:
        return
    with _lock:
        counters["received"] += 1
        old = _pending.get(ping.vehicle_id)
        if old is None or str(old.get("ts", "")) <= ping.ts:
            _pending[ping.vehicle_id] = {**ping.raw, "vehicleId": ping.vehicle_id, "lat": ping.lat, "lng": ping.lng}
    message.ack()


def _write(db, collection: str, docs: dict[str, dict]) -> None:
    items = list(docs.items())
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(0, len(items), 500):
        batch = db.batch()
        for vid, doc in items[i:i + 500]:
            batch.set(db.collection(collection).document(vid), {**doc, "updatedAt": now})
        batch.commit()


async def flush_loop(app: FastAPI) -> None:
    from google.cloud import firestore

    from surgesim.services.common.runtime import project

    db = firestore.Client(project=project())
    interval = float(os.environ.get("DEBOUNCE_SECONDS", "5"))
    collection = os.environ.get("LIVEMAP_COLLECTION", "LiveMap")
    counters = app.state.counters
    while True:
        await asyncio.sleep(interval)
        with _lock:
            docs = dict(_pending)
            _pending.clear()
        if not docs:
            continue
        try:
            await asyncio.to_thread(_write, db, collection, docs)
            counters["docs_written"] += len(docs)
            counters["flushes"] += 1
        except Exception:
            counters["flush_errors"] += 1
            app.state.log.exception("LiveMap flush failed; keeping the positions for the next one")
            with _lock:
                for vid, doc in docs.items():
                    _pending.setdefault(vid, doc)


app = make_pull_app("live-map", "telemetry-livemap", on_message, background=flush_loop,
                    description=__doc__.split("\n\n")[0])
app.state.gauges = lambda: {"pending_vehicles": len(_pending)}
