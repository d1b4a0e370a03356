"""Functions in a live run: a system file's `function: {source, target, signature}` run with
the Functions Framework, as Cloud Run functions runs it, in the function's own virtualenv.

The environment is built from the function's requirements.txt (plus `functions-framework`
when the file does not name it, as Cloud Run's buildpack adds it) with the ordinary pip,
and cached under `$XDG_CACHE_HOME/surgesim/function-envs/<hash>` (`~/.cache/...`; not emulator
state, so shared by every state directory): the hash covers the requirements and
the Python version, so a second run (or a second function with the same requirements)
reuses it. Nothing of surgesim is installed there: the function sees only what it would
see in the cloud.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from surgesim.schema.system import Function

FRAMEWORK = "functions-framework"


def requirements(source: Path) -> list[str]:
    """The function's requirement lines, with the Functions Framework added if absent."""
    path = source / "requirements.txt"
    lines = [ln.strip() for ln in path.read_text().splitlines()] if path.exists() else []
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    named = {ln.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].split("~")[0].strip().lower()
             .replace("_", "-") for ln in lines}
    return lines if FRAMEWORK in named else [*lines, FRAMEWORK]


def env_dir(source: Path, cache: Path) -> Path:
    key = hashlib.sha256("\n".join([sys.version, *requirements(source)]).encode()).hexdigest()[:16]
    return cache / key


def ensure_env(source: Path, cache: Path, timeout: float = 900.0) -> Path:
    """The virtualenv for this function's requirements (built once, then reused); its path.
    Built in place (a venv's scripts name their own path, so it cannot be moved) under a
    file lock, and marked complete only once pip succeeded."""
    target = env_dir(source, cache)
    if (target / ".complete").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent builder of the same env waits, then reuses it
        if (target / ".complete").exists():
            return target
        shutil.rmtree(target, ignore_errors=True)  # a half-built one from an interrupted run
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, capture_output=True, timeout=120)
        reqs = target / "requirements.txt"
        reqs.write_text("\n".join(requirements(source)) + "\n")
        done = subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(reqs)],
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise RuntimeError(f"function {source}: pip could not install its requirements.txt:\n"
                               f"{(done.stderr or done.stdout)[-3000:]}")
        (target / ".complete").touch()
    return target


def command(fn: Function, env: Path) -> list[str]:
    """The command line that serves the function on $PORT (the Proc sets PORT)."""
    source = Path(fn.source).resolve()
    return [str(env / "bin" / "functions-framework"), f"--source={source / 'main.py'}", f"--target={fn.target}",
            f"--signature-type={fn.signature}", "--host=127.0.0.1"]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "surgesim" / "function-envs"
