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
    )


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


def test_a_roofline_share_carries_its_bound_and_the_kind_of_bound(tmp_path):
    """Shares of different kinds of bound do not compare (a copy, one run's read, the machine's best read, NVML):
    the tidy frame and the leaderboard say which each is, old records included."""
    from smallbench.cell import BEFORE_LOAD, MACHINE_BEST

    sources = {
        "measured: multi-threaded memory copy, best of before load and after close": "CPU copy, one run",  # results/
        BEFORE_LOAD: "CPU read, one run",
        MACHINE_BEST.format(reads=12, since="2026-12-01"): "CPU read, machine's best",
        "NVML: NVIDIA H200 memory clock × bus width": "NVML clock × bus",
        "table: Apple M3 Max": "data sheet",
    }
    for i, source in enumerate(sources):
        rec = _record(cell=f"c{i}")
        rec.metrics.append(Metric(name="decode_bandwidth_pct", unit="%", value=50.0, labels={"batch_size": 1}))
        rec.extra["roofline"] = {"bandwidth_bytes_s": 1e9 * (i + 1), "source": source}
        write_record(rec, tmp_path / f"{i}.json")
    write_record(_record(cell="none"), tmp_path / "none.json")  # no roofline: no bound
    df = load_results(tmp_path)
    pct = df[df.metric == "decode_bandwidth_pct"].sort_values("bound_bytes_s")
    assert pct.bound_kind.tolist() == list(sources.values())
    assert pct.bound_bytes_s.tolist() == [1e9 * (i + 1) for i in range(len(sources))]
    assert df[df.metric == "ttft"].bound_kind.isna().all()


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


def test_a_scan_reads_only_regular_files_inside_the_folder(tmp_path):
    import os
    import signal

    from smallbench.results import scan_records

    outside = tmp_path / "outside"
    write_record(_record(cell="outside"), outside / "elsewhere.json")
    folder = tmp_path / "results"
    write_record(_record(), folder / "m__transformers__latency__c1.json")
    (folder / "linked.json").symlink_to(outside / "elsewhere.json")
    (folder / "zero.json").symlink_to("/dev/zero")
    (folder / "passwd.json").symlink_to("/etc/passwd")
    os.mkfifo(folder / "pipe.json")  # reading a FIFO would wait for a writer forever
    signal.alarm(20)
    try:
        records, skipped = scan_records(folder)
    finally:
        signal.alarm(0)
    assert [r.cell_id for r in records] == ["c1"]
    notes = "\n".join(skipped)
    for name in ("linked.json", "zero.json", "passwd.json"):
        assert f"{name}: a symbolic link" in notes
    assert "pipe.json: not a regular file" in notes
    assert len(load_results(folder)) == 1
    assert read_record(folder / "linked.json").cell_id == "outside"  # a file named by the user is read as asked


def test_a_newer_schema_says_to_upgrade(tmp_path):
    import json

    rec = json.loads(_record().model_dump_json())
    rec["schema_version"] = 99
    (tmp_path / "new.json").write_text(json.dumps(rec))
    with pytest.raises(SmallbenchError, match="newer smallbench.*schema version 99.*upgrade"):
        read_record(tmp_path / "new.json")


@pytest.mark.parametrize(("model", "want"), [
    ("./my-model", "my-model"),
    ("../.hidden/model", "hidden--model"),
    ("org/name", "org--name"),
    ("-rf", "rf"),
    ("hf_" + "a" * 34, "token"),
    ("/very/" + "long-folder-name/" * 30 + "the-model", None),
])
def test_record_file_names_are_visible_safe_and_bounded(model, want):
    from smallbench.runner import SLUG_MAX, _slug

    slug = _slug(model)
    assert not slug.startswith((".", "-")) and len(slug) <= SLUG_MAX and "hf_" not in slug
    assert slug == want if want else slug.endswith("the-model")
