"""Locate the Google Cloud SDK and its emulator components without starting anything."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingToolError

INSTALL_HELP = """\
How to install:
  Debian/Ubuntu (Google's apt repository, https://cloud.google.com/sdk/docs/install#deb):
    sudo apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator \\
        google-cloud-cli-firestore-emulator default-jre-headless   # Java 17 or newer
  Other installs (gcloud from the tarball/installer):
    gcloud components install beta pubsub-emulator cloud-firestore-emulator
    and a Java 17+ runtime on PATH (e.g. openjdk-17-jre-headless / temurin-17)."""

# sdk-relative location of each emulator component, and its component id in .install/
COMPONENTS = {
    "pubsub": ("platform/pubsub-emulator", "pubsub-emulator", "google-cloud-cli-pubsub-emulator"),
    "firestore": (
        "platform/cloud-firestore-emulator",
        "cloud-firestore-emulator",
        "google-cloud-cli-firestore-emulator",
    ),
}


@dataclass(frozen=True)
class GcloudSdk:
    gcloud: str  # path of the gcloud executable
    root: Path  # installation.sdk_root

    @property
    def version(self) -> str | None:
        try:
            return (self.root / "VERSION").read_text().strip() or None
        except OSError:
            return None

    def component_dir(self, emulator: str) -> Path:
        return self.root / COMPONENTS[emulator][0]

    def component_version(self, emulator: str) -> str | None:
        """The installed component's version, from the SDK's install manifest or the jar name."""
        comp_id = COMPONENTS[emulator][1]
        snap = self.root / ".install" / f"{comp_id}.snapshot.json"
        try:
            for c in json.loads(snap.read_text()).get("components", []):
                if c.get("id") == comp_id:
                    v = (c.get("version") or {}).get("version_string")
                    if v:
                        return v
        except (OSError, ValueError):
            pass
        for jar in self.component_dir(emulator).glob("**/*.jar"):
            m = re.search(r"(\d+\.\d+\.\d+)", jar.name)
            if m:
                return m.group(1)
        return None


def _sdk_root_from_gcloud(gcloud: str) -> Path | None:
    # The usual layouts: <root>/bin/gcloud, symlinked from /usr/bin/gcloud (Debian package).
    real = Path(os.path.realpath(gcloud))
    if real.parent.name == "bin" and (real.parent.parent / "lib" / "gcloud.py").exists():
        return real.parent.parent
    try:
        out = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True, text=True, timeout=30,
            env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    root = out.stdout.strip()
    return Path(root) if out.returncode == 0 and root else None


@functools.lru_cache(maxsize=8)
def _find_sdk(path: str | None) -> GcloudSdk | None:
    gcloud = shutil.which("gcloud", path=path)
    if not gcloud:
        return None
    root = _sdk_root_from_gcloud(gcloud)
    return GcloudSdk(gcloud, root) if root else None


def find_sdk(path: str | None = None) -> GcloudSdk | None:
    """The SDK whose ``gcloud`` is on PATH (or on ``path``), or None."""
    return _find_sdk(path if path is not None else os.environ.get("PATH"))


def require_emulator(emulator: str, path: str | None = None) -> GcloudSdk:
    """The SDK, after checking gcloud, the emulator component and Java are all installed."""
    search_path = path if path is not None else os.environ.get("PATH")
    debian_pkg = COMPONENTS[emulator][2]
    sdk = find_sdk(search_path)
    if sdk is None:
        raise MissingToolError(
            f"The {emulator} emulator needs the Google Cloud CLI (`gcloud`), which is not on PATH.\n"
            + INSTALL_HELP
        )
    comp = sdk.component_dir(emulator)
    if not comp.is_dir() or not any(comp.glob("**/*.jar")):
        raise MissingToolError(
            f"gcloud is installed ({sdk.root}) but its {emulator} emulator component is not "
            f"(no jar under {comp}). Install the Debian package `{debian_pkg}`, or run "
            f"`gcloud components install {COMPONENTS[emulator][1]}`.\n" + INSTALL_HELP
        )
    if shutil.which("java", path=search_path) is None and not os.environ.get("JAVA_HOME"):
        raise MissingToolError(
            f"The {emulator} emulator runs on Java, and no `java` is on PATH. Install Java 17 "
            "or newer: `sudo apt-get install default-jre-headless` (Debian 12 gives Java 17) or "
            "any JRE 17+.\n" + INSTALL_HELP
        )
    return sdk


def gcloud_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for gcloud: never prompt, never check for updates over the network."""
    env = dict(os.environ if base is None else base)
    env.setdefault("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
    env.setdefault("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "1")
    env.setdefault("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
    return env
