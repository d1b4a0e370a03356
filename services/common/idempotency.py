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
    def __init__(self, db, collection: str = PROCESSED, lease_s: float = 30.0, ttl_s: float = 7 * 86400) -> None:
        self.db = db
        self.collection = collection
        self.lease_s = lease_s
        self.ttl_s = ttl_s
        # Concurrent deliveries of one event inside this instance queue here instead of
        # aborting each other's transactions in Firestore.
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
        from google.cloud import firestore

        ref = self.ref(key)
        owner = uuid.uuid4().hex
        # Most redeliveries come after the work is done: answer them with one plain read.
        snap = await ref.get()
        if snap.exists and (snap.get("state") == "done"):
            d = snap.to_dict()
            return Claim(ClaimState.DONE, key, d.get("owner", ""), d.get("result"), d.get("attempts", 0))

        @firestore.async_transactional
        async def txn(transaction) -> Claim:
            snap = await ref.get(transaction=transaction)
            now = _now()
            if not snap.exists:
                transaction.create(ref, {
                    "key": key, "state": "processing", "owner": owner, "attempts": 1,
                    "claimedAt": now, "leaseUntil": now + dt.timedelta(seconds=self.lease_s),
                    "expireAt": now + dt.timedelta(seconds=self.ttl_s),
                })
                return Claim(ClaimState.NEW, key, owner, attempts=1)
            d = snap.to_dict()
            if d.get("state") == "done":
                return Claim(ClaimState.DONE, key, d.get("owner", ""), d.get("result"), d.get("attempts", 0))
            lease = d.get("leaseUntil")
            if d.get("state") == "processing" and lease is not None and lease > now:
                return Claim(ClaimState.BUSY, key, d.get("owner", ""), attempts=d.get("attempts", 0))
            attempts = int(d.get("attempts", 0)) + 1
            transaction.update(ref, {
                "state": "processing", "owner": owner, "attempts": attempts,
                "claimedAt": now, "leaseUntil": now + dt.timedelta(seconds=self.lease_s),
            })
            return Claim(ClaimState.NEW, key, owner, attempts=attempts)

        try:
            return await txn(self.db.transaction(max_attempts=3))
        except (gexc.Aborted, gexc.Conflict, gexc.AlreadyExists, ValueError) as exc:
            # Lost the race to a concurrent delivery of the same event (the emulator
            # aborts contended transactions): it holds the claim now.
            if isinstance(exc, ValueError) and not isinstance(exc.__cause__, gexc.Aborted):
                raise
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
