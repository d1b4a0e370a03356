"""Target-environment files (`surgesim worker --target-env`) and HOST[:PORT] of a master."""

from __future__ import annotations

import pytest

from surgesim.loadtests.distributed import parse_master
from surgesim.loadtests.target_env import TargetEnvError, read_target_env, write_target_env


def test_round_trip_comments_quotes_and_export(tmp_path):
    p = tmp_path / "target.env"
    p.write_text("# staging\n\nexport COMMAND_URL=http://10.0.0.5:8080\nPUBSUB_EMULATOR_HOST = '10.0.0.5:8085'\n"
                 'GOOGLE_CLOUD_PROJECT="my-project"\n')
    env = read_target_env(p)
    assert env == {"COMMAND_URL": "http://10.0.0.5:8080", "PUBSUB_EMULATOR_HOST": "10.0.0.5:8085",
                   "GOOGLE_CLOUD_PROJECT": "my-project"}
    again = write_target_env(tmp_path / "again.env", env, comment="written\nby a test")
    assert again.read_text().startswith("# written\n# by a test\n")
    assert read_target_env(again) == env


def test_every_bad_line_is_named_with_its_file_and_number(tmp_path):
    p = tmp_path / "bad.env"
    p.write_text("A=1\nthis is not an assignment\nB=2\n9X=3\n")
    with pytest.raises(TargetEnvError) as err:
        read_target_env(p)
    assert [line.split(": ")[0] for line in err.value.problems] == [f"{p}:2", f"{p}:4"]
    with pytest.raises(TargetEnvError, match="cannot read"):
        read_target_env(tmp_path / "absent.env")


@pytest.mark.parametrize("value,expected", [("10.0.0.5", ("10.0.0.5", 5557)), ("host:6000", ("host", 6000)),
                                            ("127.0.0.1:5557", ("127.0.0.1", 5557))])
def test_master_host_and_port(value, expected):
    assert parse_master(value) == expected


@pytest.mark.parametrize("value", ["", ":5557", "host:", "host:port", "host:70000"])
def test_bad_master_address_is_refused(value):
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_master(value)
