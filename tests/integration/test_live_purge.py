"""A live run on a reused emulator starts from an empty Firestore: what earlier runs wrote
is deleted (it is stale state, and it slows the trigger bridge's listeners)."""

from __future__ import annotations

import pytest

from surgesim.emulators import Clients
from surgesim.live import SystemRunner
from surgesim.schema import System

pytestmark = pytest.mark.integration


def test_purge_deletes_what_earlier_runs_left_in_firestore(gcp, tmp_path) -> None:
    system = System.model_validate({"name": "purge-check", "project": "surgesim-purge-check",
                                    "stores": {"firestore": [{"name": "parcels"}]}})
    db = Clients(gcp.env_vars(), project=system.project).firestore()
    db.collection("parcels").document("left-over").set({"status": "DELIVERED"})
    assert db.collection("parcels").document("left-over").get().exists
    with SystemRunner(system, None, gcp.state_dir, log_dir=tmp_path / "logs", purge=True):
        assert not db.collection("parcels").document("left-over").get().exists
        assert list(db.collection("parcels").limit(1).stream()) == []
    db.collection("parcels").document("kept").set({"status": "CREATED"})
    with SystemRunner(system, None, gcp.state_dir, log_dir=tmp_path / "logs2", purge=False):
        assert db.collection("parcels").document("kept").get().exists  # no purge, no delete
