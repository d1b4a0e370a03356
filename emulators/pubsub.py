"""The official Pub/Sub emulator (``gcloud beta emulators pubsub start``, a Java process)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .base import Emulator, http_get, json_body
from .errors import MissingToolError
from .gcloud_sdk import INSTALL_HELP, find_sdk, gcloud_env, require_emulator

PUBSUB_EMULATOR_HOST = "PUBSUB_EMULATOR_HOST"


class PubSubEmulator(Emulator):
    name = "pubsub"
    title = "Pub/Sub emulator"
    port_keys = ("pubsub",)
    default_ports = {"pubsub": 8085}
    startup_timeout = 60.0

    def check_installed(self) -> None:
        sdk = require_emulator("pubsub")
        install = sdk.root / ".install"
        if install.is_dir() and not (install / "beta.manifest").exists():
            raise MissingToolError(
                "The Pub/Sub emulator is started with `gcloud beta ...`, and the gcloud `beta` "
                "component is not installed: run `gcloud components install beta` (the Debian "
                "package google-cloud-cli includes it).\n" + INSTALL_HELP
            )

    def command(self, host: str, ports: Mapping[str, int], project: str, data_dir: Path) -> list[str]:
        sdk = require_emulator("pubsub")
        return [
            sdk.gcloud, "beta", "emulators", "pubsub", "start",
            f"--host-port={host}:{self.main_port(ports)}",
            f"--project={project}",
            # gcloud writes env.yaml here; the default (~/.config/gcloud/emulators/pubsub)
            # would be shared between concurrent emulators.
            f"--data-dir={data_dir}",
        ]

    def prepare(self, env: dict[str, str], data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        env.update(gcloud_env(env))

    def healthy(self, host: str, ports: Mapping[str, int], project: str, timeout: float = 1.0) -> bool:
        # Listing topics over the emulator's REST adapter (same port as gRPC).
        url = f"http://{host}:{self.main_port(ports)}/v1/projects/{project}/topics"
        return json_body(http_get(url, timeout)) is not None

    def env_vars(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {PUBSUB_EMULATOR_HOST: f"{host}:{self.main_port(ports)}"}

    def version(self) -> str | None:
        sdk = find_sdk()
        return sdk.component_version("pubsub") if sdk else None
