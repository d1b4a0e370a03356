"""BigQuery emulator: ``bqemulator`` (PyPI), an in-memory DuckDB-backed REST + gRPC server.

Chosen because it installs offline from PyPI with no patches and runs the official
``google-cloud-bigquery`` client's calls (see docs/emulators.md for the measured
differences). DuckDB loads its ``spatial``/``avro`` extensions from ``$HOME/.duckdb``;
they come from the ``duckdb-extension-*`` wheels and must be copied there once per
``$HOME`` (``prepare``) or DuckDB would try to download them.

The emulator lives in a virtual environment of its own (``tool_env``, pinned by
``bqemulator.lock``), never in surgesim's: its pytest plugin and its exact DuckDB pins
would otherwise land in the user's environment. ``SURGESIM_BQEMULATOR`` names another
``bqemulator`` script to use instead.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from . import tool_env
from .base import Emulator, http_get, json_body
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
DUCKDB_VERSION = "1.5.5"
LOCK = Path(__file__).with_name("bqemulator.lock")
"""Every package of the emulator's own environment, pinned (emulators/tool_env.py)."""


def extensions_installed(home: str | os.PathLike, duckdb_version: str) -> bool:
    base = Path(home) / ".duckdb" / "extensions" / f"v{duckdb_version.lstrip('v')}"
    return all(any(base.glob(f"*/{ext}.duckdb_extension")) for ext in EXTENSIONS)


def ensure_duckdb_extensions(python: str, home: str | os.PathLike) -> bool:
    """Copy DuckDB's extensions from the wheels into ``home``/.duckdb (idempotent).

    Returns True if it had to install them.
    """
    if extensions_installed(home, DUCKDB_VERSION):
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
        explicit = os.environ.get("SURGESIM_BQEMULATOR")
        if explicit:
            if not os.access(explicit, os.X_OK):
                raise MissingToolError(f"SURGESIM_BQEMULATOR={explicit} is not an executable `bqemulator` script")
            return explicit
        return str(tool_env.ensure("bqemulator", ("-r", str(LOCK)), "bqemulator", say=self.on_message))

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
        ensure_duckdb_extensions(str(Path(self._exe()).parent / "python"), home)

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
        return "1.4.0"
