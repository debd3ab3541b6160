"""The command line as a user drives it: the main job, resume, bad input, reports."""

import json

import pandas as pd
import pytest

from smallbench import load_results
from tests.conftest import fetch, run_cli, serve_app, spinner

SMALL = ["--prompt-tokens", "16", "--gen-tokens", "8", "--repeats", "3", "--warmup", "1"]


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, tiny_path):
    cwd = tmp_path_factory.mktemp("run")
    res = run_cli("run", "--model", "tiny-llama", "--backend", "transformers", *SMALL, cwd=cwd)
    return cwd, res


def test_main_job_prints_table_and_writes_loadable_records(main_run):
    cwd, res = main_run
    assert res.returncode == 0, res.stderr
    for col in ("TTFT p50 (ms)", "TPOT p50 (ms/token)", "decode (tok/s)", "peak memory (GiB)"):
        assert col in res.stdout
    assert "tiny-llama" in res.stdout and "transformers" in res.stdout
    files = sorted((cwd / "results").glob("*.json"))
    assert len(files) == 3
    df = load_results(cwd / "results")
    assert set(df["suite"]) == {"latency", "throughput", "memory"}
    assert (df["status"] == "ok").all()
    ttft = df[(df.suite == "latency") & (df.metric == "ttft")].iloc[0]
    assert 0 < ttft["value"] < 5 and ttft["n"] == 3
    assert df["weights_sha256"].nunique() == 1 and df["weights_sha256"].iloc[0]
    decode = df[(df.suite == "throughput") & (df.metric == "decode_tok_s")].iloc[0]
    assert decode["batch_size"] == 1 and decode["value"] > 0
    rec = json.loads(files[0].read_text())
    assert rec["schema_version"] == 1 and rec["hardware"]["cpu_model"] and rec["software"]["torch"]


def test_rerun_reuses_finished_cells_and_force_reruns(main_run):
    cwd, _ = main_run
    before = {p: p.stat().st_mtime_ns for p in (cwd / "results").glob("*.json")}
    res = run_cli("run", *SMALL, cwd=cwd)
    assert res.returncode == 0 and res.stderr.count("reused") == 3
    assert before == {p: p.stat().st_mtime_ns for p in (cwd / "results").glob("*.json")}
    res = run_cli("run", "--suite", "latency", "--force", *SMALL, cwd=cwd)
    assert res.returncode == 0 and "reused" not in res.stderr


def test_report_exports(main_run):
    cwd, _ = main_run
    assert run_cli("report", "results", "--format", "csv", "--out", "r.csv", cwd=cwd).returncode == 0
    assert run_cli("report", "results", "--format", "parquet", "--out", "r.parquet", cwd=cwd).returncode == 0
    csv, pq = pd.read_csv(cwd / "r.csv"), pd.read_parquet(cwd / "r.parquet")
    assert len(csv) == len(pq) == len(load_results(cwd / "results"))
    table = run_cli("report", "results", cwd=cwd)
    assert table.returncode == 0 and "TTFT p50 (ms)" in table.stdout


