"""The state directory and its JSON state file: exactly what surgesim started.

Layout of the state directory (default ``$SURGESIM_HOME`` or ``~/.surgesim``)::

    state.json       {"version": 1, "project": ..., "host": ...,
                      "started":  {name: ManagedProcess fields},   <- ours; `down` stops these
                      "external": {name: {"ports": ..., "seen_at": ...}}}  <- reused, never stopped
    fidelity.json    the last Pub/Sub fidelity probe (emulators/probe.py)
    logs/<name>.log  each emulator's stdout+stderr (the previous one kept as <name>.log.prev)
    data/<name>/     per-emulator working data (e.g. gcloud's pubsub env.yaml)
    .lock            flock'ed while `up`/`down` change things
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .process import ManagedProcess

STATE_FILE = "state.json"
FIDELITY_FILE = "fidelity.json"
ENV_HOME = "SURGESIM_HOME"


def resolve_state_dir(state_dir: str | os.PathLike | None = None) -> Path:
    """Explicit argument, else ``$SURGESIM_HOME``, else ``~/.surgesim`` (absolute)."""
    if state_dir is None:
        state_dir = os.environ.get(ENV_HOME) or Path.home() / ".surgesim"
    return Path(state_dir).expanduser().absolute()


@dataclass
class State:
    project: str | None = None
    host: str | None = None
    started: dict[str, ManagedProcess] = field(default_factory=dict)
    external: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "version": 1,
            "project": self.project,
            "host": self.host,
            "started": {k: v.to_dict() for k, v in self.started.items()},
            "external": self.external,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "State":
        return cls(
            project=data.get("project"),
            host=data.get("host"),
            started={k: ManagedProcess.from_dict(v) for k, v in (data.get("started") or {}).items()},
            external=dict(data.get("external") or {}),
        )

    def is_empty(self) -> bool:
        return not self.started and not self.external


def load_state(state_dir: str | os.PathLike | None = None) -> State:
    path = resolve_state_dir(state_dir) / STATE_FILE
    try:
        return State.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return State()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a valid surgesim state file ({exc}); delete it if no "
                         "emulator started by surgesim is running") from exc


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_state(state: State, state_dir: str | os.PathLike | None = None) -> None:
    """Write the state; an empty state removes the file ("cleared")."""
    path = resolve_state_dir(state_dir) / STATE_FILE
    if state.is_empty():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    write_json_atomic(path, state.to_dict())


@contextlib.contextmanager
def locked(state_dir: str | os.PathLike | None = None, timeout: float = 300.0) -> Iterator[Path]:
    """Exclusive lock on the state directory (between processes), yields its path."""
    d = resolve_state_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "a+") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another surgesim process holds {d / '.lock'}") from None
                time.sleep(0.1)
        try:
            yield d
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
