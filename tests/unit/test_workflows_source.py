"""A system file's workflow `source:` is resolved next to the file and validated at load."""

import shutil
from pathlib import Path

import pytest

from surgesim.schema import load_system
from surgesim.schema.loading import SchemaError

SYSTEMS = Path(__file__).resolve().parents[2] / "scenarios" / "systems"


def with_source(tmp_path: Path, source: str) -> Path:
    text = (SYSTEMS / "meridian.yaml").read_text()
    old = "    source: meridian-dispatch.workflow.yaml"
    assert old in text  # meridian.yaml names its saga's Workflows YAML; these tests swap it
    path = tmp_path / "system.yaml"
    path.write_text(text.replace(old, f"    source: {source}"))
    return path


def test_source_is_resolved_next_to_the_system_file(tmp_path):
    shutil.copy(SYSTEMS / "meridian-dispatch.workflow.yaml", tmp_path / "saga.yaml")
    system = load_system(with_source(tmp_path, "saga.yaml"))
    assert system.workflows[0].source == str((tmp_path / "saga.yaml").resolve())


def test_unsupported_construct_in_the_source_is_a_load_error_with_line_and_step(tmp_path):
    (tmp_path / "bad.yaml").write_text("main:\n  steps:\n    - go:\n        parallel: {branches: []}\n")
    path = with_source(tmp_path, "bad.yaml")
    with pytest.raises(SchemaError) as e:
        load_system(path)
    msg = str(e.value)
    assert "system.yaml:" in msg and "workflows[0].source" in msg
    assert "main.steps.go: unsupported construct(s) ['parallel']" in msg


def test_missing_source_file_is_named(tmp_path):
    with pytest.raises(SchemaError) as e:
        load_system(with_source(tmp_path, "nope.yaml"))
    assert "no such file" in str(e.value) and "nope.yaml" in str(e.value)
