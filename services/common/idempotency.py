"""Exactly-once side effects on at-least-once delivery.

A reactor that calls an external API claims the event id in `processed_messages` before
the call and marks it done after. The claim is a lease, not a tombstone: if the call fails
the claim is released (the redelivery tries again with the same idempotency key), and if
the process dies mid-call the lease expires and a later delivery takes over. A delivery
that finds the claim done acks without calling; one that finds a live lease nacks (the
message is still being handled, and may yet fail). Each doc carries `expireAt` for a
Firestore TTL policy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

PROCESSED = "processed_messages"


class ClaimState(enum.Enum):
    NEW = "new"  # ours: do the work, then complete() or release()
    DONE = "done"  # already handled: ack, do nothing
    BUSY = "busy"  # another delivery holds a live lease: nack and let Pub/Sub retry


@dataclass
class Claim:
    state: ClaimState
    key: str
    owner: str
    result: Any = None
    attempts: int = 0


class ClaimStore(Protocol):
    async def claim(self, key: str) -> Claim: ...
    async def complete(self, claim: Claim, result: Any = None) -> None: ...
    async def release(self, claim: Claim, error: str = "") -> None: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def doc_id(key: str) -> str:
    # Firestore ids may not contain '/', nor be '.'/'..' or match __.*__.
    return key.replace("/", "_").replace("__", "_")[:1500] or "_"


class FirestoreClaims:
    """Claims as single-document writes with preconditions, not client transactions.

    A first delivery (the common case) is one `create` (precondition: the document does
    not exist); only when that fails does the claim read the document and decide: done →
    DONE, a live lease → BUSY, otherwise take over with an update whose precondition is
    the update time it read, so two deliveries racing for a lapsed lease cannot both win.
    With `complete`, a handled event costs two round trips instead of five (read, begin,
    read, commit, update), and no document lock is held between them.
    """

    def __init__(self, db, collection: str = PROCESSED, lease_s: float = 30.0, ttl_s: float = 7 * 86400) -> None:
        self.db = db
        self.collection = collection
        self.lease_s = lease_s
        self.ttl_s = ttl_s
        # Concurrent deliveries of one event inside this instance queue here instead of
        # failing each other's preconditions in Firestore.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def claim(self, key: str) -> Claim:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            return await self._claim(key)

    def ref(self, key: str):
        return self.db.collection(self.collection).document(doc_id(key))

    async def _claim(self, key: str) -> Claim:
        from google.api_core import exceptions as gexc

        ref = self.ref(key)
        owner = uuid.uuid4().hex
        for _ in range(3):  # only a document deleted between create and read goes round again
            now = _now()
            lease = {"state": "processing", "owner": owner, "claimedAt": now,
                     "leaseUntil": now + dt.timedelta(seconds=self.lease_s)}
            try:
                await ref.create({"key": key, **lease, "attempts": 1, "expireAt": now + dt.timedelta(seconds=self.ttl_s)})
                return Claim(ClaimState.NEW, key, owner, attempts=1)
            except gexc.AlreadyExists:
                pass
            snap = await ref.get()
            if not snap.exists:
                continue
            d = snap.to_dict()
            if d.get("state") == "done":
                return Claim(ClaimState.DONE, key, d.get("owner", ""), d.get("result"), d.get("attempts", 0))
            until = d.get("leaseUntil")
            if d.get("state") == "processing" and until is not None and until > now:
                return Claim(ClaimState.BUSY, key, d.get("owner", ""), attempts=d.get("attempts", 0))
            attempts = int(d.get("attempts", 0)) + 1
            try:
                await ref.update({**lease, "attempts": attempts},
                                 option=self.db.write_option(last_update_time=snap.update_time))
            except (gexc.FailedPrecondition, gexc.NotFound):
                # a concurrent delivery took the lapsed lease first: it holds the claim now
                return Claim(ClaimState.BUSY, key, "")
            return Claim(ClaimState.NEW, key, owner, attempts=attempts)
        return Claim(ClaimState.BUSY, key, "")

    async def complete(self, claim: Claim, result: Any = None) -> None:
        await self.ref(claim.key).update({"state": "done", "result": result, "completedAt": _now(), "leaseUntil": None})

    async def release(self, claim: Claim, error: str = "") -> None:
        await self.ref(claim.key).update({"state": "failed", "lastError": error[:500], "leaseUntil": None})


class MemoryClaims:
    """In-process stand-in with the same semantics, for unit tests only."""

    def __init__(self, lease_s: float = 30.0) -> None:
        self.lease_s = lease_s
        self.docs: dict[str, dict] = {}
        self._lock = asyncio.Lock()

    async def claim(self, key: str) -> Claim:
        async with self._lock:
            d = self.docs.get(key)
            owner = uuid.uuid4().hex
            now = time.monotonic()
            if d is None:
                self.docs[key] = {"state": "processing", "owner": owner, "attempts": 1, "leaseUntil": now + self.lease_s}
                return Claim(ClaimState.NEW, key, owner, attempts=1)
            if d["state"] == "done":
                return Claim(ClaimState.DONE, key, d["owner"], d.get("result"), d["attempts"])
            if d["state"] == "processing" and d["leaseUntil"] is not None and d["leaseUntil"] > now:
                return Claim(ClaimState.BUSY, key, d["owner"], attempts=d["attempts"])
            d.update(state="processing", owner=owner, attempts=d["attempts"] + 1, leaseUntil=now + self.lease_s)
            return Claim(ClaimState.NEW, key, owner, attempts=d["attempts"])

    async def complete(self, claim: Claim, result: Any = None) -> None:
        async with self._lock:
            self.docs[claim.key].update(state="done", result=result, leaseUntil=None)

    async def release(self, claim: Claim, error: str = "") -> None:
        async with self._lock:
            self.docs[claim.key].update(state="failed", lastError=error, leaseUntil=None)
