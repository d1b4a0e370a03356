"""The official Firestore emulator (the gcloud component's ``cloud_firestore_emulator``, a
Java process).

Started directly rather than through ``gcloud emulators firestore start``, which passes on
only host, port, rules and import/export: the emulator's ``--functions_emulator host:port``
makes it POST every write that matches a registered trigger to that address (the Firebase
Functions emulator's protocol). The trigger bridge serves that address
(``firestore_events`` port; emulators/triggers.py, ``TriggerHook``), which costs O(1) per
write where collection listeners cost O(documents listened) per write.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .base import Emulator, http_get, json_body
from .gcloud_sdk import find_sdk, gcloud_env, require_emulator

FIRESTORE_EMULATOR_HOST = "FIRESTORE_EMULATOR_HOST"


class FirestoreEmulator(Emulator):
    name = "firestore"
    title = "Firestore emulator"
    port_keys = ("firestore", "firestore_events")
    #: firestore_events is not the emulator's: it is where the emulator sends trigger events
    default_ports = {"firestore": 8086, "firestore_events": 8089}
    sends_to = ("firestore_events",)
    startup_timeout = 60.0

    def check_installed(self) -> None:
        require_emulator("firestore")

    def command(self, host: str, ports: Mapping[str, int], project: str, data_dir: Path) -> list[str]:
        sdk = require_emulator("firestore")
        # Native mode is the default; the emulator is project-agnostic (the client names it).
        return [str(sdk.component_dir("firestore") / "cloud_firestore_emulator"), "--host", host,
                "--port", str(self.main_port(ports)), "--functions_emulator", f"{host}:{ports['firestore_events']}"]

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
