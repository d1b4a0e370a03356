"""Golden tests, one per Terraform resource type the importer maps: each directory under
tests/fixtures/terraform/types/ imports into the system file, plan, notes and left-out
list stored next to it. Regenerate after a deliberate change with
SURGESIM_UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from surgesim.importers.terraform import import_terraform
from surgesim.schema.plan import Plan
from surgesim.schema.system import System

TYPES = Path(__file__).resolve().parents[1] / "fixtures" / "terraform" / "types"
CASES = sorted(p.name for p in TYPES.iterdir() if p.is_dir())


def _snapshot(directory: Path) -> str:
    imported = import_terraform(directory)
    # Messages name files relative to the imported directory, so the snapshot is portable.
    return yaml.safe_dump({"system": imported.system, "plan": imported.plan, "notes": imported.notes,
                           "left_out": imported.skipped}, sort_keys=False, width=120)


@pytest.mark.parametrize("case", CASES)
def test_each_resource_type_imports_as_its_golden_file(case: str) -> None:
    got = _snapshot(TYPES / case)
    golden = TYPES / f"{case}.golden.yaml"
    if os.environ.get("SURGESIM_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), f"{case}: import differs from {golden.name}"
    data = yaml.safe_load(got)
    System.model_validate(data["system"])  # the golden file itself is a valid system
    Plan.model_validate(data["plan"])


def test_every_mapped_type_has_a_golden_case() -> None:
    from surgesim.importers.terraform.mapping import MAPPERS

    covered = set()
    for case in CASES:
        text = (TYPES / case / "main.tf").read_text()
        covered |= {t for t in MAPPERS if f'resource "{t}"' in text}
    # The v1 aliases of Cloud Run names share their mapper with the v2 resources.
    aliases = {"google_cloud_run_service_iam_member", "google_cloud_run_service_iam_binding"}
    assert set(MAPPERS) - aliases - covered == set()
