"""Cloud Storage emulator: ``gcp-storage-emulator`` (PyPI), in-memory."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from .base import Emulator, find_executable, http_get, json_body
from .errors import MissingToolError

#: Read by google-cloud-storage itself; unlike the others it includes the scheme.
STORAGE_EMULATOR_HOST = "STORAGE_EMULATOR_HOST"


class StorageEmulator(Emulator):
    name = "storage"
    title = "Cloud Storage emulator"
    port_keys = ("storage",)
    default_ports = {"storage": 9023}
    startup_timeout = 30.0

    def _exe(self) -> str:
        exe = find_executable("gcp-storage-emulator")
        if exe is None:
            raise MissingToolError(
                "The Cloud Storage emulator `gcp-storage-emulator` is not installed. Install it "
                "into the same environment: `pip install gcp-storage-emulator` (or "
                "`pip install -e .` in the surgesim checkout)."
            )
        return exe

    def check_installed(self) -> None:
        self._exe()

    def command(self, host: str, ports: Mapping[str, int], project: str, data_dir: Path) -> list[str]:
        return [self._exe(), "start", "--host", host, "--port", str(self.main_port(ports)), "--in-memory"]

    def healthy(self, host: str, ports: Mapping[str, int], project: str, timeout: float = 1.0) -> bool:
        body = json_body(http_get(f"http://{host}:{self.main_port(ports)}/storage/v1/b?project={project}", timeout))
        return body is not None and body.get("kind") == "storage#buckets"

    def env_vars(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {STORAGE_EMULATOR_HOST: f"http://{host}:{self.main_port(ports)}"}

    def version(self) -> str | None:
        try:
            return metadata.version("gcp-storage-emulator")
        except metadata.PackageNotFoundError:
            return None
