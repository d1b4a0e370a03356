"""PostgreSQL + pgvector as an emulator (emulators/postgres.py): `up --only postgres` starts
the bundled server on the asked port with pgvector installable, a similarity query works,
`down` stops its whole process group and removes its cluster; `up` without --only leaves it
alone. A few seconds."""

from __future__ import annotations

import os

import psutil
import pytest

from surgesim.emulators import down, status, up
from surgesim.emulators.postgres import cluster_dir, connect
from surgesim.emulators.process import free_port, port_open

pytestmark = pytest.mark.integration


def test_up_query_down(tmp_path):
    pytest.importorskip("psycopg")
    port = free_port()
    try:
        stack = up("postgres", ports={"postgres": port}, state_dir=tmp_path)
    except Exception:
        down("postgres", state_dir=tmp_path)
        raise
    st = stack.emulators["postgres"]
    try:
        assert st.owned and st.healthy and st.ports == {"postgres": port}
        assert stack.env_vars()["PGPORT"] == str(port) and stack.env_vars()["PGHOST"] == "127.0.0.1"
        with connect("127.0.0.1", port, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v vector(3))")
            conn.execute("INSERT INTO t VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0,0,1]')")
            nearest = conn.execute("SELECT id FROM t ORDER BY v <=> '[0.1,0.9,0]' LIMIT 1").fetchone()
            assert nearest == (2,)
        # a second up reuses it rather than starting another
        again = up("postgres", ports={"postgres": port}, state_dir=tmp_path)
        assert again.emulators["postgres"].action == "reused" and again.emulators["postgres"].pid == st.pid
        assert cluster_dir(tmp_path / "data" / "postgres").is_dir()
    finally:
        res = down("postgres", state_dir=tmp_path)
    assert res.stopped and res.stopped[0].was_running, res.messages
    left = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == st.pgid and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p.pid)
        except (psutil.Error, OSError):
            pass
    assert not left
    assert not port_open("127.0.0.1", port)
    assert not cluster_dir(tmp_path / "data" / "postgres").exists()
    assert status("postgres", state_dir=tmp_path).emulators["postgres"].status == "stopped"


def test_up_without_only_does_not_start_it():
    from surgesim.emulators.stack import default_emulators, parse_only

    reg = default_emulators()
    assert "postgres" not in parse_only(None, reg, optional=False)
    assert "postgres" in parse_only(None, reg)  # down/status without --only cover it
    assert parse_only("postgres", reg, optional=False) == ["postgres"]
