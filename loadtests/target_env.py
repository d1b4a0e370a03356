"""A target-environment file: the endpoints of a system that is already running somewhere
(`surgesim worker --target-env FILE`), so a load machine sends to it without starting
anything. The variables are the ones the locustfile reads (locust_users.py):

    # one KEY=VALUE a line; blank lines and comments ignored
    COMMAND_URL=http://10.0.0.5:8080      <SERVICE>_URL, one per HTTP service the scenario sends to
    PUBSUB_EMULATOR_HOST=10.0.0.5:8085    where publish sources go (REST)
    GOOGLE_CLOUD_PROJECT=my-project       else the system file's project
    FIRESTORE_EMULATOR_HOST=10.0.0.5:8086 where firestore: sources write
    SURGESIM_HEADER_AUTHORIZATION=Bearer eyJ...   a header on every HTTP request
                                          (SURGESIM_HEADER_X_API_KEY -> X-Api-Key)
    SURGESIM_SUBSCRIPTIONS=orders-sub,audit-sub   `surgesim live --target-env` only: the
                                          subscriptions whose backlog it peeks (surgesim/live/pubsub_peek.py)

`surgesim live --master` writes one for its own run (runs/<id>/loadgen/target.env);
`surgesim live SCENARIO --target-env FILE` is a load-only run against the system it names.
"""

from __future__ import annotations

import re
from pathlib import Path

HEADER_PREFIX = "SURGESIM_HEADER_"

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


class TargetEnvError(ValueError):
    """file:line: what is wrong (one line per problem)."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def read_target_env(path: str | Path) -> dict[str, str]:
    """KEY=VALUE lines as a dict (quotes around a value removed); TargetEnvError names
    every bad line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetEnvError([f"{p}: cannot read: {exc.strerror or exc}"]) from exc
    env: dict[str, str] = {}
    problems = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            problems.append(f"{p}:{n}: want KEY=VALUE, got {raw.strip()[:60]!r}")
            continue
        key, value = m.group(1), m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    if problems:
        raise TargetEnvError(problems)
    return env


def write_target_env(path: str | Path, env: dict[str, str], comment: str = "") -> Path:
    """The inverse of read_target_env (keys sorted)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    p.write_text(head + "".join(f"{k}={env[k]}\n" for k in sorted(env)), encoding="utf-8")
    return p


def target_headers(env: dict[str, str]) -> dict[str, str]:
    """SURGESIM_HEADER_<NAME>=value -> {Name: value} (underscores are dashes: X_API_KEY ->
    X-Api-Key), for every HTTP request the generators send (an auth token for a staging
    system). Pub/Sub publishes go to an emulator and carry none."""
    out = {}
    for key, value in env.items():
        if key.startswith(HEADER_PREFIX) and len(key) > len(HEADER_PREFIX):
            name = "-".join(part.capitalize() for part in key[len(HEADER_PREFIX):].split("_"))
            out[name] = value
    return out
