"""surgesim as a user installs it: the built wheel, no extras, in a fresh venv, then the
user's own pytest run using the `surgesim_run` fixture. Installing surgesim must not
break `pytest` in the user's environment (it once did: a dependency's pytest plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert out.returncode == 0, f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("user")
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)])
    wheel = next(dist.glob("surgesim-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "-c", str(ROOT / "constraints.txt")]
    _run(pip + [str(wheel), "pytest"])
    return venv


def test_user_pytest_with_surgesim_run_fixture(user_venv: Path, tmp_path: Path) -> None:
    scenario = ROOT / "scenarios" / "mmc_05.yaml"
    (tmp_path / "test_capacity.py").write_text(textwrap.dedent(f"""
        def test_plan_meets_slos(surgesim_run):
            run = surgesim_run({str(scenario)!r}, extra=["--no-report"])
            assert run.summary["mode"] == "sim"
            assert run.summary["verdict"] in ("pass", "fail")
            assert run.summary["slos"], "the scenario's SLOs were judged"
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    out = _run([str(user_venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
               cwd=tmp_path, env=env)
    assert "1 passed" in out.stdout


def test_base_install_has_no_live_parts_and_says_which_extra(user_venv: Path, tmp_path: Path) -> None:
    py = str(user_venv / "bin" / "python")
    probe = subprocess.run([py, "-c", "import bqemulator"], capture_output=True, text=True)
    assert probe.returncode != 0, "the BigQuery emulator must not be installed into the user's environment"
    out = subprocess.run([py, "-m", "surgesim.cli", "live", "x.yaml"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "pip install 'surgesim[live]'" in out.stderr
    out = subprocess.run([py, "-m", "surgesim.cli", "worker", "--master-host", "h", "x.yaml"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert "pip install 'surgesim[locust]'" in out.stderr


def _size_mb(site: Path) -> float:
    return sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def test_base_install_size_stays_under_250_mb(user_venv: Path, tmp_path: Path) -> None:
    """README, Install sizes: under 250 MB without extras. Parquet through fastparquet, not
    pyarrow (170 MB), and matplotlib (96 MB) in the `plots` extra; a dependency that brings
    either back fails here. Apparent sizes, so a little under du's figure; pytest itself is
    ~5 MB of it."""
    py = str(user_venv / "bin" / "python")
    assert subprocess.run([py, "-c", "import pyarrow"], capture_output=True).returncode != 0, "pyarrow is back"
    assert subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode != 0, "matplotlib is back"
    empty = tmp_path / "empty"
    _run([sys.executable, "-m", "venv", str(empty)])
    site = next(user_venv.glob("lib/python3*/site-packages"))
    added = _size_mb(site) - _size_mb(next(empty.glob("lib/python3*/site-packages")))
    print(f"base install (+pytest): {added:.0f} MB")
    assert added < 250, f"the base install grew to {added:.0f} MB (README, Install sizes)"


def test_base_install_simulates_and_reports_without_plots(user_venv: Path, tmp_path: Path) -> None:
    """An architect's install: `surgesim sim` with its report, which names the `plots` extra
    where the figures would be and still carries the verdict and the SLO table."""
    out = tmp_path / "run"
    run = subprocess.run([str(user_venv / "bin" / "surgesim"), "sim", str(ROOT / "scenarios" / "mmc_05.yaml"),
                          "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode in (0, 1), run.stderr[-3000:]
    html = (out / "report.html").read_text()
    assert "surgesim[plots]" in html and "<img" not in html
    assert "SLO" in html and (out / "junit.xml").exists()
