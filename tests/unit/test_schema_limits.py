"""Hostile or mistaken input is refused with the right message while it is read: size
before reading, node count and depth while parsing (before any node is built), aliases
after expansion; and the issue-20 mutants (absurd rates, zero timeouts) are refused by
`validate` (exit 2) instead of crashing or hanging the simulator."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from surgesim.cli import cli
from surgesim.schema import SchemaError, load_experiment, validate_file
from surgesim.schema.limits import MAX_SOURCE_RATE_PER_S
from surgesim.schema.loading import MAX_BYTES, MAX_NODES

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def problems_of(path) -> list[str]:
    with pytest.raises(SchemaError) as info:
        validate_file(path)
    return info.value.problems


def test_a_file_over_the_byte_limit_is_refused_by_its_size(tmp_path):
    big = tmp_path / "big.yaml"
    item = b"- {a: 1}\n"
    big.write_bytes(item * (MAX_BYTES // len(item) + 1))
    assert problems_of(big) == [f"{big}: {big.stat().st_size:,} bytes; a system, plan or scenario file may have at most {MAX_BYTES:,}"]


def test_a_file_of_many_small_items_is_refused_by_node_count_not_as_aliases(tmp_path):
    many = tmp_path / "many.yaml"
    many.write_text("name: x\nitems: [" + "0," * (MAX_NODES + 10) + "0]\n")
    assert many.stat().st_size < MAX_BYTES  # within the byte limit: the node count refuses it
    [problem] = problems_of(many)
    assert problem == (f"{many}:2: more than {MAX_NODES:,} YAML nodes (keys, values and items); "
                       "a system, plan or scenario file needs far fewer")


def test_an_alias_bomb_is_refused_as_aliases(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    bomb.write_text("\n".join(lines) + "\n")
    [problem] = problems_of(bomb)
    assert problem.startswith(f"{bomb}:") and problem.endswith(f"YAML aliases expand to more than {MAX_NODES:,} nodes")


def test_deep_nesting_is_refused_while_parsing(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    [problem] = problems_of(deep)
    assert problem == f"{deep}:1: nested more than 64 levels deep"


@pytest.mark.parametrize("text, got", [
    ("", "an empty file"), ("null\n", "an empty file"), ("# only a comment\n", "an empty file"),
    ("just words\n", "a single string"), ("42\n", "a single number"), ("- a\n- b\n", "a list"),
])
def test_a_file_that_is_not_a_mapping_says_so(tmp_path, text, got):
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    assert problems_of(path) == [f"{path}: expected a system, plan or scenario file: a YAML mapping of fields "
                                 f"at the top level (name: ..., ...), got {got}"]


def test_an_empty_system_named_by_a_scenario_is_reported_as_a_system(tmp_path):
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys" / "s.yaml").write_text("")
    (tmp_path / "sc.yaml").write_text("name: x\nsystem: sys/s.yaml\nduration: 1m\n"
                                      "traffic: {sources: [{name: a, rate: 1/s, job: j}]}\n")
    with pytest.raises(SchemaError) as info:
        load_experiment(tmp_path / "sc.yaml")
    [problem] = info.value.problems
    assert problem.startswith(f"{tmp_path / 'sys' / 's.yaml'}: expected a system file") and "an empty file" in problem


def test_not_utf8_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    assert problems_of(bad)[0].startswith(f"{bad}: cannot read: not UTF-8 text")
    assert problems_of(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: file not found"]


# ---- the mutants of issue 20 -------------------------------------------------------------


@pytest.fixture
def seeds(tmp_path) -> Path:
    shutil.copytree(SCENARIOS / "systems", tmp_path / "systems")
    shutil.copytree(SCENARIOS / "plans", tmp_path / "plans")
    return tmp_path


def _mutant(seeds: Path, scenario_edit=None, system_edit=None) -> Path:
    text = (SCENARIOS / "dispatch_wave.yaml").read_text()
    if system_edit:
        old, new = system_edit
        sys_text = (seeds / "systems" / "meridian.yaml").read_text()
        assert old in sys_text
        (seeds / "systems" / "mutant.yaml").write_text(sys_text.replace(old, new))
        text = text.replace("systems/meridian.yaml", "systems/mutant.yaml")
    if scenario_edit:
        assert scenario_edit[0] in text
        text = text.replace(*scenario_edit)
    (seeds / "mutant.yaml").write_text(text)
    return seeds / "mutant.yaml"


@pytest.mark.parametrize("rate", ["1e308/s", "1e15/s"])
def test_an_absurd_wave_rate_is_refused_by_validate(seeds, rate):
    path = _mutant(seeds, scenario_edit=("gps: 5100/s", f"gps: {rate}"))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if f"gps: {rate}" in text)
    assert result.output.strip() == (f"{path}:{line}: traffic.waves[0].rates.gps: rate must be at most 1e+07/s, "
                                     f"got '{rate}'")


@pytest.mark.parametrize("timeout", ["0s", "0"])
def test_a_zero_call_timeout_is_refused_by_validate(seeds, timeout):
    path = _mutant(seeds, system_edit=("api: sms-gateway, timeout: 10s", f"api: sms-gateway, timeout: {timeout}"))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    shown = seeds / "systems" / "mutant.yaml"
    assert result.output.strip() == f"{shown}:179: services[5].steps[2].call.timeout: must be 1ms..1h, got 0ms"


def test_a_rate_within_the_field_bound_but_multiplied_past_the_source_limit_is_refused(seeds):
    # 5e5/s is a legal rate; traffic.multiplier 4 makes the wave 2e6/s
    path = _mutant(seeds, scenario_edit=("gps: 5100/s", "gps: 500000/s"))
    path.write_text(path.read_text().replace("traffic:\n", "traffic:\n  multiplier: 4\n", 1))
    with pytest.raises(SchemaError) as info:
        validate_file(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}:") and "traffic.sources[0]: source 'gps' peaks at 2e+06/s" in problem
    assert f"at most {MAX_SOURCE_RATE_PER_S:,.0f}/s per source" in problem


def test_too_many_metric_windows_are_refused_with_the_step_to_use(seeds):
    path = _mutant(seeds, scenario_edit=("duration: 3h", "duration: 31d\nstep: 1ms"))
    path.write_text(path.read_text().replace("at: 90m, duration: 9m", "at: 90m, duration: 9m"))
    with pytest.raises(SchemaError) as info:
        validate_file(path)
    assert any("step: duration / step is 2,678,400,000 metric windows; at most 500,000: make step at least 5.36s" in p
               for p in info.value.problems), info.value.problems
