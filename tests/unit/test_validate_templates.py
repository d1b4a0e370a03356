"""`surgesim validate` names a bad payload template as file:line: field path: message, one
line per problem, and exits 2 (the checks themselves: surgesim/templates.py)."""

from __future__ import annotations

from click.testing import CliRunner

from surgesim.cli import cli

SYSTEM = """\
name: greeter
project: greeter-local
topics:
  - {name: greetings}
services:
  - name: publish-fn
    routes:
      - {name: publish, path: /}
"""

SCENARIO = """\
name: spike
system: system.yaml
seed: 11
duration: 60s
traffic:
  sources:
    - name: greet
      rate: 5/s
      request:
        service: publish-fn
        route: publish
        json:
          topic: greetings
          message: "{{ faker.frist_name() }}"
          who: "{{ nobody }}"
    - name: broken
      rate: 1/s
      publish: {topic: greetings, data: "{{ seq + }}"}
"""


def test_each_template_problem_is_one_line_with_file_line_and_field(tmp_path, monkeypatch):
    (tmp_path / "system.yaml").write_text(SYSTEM)
    (tmp_path / "spike.yaml").write_text(SCENARIO)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["validate", "spike.yaml"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.splitlines()
    assert any(line.startswith("spike.yaml:14: traffic.sources[0].request.json.message: unknown Faker provider 'frist_name'")
               for line in lines), lines
    assert any(line.startswith("spike.yaml:15: traffic.sources[0].request.json.who: undefined variable 'nobody'")
               for line in lines), lines
    assert any(line.startswith("spike.yaml:18: traffic.sources[1].publish.data: template syntax error")
               for line in lines), lines
    fixed = SCENARIO.replace("frist_name", "first_name").replace("{{ nobody }}", "{{ seq }}").replace("seq + ", "seq + 1")
    (tmp_path / "spike.yaml").write_text(fixed)
    res = CliRunner().invoke(cli, ["validate", "spike.yaml"])
    assert res.exit_code == 0, res.output
    assert "spike.yaml: valid scenario file" in res.output
