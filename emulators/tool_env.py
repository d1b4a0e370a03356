"""Emulators that are Python packages, each in a virtual environment of its own.

The BigQuery emulator (`bqemulator`) pins DuckDB and its extensions to exact versions and
registers a pytest plugin that imports docker's `testcontainers`. Installed next to
surgesim it would break `pytest` in the user's own project (exit 3, "Error while loading
plugin") and pin DuckDB for them. So surgesim installs it, once, into a cached venv of its
own and starts it from there: the user's environment never sees it.

Location: `$SURGESIM_TOOLS` if set, else `$XDG_CACHE_HOME/surgesim/tools`
(`~/.cache/surgesim/tools`). One folder per tool, Python version and pin set, so an
upgrade of either makes a new one rather than mutating an old one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .errors import MissingToolError


def tools_dir() -> Path:
    explicit = os.environ.get("SURGESIM_TOOLS")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "surgesim" / "tools"


def env_path(tool: str, requirements: tuple[str, ...]) -> Path:
    tag = hashlib.sha256(" ".join(sorted(requirements)).encode()).hexdigest()[:10]
    return tools_dir() / f"{tool}-py{sys.version_info[0]}{sys.version_info[1]}-{tag}"


def script(env: Path, name: str) -> Path:
    return env / "bin" / name


def ensure(tool: str, requirements: tuple[str, ...], entry: str,
           say: Callable[[str], None] | None = None, timeout: float = 900.0) -> Path:
    """The path of `entry` (a console script) in the tool's own venv, creating the venv
    and installing `requirements` into it the first time. Safe when several processes
    ask at once (a file lock); a half-made venv is removed and made again."""
    env = env_path(tool, requirements)
    exe = script(env, entry)
    done = env / ".surgesim-complete"
    if done.exists() and exe.exists():
        return exe
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f".{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists() and exe.exists():
            return exe
        if env.exists():
            shutil.rmtree(env)
        (say or (lambda m: None))(f"installing {tool} into its own environment {env} (once; about a minute)")
        began = time.monotonic()
        steps = [[sys.executable, "-m", "venv", str(env)],
                 [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  *requirements]]
        for cmd in steps:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if out.returncode != 0:
                shutil.rmtree(env, ignore_errors=True)
                raise MissingToolError(
                    f"could not install {tool} into {env}: `{' '.join(cmd[-len(requirements) - 1:])}` failed:\n"
                    f"{(out.stderr or out.stdout).strip()[-2000:]}\n"
                    f"Install it yourself and point SURGESIM_BQEMULATOR at its `{entry}` script, "
                    "or fix the cause and try again.")
        if not exe.exists():
            raise MissingToolError(f"{tool} installed into {env} but has no `{entry}` script")
        done.write_text(f"{time.monotonic() - began:.1f} s\n")
        (say or (lambda m: None))(f"installed {tool} in {time.monotonic() - began:.0f} s")
    return exe


__all__ = ["ensure", "env_path", "script", "tools_dir"]
