"""Result records: schema round trip, atomic writes, secrets, tidy frames, exports."""

import warnings

import pandas as pd
import pytest

from smallbench.backends import BackendInfo
from smallbench.errors import SmallbenchError
from smallbench.hardware import hardware_info
from smallbench.results import (
    Metric,
    ModelRecord,
    ResultRecord,
    export,
    load_results,
    read_record,
    redact,
    write_record,
)
from smallbench.stats import summarize


def _record(status="ok", error=None, cell="c1") -> ResultRecord:
    stats = summarize([0.1, 0.2, 0.3])
    return ResultRecord(
        smallbench_version="0", cell_id=cell, run_id="r", status=status, error=error, suite="latency",
        model=ModelRecord(id="m"), backend=BackendInfo(name="transformers", device="cpu"),
        hardware=hardware_info(),
        metrics=[] if status == "failed" else [Metric(name="ttft", unit="s", value=stats.p50, stats=stats,
                                                       samples_key="ttft", labels={"batch_size": 1})],
        samples={} if status == "failed" else {"ttft": [0.1, 0.2, 0.3]},
    )  # fmt: skip


def test_round_trip_and_no_temp_files(tmp_path):
    rec = _record()
    write_record(rec, tmp_path / "a.json")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    back = read_record(tmp_path / "a.json")
    assert back == rec
    assert back.hardware.fingerprint == rec.hardware.fingerprint


def test_tokens_never_written(tmp_path):
    token = "hf_" + "a1B2c3D4e5" * 4
    rec = _record(status="failed", error=f"401 for token {token}")
    write_record(rec, tmp_path / "f.json")
    text = (tmp_path / "f.json").read_text()
    assert token not in text and "hf_***" in text
    assert redact(f"x {token} y") == "x hf_*** y"


def test_tidy_frame_and_failed_rows(tmp_path):
    write_record(_record(), tmp_path / "ok.json")
    write_record(_record("failed", "boom", cell="c2"), tmp_path / "bad.json")
    df = load_results(tmp_path)
    assert len(df) == 2
    ok = df[df.status == "ok"].iloc[0]
    assert ok["metric"] == "ttft" and ok["p50"] == pytest.approx(0.2) and ok["batch_size"] == 1
    bad = df[df.status == "failed"].iloc[0]
    assert bad["error"] == "boom" and pd.isna(bad["metric"])


def test_bad_files_warn_and_are_skipped(tmp_path):
    write_record(_record(), tmp_path / "ok.json")
    (tmp_path / "junk.json").write_text("{not json")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        df = load_results(tmp_path)
    assert len(df) == 1 and any("junk.json" in str(x.message) for x in w)
    with pytest.raises(SmallbenchError):
        read_record(tmp_path / "junk.json")
    with pytest.raises(SmallbenchError):
        load_results(tmp_path / "missing")


def test_export(tmp_path):
    write_record(_record(), tmp_path / "ok.json")
    df = load_results(tmp_path)
    assert len(pd.read_csv(export(df, tmp_path / "x.csv"))) == 1
    assert len(pd.read_parquet(export(df, tmp_path / "x.parquet"))) == 1
    with pytest.raises(SmallbenchError):
        export(df, tmp_path / "x.xlsx")
