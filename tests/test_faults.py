"""Fault injection on a matrix of 18 cells (6 groups: one load each) over two backends (tiny-llama on Transformers
and llama.cpp in five GGUF types × latency, throughput, memory): real crashes, a memory limit, a hang, 20 random
kill -9s of the runner,
SIGINT, SIGTERM, and two runs on one folder. Every healthy cell ends ok, each failure is a record with its reason,
no process, temp file or partial file is left, and a resumed run redoes only what is missing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from smallbench import load_results
from smallbench.executors import TMP_PREFIX
from tests.conftest import require

require("llama_cpp", "llama-cpp")

MATRIX = ["run", "-b", "transformers,llama-cpp", "--quant", "F32,Q8_0,Q4_0,Q5_0,Q4_1",
          "-s", "latency,throughput,memory", "--prompt-tokens", "16", "--gen-tokens", "8", "--repeats", "2",
          "--warmup", "0", "--batch-sizes", "1", "--timeout", "60"]
CELLS = 18  # transformers once + llama-cpp in five types, × three suites


def _start(folder: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "smallbench.cli", *MATRIX, "-o", str(folder), *extra],
                            cwd=folder.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})


def _cells_of(pids: set[int]) -> list[psutil.Process]:
    """Cell processes started by these runners (their spec file lies in the runner's per-cell temp folder)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "smallbench.cell" in cmd and any(f"{TMP_PREFIX}{pid}-" in cmd for pid in pids):
            out.append(p)
    return out


def _records(folder: Path) -> dict[str, tuple[str, str]]:
    """Cell id → (status, run id) of every record file; each must parse whole (a partial file would not)."""
    out = {}
    for f in folder.glob("*.json") if folder.is_dir() else []:
        rec = json.loads(f.read_text())
        out[rec["cell_id"]] = (rec["status"], rec["run_id"])
    return out


def _check_folder(folder: Path, pids: set[int]) -> dict[str, tuple[str, str]]:
    """After these runners ended: none of their cells is left running, every file is a whole record."""
    _, alive = psutil.wait_procs(_cells_of(pids), timeout=20)
    assert not alive, f"cells outlived their runner: {alive}"
    return _records(folder)


def _nothing_left(folder: Path, pids: set[int]) -> None:
    """After a run that completed: no temp file in the results folder, no per-cell temp folder of any runner."""
    assert not [f.name for f in folder.iterdir() if f.name.endswith(".tmp")]
    assert not [d for pid in pids for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{pid}-*")]


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """The five GGUF files converted once, outside the timed faults (the cache is shared by every run here)."""
    folder = tmp_path_factory.mktemp("warm") / "results"
    res = subprocess.run([sys.executable, "-m", "smallbench.cli", *MATRIX[:5], "-s", "memory", "-o", str(folder),
                          "--prompt-tokens", "8", "--gen-tokens", "2"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr


def test_injected_crash_memory_limit_and_hang_cost_only_their_cells(tmp_path, warm):
    faults = "segv:latency:llama-cpp:Q8_0,oom:memory:llama-cpp:Q4_0,hang:throughput:transformers"
    proc = _start(tmp_path / "results", "--timeout", "45", env={"SMALLBENCH_INJECT_FAULT": faults})
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 1 and "Traceback" not in out + err, err
    _check_folder(tmp_path / "results", {proc.pid})
    _nothing_left(tmp_path / "results", {proc.pid})
    df = load_results(tmp_path / "results").drop_duplicates("cell_id")
    assert len(df) == CELLS
    failed = {(r.suite, r.backend, r.quant if isinstance(r.quant, str) else None): r.error
              for r in df[df.status == "failed"].itertuples()}
    # each group (a model on a backend: memory, latency, throughput on one load) loses the faulted suite and, where
    # the process died, the suites after it; the memory limit is a Python MemoryError, which costs that suite only
    assert set(failed) == {("latency", "llama-cpp", "Q8_0"), ("throughput", "llama-cpp", "Q8_0"),
                           ("memory", "llama-cpp", "Q4_0"), ("throughput", "transformers", None)}
    assert "SIGSEGV in native code" in failed["latency", "llama-cpp", "Q8_0"]
    assert failed["throughput", "llama-cpp", "Q8_0"].startswith("not run: the group's process ended during its "
                                                                "latency suite (cell process killed by signal SIGSEGV")
    assert "MemoryError" in failed["memory", "llama-cpp", "Q4_0"]
    assert "timed out after 45 s" in failed["throughput", "transformers", None]
    # resume: only the four failed cells run again (now without faults), the 14 good records stay as they were
    before = _records(tmp_path / "results")
    again = _start(tmp_path / "results")
    _, err = again.communicate(timeout=900)
    assert again.returncode == 0, err
    after = _check_folder(tmp_path / "results", {again.pid})
    assert all(after[c] == before[c] for c, (status, _) in before.items() if status == "ok")
    assert sum(1 for c in after if after[c][1] != before[c][1]) == 4


def test_kill_9_twenty_times_then_sigint_and_sigterm_then_resume(tmp_path, warm):
    rng, pids, kills, n = random.Random(16), set(), 0, 0
    folder = tmp_path / "results0"
    while kills < 20:
        proc = _start(folder)
        pids.add(proc.pid)
        time.sleep(rng.uniform(0.3, 3.0))
        if proc.poll() is not None:  # this matrix got done between kills: check it, go on with a fresh one
            _, err = proc.communicate()
            assert proc.returncode == 0, err
            assert len(_check_folder(folder, pids)) == CELLS
            n += 1
            folder = tmp_path / f"results{n}"
            continue
        before = _records(folder)
        proc.kill()
        proc.communicate()
        kills += 1
        after = _check_folder(folder, pids)
        assert all(after[c] == v for c, v in before.items() if v[0] == "ok")  # no good record lost or redone
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = _start(folder)
        pids.add(proc.pid)
        time.sleep(3.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break  # nothing was left to run
        assert proc.returncode == 128 + sig and f"interrupted by {sig.name}" in err, err
        _check_folder(folder, pids)
    final = _start(folder)
    _, err = final.communicate(timeout=900)
    assert final.returncode == 0, err
    done = _check_folder(folder, pids | {final.pid})
    assert len(done) == CELLS and {s for s, _ in done.values()} == {"ok"}
    _nothing_left(folder, pids | {final.pid})  # the last run swept what the killed ones left


def test_two_runs_on_one_matrix_measure_each_cell_once(tmp_path, warm):
    procs = [_start(tmp_path / "results") for _ in range(2)]
    errs = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    done = _check_folder(tmp_path / "results", {p.pid for p in procs})
    assert len(done) == CELLS and {s for s, _ in done.values()} == {"ok"}
    assert sum(e.count("reused") for e in errs) == CELLS  # every cell measured by one run, reused by the other
    _nothing_left(tmp_path / "results", {p.pid for p in procs})


def test_work_done_apart_keeps_its_memory_and_its_crash_to_itself():
    """smallbench.apart: the conversions a cell makes before it measures run in a process of their own, so a cold
    cache does not raise the measured peak (0.5–0.7 GiB of Transformers left behind by writing a dummy's weights
    did, before), and a native crash there is one line. Real processes, stdlib targets."""
    from smallbench.apart import run_apart
    from smallbench.errors import SmallbenchError

    me = psutil.Process()
    before = me.memory_info().rss
    run_apart("builtins:bytearray", "a big buffer", source=400 * 2**20)  # 400 MiB, touched, in the child
    assert me.memory_info().rss - before < 100 * 2**20
    with pytest.raises(SmallbenchError, match=r"^--x 'y' is not one of: z$"):  # the child's own line, as it is
        run_apart("smallbench.validate:check_choice", "checking", option="--x", value="y", allowed=["z"])
    with pytest.raises(SmallbenchError, match=r"^parsing failed: JSONDecodeError: Expecting value"):
        run_apart("json:loads", "parsing", s="not json")
    with pytest.raises(SmallbenchError, match=r"^reading address 0 failed: killed by signal 11"):
        run_apart("ctypes:string_at", "reading address 0", ptr=0)
