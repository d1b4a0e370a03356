"""BigQuery emulator: ``bqemulator`` (PyPI), an in-memory DuckDB-backed REST + gRPC server.

Chosen because it installs offline from PyPI with no patches and runs the official
``google-cloud-bigquery`` client's calls (see docs/emulators.md for the measured
differences). DuckDB loads its ``spatial``/``avro`` extensions from ``$HOME/.duckdb``;
they come from the ``duckdb-extension-*`` wheels and must be copied there once per
``$HOME`` (``prepare``) or DuckDB would try to download them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from .base import Emulator, find_executable, http_get, json_body
from .errors import MissingToolError, StartupError

#: Not read by google-cloud-bigquery (there is no official variable): ``host:port`` of the
#: REST API, the same convention as PUBSUB_/FIRESTORE_EMULATOR_HOST and as bqemulator's own
#: pytest fixture. Clients need ``api_endpoint="http://" + value`` (Clients.bigquery() does it).
BIGQUERY_EMULATOR_HOST = "BIGQUERY_EMULATOR_HOST"
#: Our own variable: host:port of the emulator's gRPC (Storage Read/Write API) endpoint.
BIGQUERY_EMULATOR_GRPC_HOST = "BIGQUERY_EMULATOR_GRPC_HOST"

PINNED = (
    "bqemulator==1.4.0 duckdb==1.5.5 duckdb-extensions==1.5.5 "
    "duckdb-extension-spatial==1.5.5 duckdb-extension-avro==1.5.5"
)
EXTENSIONS = ("spatial", "avro")


def _interpreter_of(script: str) -> str:
    """The Python that runs a console script (its shebang), else this interpreter."""
    try:
        with open(script, "rb") as f:
            first = f.readline().decode("utf-8", "replace").strip()
        if first.startswith("#!") and "python" in first:
            candidate = first[2:].split()[0]
            if os.path.exists(candidate):
                return candidate
    except OSError:
        pass
    return sys.executable


def extensions_installed(home: str | os.PathLike, duckdb_version: str) -> bool:
    base = Path(home) / ".duckdb" / "extensions" / f"v{duckdb_version.lstrip('v')}"
    return all(any(base.glob(f"*/{ext}.duckdb_extension")) for ext in EXTENSIONS)


def ensure_duckdb_extensions(python: str, home: str | os.PathLike) -> bool:
    """Copy DuckDB's extensions from the wheels into ``home``/.duckdb (idempotent).

    Returns True if it had to install them.
    """
    try:
        version = metadata.version("duckdb")
    except metadata.PackageNotFoundError:
        version = ""
    if version and extensions_installed(home, version):
        return False
    code = "from duckdb_extensions import import_extension as i\n" + "".join(
        f"i({ext!r})\n" for ext in EXTENSIONS
    )
    env = {**os.environ, "HOME": str(home)}
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    if out.returncode != 0:
        raise StartupError(
            "Could not install DuckDB's spatial/avro extensions for the BigQuery emulator "
            f"(HOME={home}). The five BigQuery-emulator packages must match exactly: "
            f"pip install {PINNED}\n{out.stderr.strip()[-2000:]}"
        )
    return True


class BigQueryEmulator(Emulator):
    name = "bigquery"
    title = "BigQuery emulator (bqemulator)"
    port_keys = ("bigquery", "bigquery_grpc")
    default_ports = {"bigquery": 9050, "bigquery_grpc": 9060}
    startup_timeout = 60.0

    def _exe(self) -> str:
        exe = find_executable("bqemulator")
        if exe is None:
            raise MissingToolError(
                "The BigQuery emulator `bqemulator` is not installed. Install it into the same "
                f"environment, with these exact versions: pip install {PINNED} "
                "(or `pip install -e .` in the surgesim checkout)."
            )
        return exe

    def check_installed(self) -> None:
        self._exe()

    def command(self, host: str, ports: Mapping[str, int], project: str, data_dir: Path) -> list[str]:
        return [
            self._exe(), "start",
            "--rest-host", host, "--rest-port", str(ports["bigquery"]),
            "--grpc-host", host, "--grpc-port", str(ports["bigquery_grpc"]),
            "--project", project,
            "--ephemeral",
            # info logging halves insert throughput (DESIGN.md)
            "--log-level", "warning",
        ]

    def prepare(self, env: dict[str, str], data_dir: Path) -> None:
        home = env.get("HOME") or os.path.expanduser("~")
        ensure_duckdb_extensions(_interpreter_of(self._exe()), home)

    def healthy(self, host: str, ports: Mapping[str, int], project: str, timeout: float = 1.0) -> bool:
        url = f"http://{host}:{self.main_port(ports)}/bigquery/v2/projects/{project}/datasets"
        body = json_body(http_get(url, timeout))
        return body is not None and body.get("kind") == "bigquery#datasetList"

    def env_vars(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {
            BIGQUERY_EMULATOR_HOST: f"{host}:{ports['bigquery']}",
            BIGQUERY_EMULATOR_GRPC_HOST: f"{host}:{ports['bigquery_grpc']}",
        }

    def version(self) -> str | None:
        try:
            return metadata.version("bqemulator")
        except metadata.PackageNotFoundError:
            return None
