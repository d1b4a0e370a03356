"""The official Firestore emulator (``gcloud emulators firestore start``, a Java process)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .base import Emulator, http_get, json_body
from .gcloud_sdk import find_sdk, gcloud_env, require_emulator

FIRESTORE_EMULATOR_HOST = "FIRESTORE_EMULATOR_HOST"


class FirestoreEmulator(Emulator):
    name = "firestore"
    title = "Firestore emulator"
    port_keys = ("firestore",)
    default_ports = {"firestore": 8086}
    startup_timeout = 60.0

    def check_installed(self) -> None:
        require_emulator("firestore")

    def command(self, host: str, ports: Mapping[str, int], project: str, data_dir: Path) -> list[str]:
        sdk = require_emulator("firestore")
        # Native mode is the default; the emulator is project-agnostic (the client names it).
        return [sdk.gcloud, "emulators", "firestore", "start", f"--host-port={host}:{self.main_port(ports)}"]

    def prepare(self, env: dict[str, str], data_dir: Path) -> None:
        env.update(gcloud_env(env))

    def healthy(self, host: str, ports: Mapping[str, int], project: str, timeout: float = 1.0) -> bool:
        # "GET /" answers "Ok" -- but so does the Pub/Sub emulator, so also list documents
        # of a collection over Firestore's REST API (which the Pub/Sub emulator 404s).
        base = f"http://{host}:{self.main_port(ports)}"
        root = http_get(base + "/", timeout)
        if root is None or root.status_code != 200 or root.text.strip() != "Ok":
            return False
        docs = http_get(f"{base}/v1/projects/{project}/databases/(default)/documents/_surgesim_health?pageSize=1", timeout)
        return json_body(docs) is not None

    def env_vars(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {FIRESTORE_EMULATOR_HOST: f"{host}:{self.main_port(ports)}"}

    def version(self) -> str | None:
        sdk = find_sdk()
        return sdk.component_version("firestore") if sdk else None
