"""`surgesim schema KIND`: every shipped file is valid against it, and it catches what an
editor should flag (unknown keys, wrong types)."""

from __future__ import annotations

from pathlib import Path

import jsonschema_rs
import pytest
import yaml

from surgesim.commands.schema import json_schema
from surgesim.schema import detect_kind

ROOT = Path(__file__).resolve().parents[2]
# *.workflow.yaml are Workflows definitions, not surgesim files (tests/unit/test_seed_systems.py loads them);
# *.space.yaml are `surgesim optimize` search spaces (tests/unit/test_optimize.py reads them)
SHIPPED = [p for p in sorted(ROOT.glob("scenarios/*.yaml")) + sorted(ROOT.glob("scenarios/*/*.yaml"))
           if not p.name.endswith((".workflow.yaml", ".space.yaml"))]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_files_are_valid_against_their_json_schema(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    kind = detect_kind(data)
    validator = jsonschema_rs.validator_for(json_schema(kind))
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(data)]
    assert not errors, errors


def test_json_schema_flags_unknown_keys_and_wrong_types() -> None:
    data = yaml.safe_load((ROOT / "scenarios" / "mmc_05.yaml").read_text())
    validator = jsonschema_rs.validator_for(json_schema("scenario"))
    assert validator.is_valid(data)
    assert not validator.is_valid({**data, "duraton": "1h"})
    assert not validator.is_valid({**data, "traffic": "lots"})