def test_presets_give_the_standard_shapes_to_throughput_and_serving():
    """pp512/tg128, one request of 256 in 64 out, and 1k in 1k out at 1 and 10 in parallel: batch sizes for the
    throughput suite, concurrency levels for the serving suite; a setting given besides wins."""
    from smallbench.suites import get_suite

    thr, srv = get_suite("throughput"), get_suite("serving")
    s = thr.settings({"preset": "b1,10/1024in/1024out"})
    assert (s.prompt_tokens, s.gen_tokens, s.batch_sizes) == (1024, 1024, [1, 10])
    for suite in ("latency", "memory"):  # their tokens too, so that a run's suites measure one shape (one row)
        s = get_suite(suite).settings({"preset": "b1/256in/64out"})
        assert (s.prompt_tokens, s.gen_tokens) == (256, 64) and "preset" not in s.model_dump()
    defaults = [get_suite(n).settings({}) for n in ("latency", "throughput", "memory")]
    assert {(s.prompt_tokens, s.gen_tokens) for s in defaults} == {(512, 128)}  # a default run: one row
    s = srv.settings({"preset": "b1,10/1024in/1024out"})
    assert (s.prompt_tokens, s.gen_tokens, s.concurrency) == (1024, 1024, [1, 10])
    s = srv.settings({"preset": "pp512/tg128", "concurrency": [4], "gen_tokens": 32})
    assert (s.prompt_tokens, s.gen_tokens, s.concurrency) == (512, 32, [4])
    assert srv.settings({}).concurrency == [1, 2, 4, 8]  # no preset: the suite's own defaults
    with pytest.raises(ValueError, match="choose from: pp512/tg128, b1/256in/64out, b1,10/1024in/1024out"):
        srv.settings({"preset": "pp1/tg1"})


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--backend", "nosuch"], ["nosuch", "transformers"]),
        (["--model", "nosuch/model"], ["nosuch/model", "smallbench list models"]),
        (["--suite", "nosuch"], ["nosuch", "latency", "throughput", "memory"]),
        (["--preset", "pp1/tg1"], ["pp1/tg1", "pp512/tg128"]),
        (["--batch-sizes", "1,x"], ["--batch-sizes"]),
        (["--model", "./no/such/dir"], ["./no/such/dir"]),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, names):
    res = run_cli("run", *args, cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in res.stderr + res.stdout
    for n in names:
        assert n in err
    assert not (tmp_path / "results").exists()


def test_list_and_env(tmp_path):
    for what in ("models", "backends", "suites"):
        res = run_cli("list", what, cwd=tmp_path)
        assert res.returncode == 0 and res.stdout.strip()
    bad = run_cli("list", "nothing", cwd=tmp_path)
    assert bad.returncode == 2 and "models, backends, suites" in bad.stderr
    env = run_cli("env", cwd=tmp_path)
    assert env.returncode == 0 and "cpu_model" in env.stdout


def test_report_warns_of_trials_that_got_steadily_slower(main_run, tmp_path):
    from smallbench.stats import drift

    cwd, _ = main_run
    rec = json.loads(next((cwd / "results").glob("*__latency__*.json")).read_text())
    tpot = next(m for m in rec["metrics"] if m["name"] == "tpot")
    heating = [0.010, 0.0104, 0.0109, 0.0115, 0.0121, 0.0128]
    tpot["drift"] = drift(heating, higher_is_better=False).model_dump()
    (tmp_path / "hot.json").write_text(json.dumps(rec))
    res = run_cli("report", str(tmp_path / "hot.json"), cwd=tmp_path)
    assert res.returncode == 0
    assert "tpot got steadily slower over 6 trials" in res.stderr and "--cooldown" in res.stderr
    plain = run_cli("report", "results", cwd=cwd)
    assert "steadily slower" not in plain.stderr
    assert load_results(tmp_path / "hot.json").query("metric == 'tpot'")["slowdown_flag"].iloc[0]


def test_a_suite_that_ran_beside_other_work_is_flagged_busy(main_run, tmp_path):
    """Another process spinning on one of the machine's CPUs while a cell runs: its record says how much CPU the
    others took, load_results flags it, and run and report warn; the main job's cells ran with their own work
    counted as theirs."""
    cwd, _ = main_run
    quiet = load_results(cwd / "results")
    assert (quiet["others_cpus"] >= 0).all() and quiet["busy_flag"].notna().all()
    with spinner():
        res = run_cli("run", "--suite", "latency", *SMALL, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rec = json.loads(next((tmp_path / "results").glob("*__latency__*.json")).read_text())
    assert rec["contention"]["busy"] and rec["contention"]["others_cpus"] > 0.6, rec["contention"]
    assert rec["contention"]["own_cpus"] > 0.3  # the suite's own work, in its own column
    warning = "tiny-llama · transformers · latency: the machine was busy while it ran"
    assert warning in res.stderr.replace("\n", " ")
    assert load_results(tmp_path / "results")["busy_flag"].all()
    report = run_cli("report", "results", cwd=tmp_path)
    assert warning in report.stderr.replace("\n", " ") and "--rerun-busy" in report.stderr
    against = run_cli("compare", str(cwd / "results"), "results", cwd=tmp_path)  # a warning per busy cell compared
    busy = 1 + int(quiet.query("suite == 'latency'")["busy_flag"].iloc[0])  # the main run's: quiet, bar steal
    assert against.returncode == 0 and against.stderr.replace("\n", " ").count("was busy") == busy, against.stderr
    # --rerun-busy runs the busy cell again and nothing else; a plain run reuses it
    states = {flag: run_cli("plan", "--suite", "latency", *SMALL, *flag, cwd=tmp_path).stdout
              for flag in ((), ("--rerun-busy",))}
    assert " reuse " in states[()] and " run " in states[("--rerun-busy",)], states
    again = run_cli("run", "--suite", "latency", *SMALL, "--rerun-busy", cwd=tmp_path)
    assert again.returncode == 0 and "reused" not in again.stderr, again.stderr
    assert json.loads(next((tmp_path / "results").glob("*__latency__*.json")).read_text())["run_id"] != rec["run_id"]


def test_leaderboard_app_shows_what_the_main_job_left(main_run):
    """The quickstart's main job, then `python leaderboard_app.py` in the same folder: the app reads ./results."""
    from pathlib import Path

    cwd, _ = main_run
    app = Path(__file__).parents[1] / "leaderboard_app.py"
    with serve_app([str(app)], cwd=cwd) as url:
        config = fetch(url + "config")
    assert "tiny-llama" in config and "3 records in results" in config and "decode (tok/s)" in config
