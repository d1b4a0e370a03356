"""PostgreSQL with pgvector, standing in for Cloud SQL / AlloyDB: the server binaries that
the ``pgserver`` wheel bundles (PostgreSQL 16 with pgvector's ``vector.so``), run directly.

Why not ``pgserver``'s own Python API: it daemonises postgres through ``pg_ctl`` and keeps
its own registry of running servers, so the process would not be ours to watch and stop by
process group like every other emulator. We run the bundled ``postgres`` in the foreground
instead (``initdb`` first, in ``prepare``): its process group is the emulator's.

Each start is a fresh cluster (like the in-memory emulators): ``prepare`` wipes the data
directory and runs ``initdb``; ``cleanup`` (after ``down``) removes it. Durability is off
(``fsync``, ``synchronous_commit``, ``full_page_writes``): this is a rehearsal database, and
fsync on a shared machine is what would otherwise set its write speed.

PostgreSQL refuses to run as root. Run as root (containers, CI), the server runs as the
unprivileged ``nobody`` through ``setpriv``; its data directory is then made ``nobody``'s, and
if the state directory is not reachable by ``nobody`` (e.g. under a 0700 pytest temp dir)
the cluster lives in a directory of its own under the system temp dir, named after the
state directory, instead.

Clients find it through libpq's own variables (PGHOST, PGPORT, PGUSER), which psycopg,
psql and every libpq-based driver read without configuration.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .errors import MissingToolError, StartupError
from .base import Emulator

SUPERUSER = "postgres"
UNPRIVILEGED = "nobody"
INSTALL_HINT = "pip install 'surgesim[pgvector]'  (pgserver==0.1.4 and psycopg[binary])"


def bin_dir() -> Path:
    """The bundled server's bin/ (initdb, postgres, psql), or MissingToolError."""
    # found, not imported: importing pgserver starts its own server machinery (and warns)
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise MissingToolError(f"PostgreSQL with pgvector needs the `pgserver` wheel: {INSTALL_HINT}")
    d = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (d / "postgres").is_file():
        raise MissingToolError(f"the pgserver package has no postgres binary at {d}: reinstall it ({INSTALL_HINT})")
    return d


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _reachable_by_others(path: Path) -> bool:
    """Every existing ancestor lets others traverse it (o+x), as `nobody` needs."""
    for p in [path, *path.parents]:
        if p.exists() and not p.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def cluster_dir(data_dir: Path) -> Path:
    """Where the cluster lives for the emulator's data directory (see the module doc)."""
    if not _as_root() or _reachable_by_others(data_dir.parent):
        return data_dir / "pgdata"
    tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"surgesim-postgres-{tag}"


def _drop_privileges() -> list[str]:
    """The argv prefix that runs a server binary as `nobody` when we are root, else []."""
    if not _as_root():
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise MissingToolError("running as root, PostgreSQL must run as another user; `setpriv` (util-linux) is missing")
    pw = pwd.getpwnam(UNPRIVILEGED)
    return [setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]


def connect(host: str, port: int, dbname: str = "postgres", timeout: float = 2.0, **kw):
    """A psycopg connection as the superuser (trust authentication on 127.0.0.1)."""
    import psycopg

    return psycopg.connect(host=host, port=port, user=SUPERUSER, dbname=dbname,
                           connect_timeout=max(1, round(timeout)), **kw)


class PostgresEmulator(Emulator):
    name = "postgres"
    title = "PostgreSQL + pgvector (pgserver's bundled server)"
    port_keys = ("postgres",)
    # not 5432: a developer's own PostgreSQL is often there
    default_ports = {"postgres": 54329}
    startup_timeout = 60.0
    optional = True  # an extra: pip install 'surgesim[pgvector]'

    def check_installed(self) -> None:
        bin_dir()
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise MissingToolError(f"PostgreSQL's client `psycopg` is not installed: {INSTALL_HINT}") from exc
        _drop_privileges()

    def prepare(self, env: dict[str, str], data_dir: Path) -> None:
        """A fresh cluster: wipe what an earlier start left and run initdb."""
        pgdata = cluster_dir(data_dir)
        self.cleanup(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        pgdata.mkdir(parents=True)
        if _as_root():
            pw = pwd.getpwnam(UNPRIVILEGED)
            os.chown(pgdata, pw.pw_uid, pw.pw_gid)
        cmd = [*_drop_privileges(), str(bin_dir() / "initdb"), "-D", str(pgdata), "-U", SUPERUSER,
               "--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        if out.returncode != 0:
            raise StartupError(f"initdb failed (exit {out.returncode}): {' '.join(cmd)}\n{out.stderr.strip()[-2000:]}")

    def command(self, host: str, ports: Mapping[str, int], project: str, data_dir: Path) -> list[str]:
        return [*_drop_privileges(), str(bin_dir() / "postgres"), "-D", str(cluster_dir(data_dir)),
                "-p", str(self.main_port(ports)), "-h", host,
                "-c", "unix_socket_directories=",  # TCP only: no socket path (length limits, permissions)
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200"]

    def healthy(self, host: str, ports: Mapping[str, int], project: str, timeout: float = 1.0) -> bool:
        """Connects and finds pgvector among the installable extensions."""
        try:
            with connect(host, self.main_port(ports), timeout=timeout) as conn:
                row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
            return row is not None
        except Exception:  # noqa: BLE001 -- not up (yet), or not PostgreSQL
            return False

    def env_vars(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {"PGHOST": host, "PGPORT": str(self.main_port(ports)), "PGUSER": SUPERUSER}

    def cleanup(self, data_dir: Path) -> None:
        for d in {cluster_dir(data_dir), data_dir / "pgdata"}:
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)

    def version(self) -> str | None:
        try:
            from importlib import metadata

            return "pgserver " + metadata.version("pgserver")
        except Exception:  # noqa: BLE001
            return None
