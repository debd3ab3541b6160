"""Isolation: a cell that dies or hangs costs only itself."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from smallbench import load_results

ARGS = ["--prompt-tokens", "16", "--gen-tokens", "8", "--warmup", "1"]


def _cell_processes(parent: psutil.Process) -> list[psutil.Process]:
    out = []
    for p in parent.children(recursive=True):
        try:
            if "smallbench.cell" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.mark.parametrize("isolate", ["group", "suite"])
def test_killed_cell_becomes_failed_record_and_run_completes(tmp_path, tiny_path, isolate):
    """The memory suite's process is killed: with one load per group the latency suite after it is lost too (and
    says why); with one process per suite it runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "smallbench.cli", "run", "--suite", "memory,latency", "--repeats", "300", *ARGS,
         "--isolate", isolate],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 120
    victim = None
    while victim is None and time.time() < deadline:
        cells = _cell_processes(parent)
        victim = cells[0] if cells else None
        time.sleep(0.2)
    assert victim is not None, "no cell process appeared"
    time.sleep(1.0)
    os.kill(victim.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    assert "Traceback" not in out + err
    df = load_results(tmp_path / "results")
    by_suite = df.groupby("suite")["status"].first().to_dict()
    assert by_suite == {"memory": "failed", "latency": "failed" if isolate == "group" else "ok"}
    error = df[df.suite == "memory"]["error"].iloc[0]
    assert "killed by signal SIGKILL" in error and "smallbench fit tiny-llama" in error  # what to try next
    assert len(list((tmp_path / "results" / ".logs").glob("*.log"))) == (1 if isolate == "group" else 2)  # loads
    if isolate == "group":
        assert df[df.suite == "latency"]["error"].iloc[0].startswith("not run: the group's process ended during its "
                                                                     "memory suite (cell process killed by signal "
                                                                     "SIGKILL")


def test_hanging_cell_times_out_and_leaves_no_process(tmp_path, tiny_path):
    res = subprocess.run(
        [sys.executable, "-m", "smallbench.cli", "run", "--suite", "latency", "--repeats", "100000",
         "--timeout", "8", *ARGS],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 1
    df = load_results(tmp_path / "results")
    assert df["status"].tolist() == ["failed"]
    assert "timed out after 8 s" in df["error"].iloc[0]
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if "smallbench.cell" in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_quant_list_multiplies_only_backends_that_take_one(tmp_path, tiny_path):
    from smallbench import models, runner
    from smallbench.hardware import hardware_info

    m = models.resolve("tiny-llama")
    cells = runner.plan([m], ["transformers", "llama-cpp"], ["latency"], {}, {"device": "cpu"}, hardware_info(),
                        tmp_path, "run", quants=["Q8_0", "F16"])
    got = [(c.spec.backend, c.spec.model.quant, c.spec.load.get("quant")) for c in cells]
    assert got == [("transformers", None, None), ("llama-cpp", "Q8_0", "Q8_0"), ("llama-cpp", "F16", "F16")]
    assert len({c.spec.cell_id for c in cells}) == 3 and "[Q8_0]" in cells[1].label
    assert cells[1].path.name.startswith("tiny-llama__llama-cpp-Q8_0__latency__")
    # two backends that take --quant: each runs the variants it knows (llama.cpp's GGUF types, MLX's bits; F16 both)
    cells = runner.plan([m], ["llama-cpp", "mlx"], ["latency"], {}, {"device": "cpu"}, hardware_info(), tmp_path,
                        "run", quants=["Q8_0", "4bit", "F16"])
    assert [(c.spec.backend, c.spec.model.quant) for c in cells] == [("llama-cpp", "Q8_0"), ("llama-cpp", "F16"),
                                                                     ("mlx", "4bit"), ("mlx", "F16")]


def test_a_native_crash_in_a_test_fails_that_test_and_the_run_goes_on(tmp_path):
    """The test suite's own isolation (pyproject: pytest -n 1): a segfault fails one test, not pytest."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "test_crash.py").write_text(
        "import ctypes\n\n\ndef test_segfaults():\n    ctypes.string_at(0)\n\n\ndef test_after_it():\n    pass\n")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(root / "pyproject.toml"), "--rootdir", str(tmp_path),
         "-p", "no:cacheprovider", str(tmp_path / "test_crash.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "worker 'gw0' crashed while running" in res.stdout and "test_segfaults" in res.stdout
    assert "1 failed, 1 passed" in res.stdout.strip().splitlines()[-1]


def _start(tmp_path, *args: str, sigint_ignored: bool = False) -> tuple[subprocess.Popen, psutil.Process]:
    """A run whose first cell (memory, many repeats) is still measuring when the test acts on it; optionally started
    with SIGINT ignored, as a script's background job is."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "smallbench.cli", "run", "--suite", "memory,latency", "--repeats", "300", *ARGS, *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
    )
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 120
    while time.time() < deadline:
        if cells := _cell_processes(parent):
            time.sleep(1.0)
            return proc, cells[0]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("no cell process appeared")


def _temp_folders(pid: int) -> list:
    import tempfile
    from pathlib import Path

    from smallbench.executors import TMP_PREFIX

    return list(Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{pid}-*"))


@pytest.mark.parametrize(("sig", "ignored"), [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)])
def test_a_stopped_run_stops_its_cell_records_it_and_says_how_to_resume(tmp_path, tiny_path, sig, ignored):
    """Ctrl-C; what `timeout` or a scheduler sends; `kill -INT` to a run started with SIGINT ignored."""
    proc, cell = _start(tmp_path, sigint_ignored=ignored)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"interrupted by {sig.name}" in err and "resumes" in err and "Traceback" not in out + err
    assert not psutil.pid_exists(cell.pid) or cell.status() == psutil.STATUS_ZOMBIE
    assert _temp_folders(proc.pid) == []
    df = load_results(tmp_path / "results")
    assert df["suite"].tolist() == ["memory"] and df["status"].tolist() == ["failed"]  # latency never started
    assert df["error"].iloc[0] == f"interrupted by {sig.name}"


def test_a_cell_ends_itself_when_its_runner_is_killed(tmp_path, tiny_path):
    proc, cell = _start(tmp_path)
    proc.kill()  # SIGKILL: the runner can do nothing
    proc.wait(timeout=30)
    gone, alive = psutil.wait_procs([cell], timeout=15)
    assert not alive, "the cell outlived its runner"
    assert not list((tmp_path / "results").glob("*.json"))  # the cell wrote nothing after its runner died
    assert _temp_folders(proc.pid)  # left behind by the killed runner...
    from smallbench.executors import sweep_temp

    sweep_temp()
    assert _temp_folders(proc.pid) == []  # ...and removed by the next run


def test_two_runs_on_one_folder_never_destroy_each_others_records(tmp_path, tiny_path):
    cmd = [sys.executable, "-m", "smallbench.cli", "run", "--suite", "latency,memory", "--repeats", "2", *ARGS]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    df = load_results(tmp_path / "results")
    assert sorted(df.drop_duplicates("cell_id")["suite"]) == ["latency", "memory"]
    assert set(df["status"]) == {"ok"}
    assert sum(err.count("reused") for _, err in outs) == 2  # each cell measured once, reused by the other run
