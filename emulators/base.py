"""What every emulator definition provides, plus shared helpers (HTTP checks, tool lookup)."""

from __future__ import annotations

import os
import shutil
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

HOST = "127.0.0.1"


class Emulator(ABC):
    """One kind of emulator: how to start it, check it, and point clients at it.

    ``port_keys`` name its ports in the flat port mapping used everywhere
    (``{"pubsub": 8085, "bigquery": 9050, "bigquery_grpc": 9060, ...}``); the first key
    is the main (health-checked) port.
    """

    name: str = ""
    title: str = ""
    port_keys: tuple[str, ...] = ()
    default_ports: Mapping[str, int] = {}
    #: port keys the emulator sends to rather than listens on (served by the harness)
    sends_to: tuple[str, ...] = ()
    startup_timeout: float = 60.0
    #: not started by ``up`` without ``only`` (it needs an extra: ``pip install 'surgesim[...]'``)
    optional: bool = False
    #: told of slow one-time work before a start (e.g. installing the tool's own environment)
    on_message: Callable[[str], None] | None = None

    @abstractmethod
    def check_installed(self) -> None:
        """Raise MissingToolError (saying how to install) if it cannot be started here."""

    @abstractmethod
    def command(self, host: str, ports: Mapping[str, int], project: str, data_dir: Path) -> list[str]:
        """The argv that starts it in the foreground."""

    @abstractmethod
    def healthy(self, host: str, ports: Mapping[str, int], project: str, timeout: float = 1.0) -> bool:
        """A real request that only this kind of emulator answers correctly."""

    @abstractmethod
    def env_vars(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        """Environment variables that point clients at it."""

    def prepare(self, env: dict[str, str], data_dir: Path) -> None:  # noqa: B027 -- optional, not abstract
        """One-off set-up before a start (may edit ``env``). Default: nothing."""

    def cleanup(self, data_dir: Path) -> None:  # noqa: B027 -- optional, not abstract
        """After ``down`` stopped it: remove what it left in ``data_dir``. Default: nothing."""

    def version(self) -> str | None:
        return None

    def main_port(self, ports: Mapping[str, int]) -> int:
        return int(ports[self.port_keys[0]])


def http_get(url: str, timeout: float = 1.0) -> httpx.Response | None:
    """GET without proxies from the environment; None on any transport error."""
    try:
        return httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None


def json_body(resp: httpx.Response | None) -> dict | None:
    if resp is None or resp.status_code != 200:
        return None
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def find_executable(name: str) -> str | None:
    """``name`` next to this interpreter (the venv's bin/) or on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(name)
