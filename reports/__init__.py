"""Reports from run directories: one run's HTML report, plan comparisons, sim-vs-live
calibration, and JUnit XML for CI. Reads run directories only (see docs/run-directory.md).

    build_report(run_dir) -> Path                     runs/<id>/report.html + plots/
    build_comparison(run_dirs, out_dir) -> Path       several plans of one scenario
    build_calibration(sim_dir, live_dir, out_dir) -> Path
    write_junit(run_dir) -> Path                      runs/<id>/junit.xml
"""

from surgesim.reports.compare import build_comparison, calibration_pair
from surgesim.reports.junit import write_junit
from surgesim.reports.single import build_report

__all__ = ["build_report", "build_comparison", "build_calibration", "calibration_pair", "write_junit"]


def build_calibration(sim_dir, live_dir, out_dir):
    from surgesim.reports.calibration import build_calibration as build

    return build(sim_dir, live_dir, out_dir)
