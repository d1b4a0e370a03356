"""Functions in a live run: a system file's `function: {source, target, signature}` run with
the Functions Framework, as Cloud Run functions runs it, in the function's own virtualenv.

The environment holds the function's requirements.txt (plus `functions-framework` when
the file does not name it, as Cloud Run's buildpack adds it), installed with the ordinary
pip into a cached venv of its own: the same mechanism as the BigQuery emulator's
(emulators/tool_env.py: `~/.cache/surgesim/tools/function-py3X-<hash of the
requirements>`, a file lock, rebuilt when half-made), so a second run, or a second
function with the same requirements, reuses it. Nothing of surgesim is installed there:
the function sees only what it would see in the cloud.
"""

from __future__ import annotations

from pathlib import Path

from surgesim.emulators import tool_env
from surgesim.emulators.errors import MissingToolError
from surgesim.schema.system import Function

FRAMEWORK = "functions-framework"


def requirements(source: Path) -> list[str]:
    """The function's requirement lines, with the Functions Framework added if absent."""
    path = source / "requirements.txt"
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()] if path.exists() else []
    lines = [ln for ln in lines if ln]
    named = {ln.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].split("~")[0].strip().lower()
             .replace("_", "-") for ln in lines}
    return lines if FRAMEWORK in named else [*lines, FRAMEWORK]


def ensure_env(source: Path, say=None) -> Path:
    """The functions-framework script of the venv for this function's requirements (built
    once, then reused)."""
    try:
        return tool_env.ensure("function", tuple(requirements(source)), FRAMEWORK, say=say)
    except MissingToolError as exc:
        why = str(exc).split("\nInstall it yourself")[0]
        raise RuntimeError(f"function {source}: its requirements.txt did not install: {why}") from None


def command(fn: Function, framework: Path, source: Path) -> list[str]:
    """The command line that serves the function on $PORT (the Functions Framework reads it);
    source: the function's folder, resolved against the system file's."""
    return [str(framework), f"--source={source / 'main.py'}", f"--target={fn.target}",
            f"--signature-type={fn.signature}", "--host=127.0.0.1"]
