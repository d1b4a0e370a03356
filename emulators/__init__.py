"""Local Google Cloud as real processes: the Pub/Sub, Firestore, BigQuery and Storage
emulators, started, health-checked, reused and stopped by PID/process group.

Public API (see docs/emulators.md)::

    from surgesim.emulators import up, down, status, env_vars, Clients
    stack = up(project="demo")                 # idempotent; Stack
    stack.env_vars()                           # PUBSUB_EMULATOR_HOST, ... GOOGLE_CLOUD_PROJECT
    stack.clients.publisher()                  # official clients pointed at the emulators
    down()
"""

from .clients import Clients
from .errors import EmulatorError, MissingToolError, PortConflictError, StartupError
from .probe import FidelityReport, load_fidelity, probe_pubsub
from .stack import (
    DEFAULT_PROJECT,
    NAMES,
    DownResult,
    EmulatorStatus,
    Stack,
    default_emulators,
    down,
    env_vars,
    status,
    stray_processes,
    up,
)
from .state import resolve_state_dir

__all__ = [
    "DEFAULT_PROJECT", "NAMES", "Clients", "DownResult", "EmulatorError", "EmulatorStatus",
    "FidelityReport", "MissingToolError", "PortConflictError", "Stack", "StartupError",
    "default_emulators", "down", "env_vars", "load_fidelity", "probe_pubsub",
    "resolve_state_dir", "status", "stray_processes", "up",
]
