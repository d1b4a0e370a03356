"""FirestoreClaims (services/common/idempotency.py) on the real Firestore emulator: the same
lease semantics as the in-memory stand-in, and two instances racing for one event."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from surgesim.services.common.idempotency import ClaimState, FirestoreClaims

pytestmark = pytest.mark.integration


@pytest.fixture
def db(gcp, monkeypatch):
    from google.cloud import firestore

    for k, v in gcp.env_vars().items():
        monkeypatch.setenv(k, v)
    return lambda: firestore.AsyncClient(project=gcp.project)


def key() -> str:
    return "claim-test-" + uuid.uuid4().hex


def test_claim_lease_semantics_on_the_emulator(db):
    async def go():
        claims, k = FirestoreClaims(db(), lease_s=60), key()
        first = await claims.claim(k)
        assert first.state is ClaimState.NEW and first.attempts == 1
        assert (await claims.claim(k)).state is ClaimState.BUSY  # live lease
        await claims.release(first, "boom")
        retry = await claims.claim(k)
        assert retry.state is ClaimState.NEW and retry.attempts == 2
        await claims.complete(retry, {"ok": 1})
        done = await claims.claim(k)
        assert done.state is ClaimState.DONE and done.result == {"ok": 1} and done.attempts == 2
        lapsing, k2 = FirestoreClaims(db(), lease_s=0), key()
        await lapsing.claim(k2)
        taken = await lapsing.claim(k2)  # a dead worker's lease lapses
        assert taken.state is ClaimState.NEW and taken.attempts == 2

    asyncio.run(go())


def test_two_instances_racing_for_one_event_claim_it_once(db):
    """Separate stores (separate instances: no shared in-process lock), fresh events and
    lapsed leases: exactly one delivery of each event gets NEW."""
    async def go():
        keys = [key() for _ in range(10)]
        a, b = FirestoreClaims(db(), lease_s=60), FirestoreClaims(db(), lease_s=60)

        def winners(claims):
            return [sum(c.state is ClaimState.NEW for c in claims[i:i + 2]) for i in range(0, len(claims), 2)]

        fresh = await asyncio.gather(*[s.claim(k) for k in keys for s in (a, b)])
        assert winners(fresh) == [1] * len(keys)
        # leases that lapsed at once (a worker that died): both instances race to take over
        lapsed, dead = [key() for _ in range(10)], FirestoreClaims(db(), lease_s=0)
        for k in lapsed:
            await dead.claim(k)
        again = await asyncio.gather(*[s.claim(k) for k in lapsed for s in (a, b)])
        assert winners(again) == [1] * len(lapsed)
        assert {c.attempts for c in again if c.state is ClaimState.NEW} == {2}

    asyncio.run(go())
