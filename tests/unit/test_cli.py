from click.testing import CliRunner

from surgesim.cli import cli


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("validate", "emulators", "provision"):
        assert name in result.output


def test_validate_accepts_the_seed_files():
    result = CliRunner().invoke(cli, ["validate", "scenarios/dispatch_wave.yaml", "scenarios/systems/meridian.yaml",
                                      "scenarios/plans/baseline.yaml"])
    assert result.exit_code == 0, result.output
    assert "valid scenario file" in result.output and "valid plan file" in result.output


def test_validate_fails_with_one_line_naming_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: shop\nproject: surgesim-local\ntopics: [{name: orders}, {name: orders.dlq}]\n"
        "subscriptions:\n  - {name: orders-sub, topic: orders, dead_letter: {topic: orders.dlq, max_attempts: 2}}\n"
        "  - {name: dlq-hold, topic: orders.dlq}\n"
    )
    result = CliRunner().invoke(cli, ["validate", str(bad)])
    assert result.exit_code == 2  # bad input, as sim and live; 1 means an SLO failed
    # The file as given, folder included
    assert result.output.strip() == f"{bad}:5: subscriptions[0].dead_letter.max_attempts: must be 5..100, got 2"


def test_up_table_is_whole_when_stdout_is_not_a_terminal(monkeypatch):
    import io

    from surgesim.commands.up import listing_table

    monkeypatch.setenv("COLUMNS", "40")
    rows = [{"kind": "service", "name": "publish-fn-with-a-long-name", "url": "http://127.0.0.1:45678",
             "pid": 4242, "detail": "front -> http://127.0.0.1:39999 (a long detail that would be cut)"},
            {"kind": "emulator", "name": "pubsub", "url": "127.0.0.1:8085", "pid": None, "detail": "reused"}]
    out = io.StringIO()
    listing_table(rows, "greeter", file=out)
    text = out.getvalue()
    for r in rows:
        for value in (r["name"], r["url"], r["detail"]):
            assert value in text, text
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.count("│") >= 6]
    assert {c[1]: c[2] for c in cells}["publish-fn-with-a-long-name"] == "http://127.0.0.1:45678"
