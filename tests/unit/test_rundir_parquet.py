"""The run directory's Parquet files through fastparquet (surgesim/rundir.py): what the
writers write reads back equal, the histograms' `path` comes back categorical for the
reports and as strings for everyone else, and a file pyarrow wrote (the run directories
of earlier versions) still reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from surgesim.rundir import Run, RunWriter, read_parquet

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "parquet" / "histograms-written-by-pyarrow.parquet"


def _hist() -> pd.DataFrame:
    return pd.DataFrame({"time_s": [0.0, 0.0, 10.0, 10.0, 20.0], "path": ["latency/a", "latency/b", "latency/a",
                                                                       "latency/b", "latency/a"],
                         "bucket": np.array([5, 7, 5, 9, 0], dtype=np.int32),
                         "count": np.array([3, 0, 4, 1, 2], dtype=np.int64)})


def test_histograms_round_trip_with_path_as_a_dictionary(tmp_path):
    RunWriter(tmp_path).write_histograms(_hist())
    back = read_parquet(tmp_path / "histograms.parquet", categories=["path"])
    assert isinstance(back["path"].dtype, pd.CategoricalDtype)
    assert sorted(back["path"].cat.categories) == ["latency/a", "latency/b"]
    # zero counts dropped, sorted by path then time
    assert back["path"].astype(str).tolist() == ["latency/a", "latency/a", "latency/a", "latency/b"]
    expected = _hist()[_hist()["count"] > 0].sort_values(["path", "time_s"], kind="stable")
    assert back["count"].tolist() == expected["count"].tolist()
    assert back["bucket"].dtype == np.int32 and back["count"].dtype == np.int64
    plain = Run(tmp_path).histograms  # everyone but the reports: strings, as before
    assert plain["path"].dtype == "string"
    assert (plain["path"] == "latency/b").sum() == 1


def test_timeseries_round_trip(tmp_path):
    frame = pd.DataFrame({"time_s": [1.0, 0.0], "metric": ["m", "m"], "entity": ["e", "e"], "value": [2.5, 1.5]})
    RunWriter(tmp_path).write_timeseries(frame)
    back = Run(tmp_path).timeseries
    assert back["value"].tolist() == [1.5, 2.5] and back["time_s"].tolist() == [0.0, 1.0]
    assert back["metric"].dtype == "string" and back["entity"].dtype == "string"
    assert Run(tmp_path).series("m", "e").to_dict() == {0.0: 1.5, 1.0: 2.5}


def test_a_file_pyarrow_wrote_still_reads():
    plain = read_parquet(FIXTURE)
    assert plain["path"].dtype == "string" and plain["path"].tolist() == ["p", "q"]
    cats = read_parquet(FIXTURE, categories=["path"])
    assert isinstance(cats["path"].dtype, pd.CategoricalDtype)
    assert cats["path"].astype(str).tolist() == ["p", "q"] and cats["count"].tolist() == [3, 4]
