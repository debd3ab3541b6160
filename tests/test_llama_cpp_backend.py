"""The llama.cpp backend, for real (llama-cpp-python built from source), against the Transformers
backend on the same built-in model exported to GGUF."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smallbench import load_results
from smallbench.backends import LoadSpec, get_backend_class
from smallbench.backends.llama_cpp import select_gguf
from smallbench.errors import SmallbenchError
from tests import task_data
from tests.conftest import config_of, require, run_cli
from tests.parity import PROMPTS
from tests.parity import loglikelihood_requests as _requests

require("llama_cpp", "llama-cpp")


def _load(tiny_path, quant=None, **options):
    b = get_backend_class("llama-cpp")()
    b.import_library()
    b.load(LoadSpec(model_id="tiny-llama", source=str(tiny_path), quant=quant, options=options))
    return b


@pytest.fixture(scope="module")
def llama(tiny_path):
    b = _load(tiny_path)
    yield b
    b.close()


def test_gguf_tokenizer_matches_the_hf_tokenizer(llama, tf_backend):
    assert config_of(llama) == ""  # every setting left at llama.cpp's defaults: the leaderboard's default row
    for text in [*PROMPTS, "  spaces\n\ttabs é ü 日本 <s> x", "x</s>y", ""]:
        assert llama.tokenize(text) == tf_backend.tokenize(text), text
        assert llama.tokenize(text, add_special_tokens=False) == tf_backend.tokenize(text, add_special_tokens=False)
        ids = tf_backend.tokenize(text)
        assert llama.detokenize(ids) == tf_backend.detokenize(ids)
    assert (llama.bos_token_id, llama.eos_token_id) == (tf_backend.bos_token_id, tf_backend.eos_token_id)
    assert llama.special_token_ids == tf_backend.special_token_ids
    assert llama.vocab_size == tf_backend.vocab_size


def test_f32_loglikelihoods_match_transformers(llama, tf_backend):
    reqs = _requests(tf_backend)
    ours, ref = llama.loglikelihood(reqs), tf_backend.loglikelihood(reqs)
    for (lp, greedy), (lp_ref, greedy_ref) in zip(ours, ref, strict=True):
        assert abs(lp - lp_ref) < 1e-2
        assert greedy == greedy_ref
    assert any(g for _, g in ref) and not all(g for _, g in ref)  # the greedy flag is really compared
    # prefix reuse in the KV cache gives the same scores as scoring each request on its own
    alone = [llama.loglikelihood([r])[0] for r in reqs]
    assert [round(lp, 4) for lp, _ in alone] == [round(lp, 4) for lp, _ in ours]


def test_greedy_generation_is_identical_for_at_least_32_tokens(llama, tf_backend):
    for p in PROMPTS:
        ids = tf_backend.tokenize(p)
        ours = llama.stream(ids, 48, ignore_eos=True).token_ids
        ref = tf_backend.stream(ids, 48, ignore_eos=True).token_ids
        assert ours == ref and len(ours) == 48
        stopped = llama.stream(ids, 48, ignore_eos=False).token_ids
        assert stopped == tf_backend.stream(ids, 48, ignore_eos=False).token_ids
    assert llama.generate_until([tf_backend.tokenize(p) for p in PROMPTS], 40, ["\n\n"]) == \
        tf_backend.generate_until([tf_backend.tokenize(p) for p in PROMPTS], 40, ["\n\n"])


def test_parallel_sequences_generate_what_single_ones_do(llama, tf_backend):
    prompts = [tf_backend.tokenize(p)[:6] for p in PROMPTS]
    trace = llama.generate_batch(prompts, 24, ignore_eos=True)
    assert trace.batch == 4 and trace.n_out == [24] * 4
    assert trace.token_ids == [llama.stream(p, 24).token_ids for p in prompts]
    assert trace.token_ids == tf_backend.generate_batch(prompts, 24).token_ids
    assert trace.t_send < trace.t_first < trace.t_last


def test_quantized_exports_load_and_stay_close(tiny_path, llama, tf_backend):
    reqs = _requests(tf_backend)[:8]
    ref = [lp for lp, _ in llama.loglikelihood(reqs)]
    sizes = {}
    for quant, tol in (("F16", 1e-2), ("Q8_0", 0.5)):
        b = _load(tiny_path, quant)
        try:
            assert b.describe().dtype == quant and b.describe().flags["gguf_file"].endswith(f"-{quant}.gguf")
            sizes[quant] = b.describe().flags["weights_bytes"]
            got = [lp for lp, _ in b.loglikelihood(reqs)]
            assert max(abs(x - y) for x, y in zip(got, ref, strict=True)) < tol
            assert len(b.stream(tf_backend.tokenize(PROMPTS[0]), 8).token_ids) == 8
        finally:
            b.close()
    assert llama.describe().flags["weights_bytes"] > sizes["F16"] > sizes["Q8_0"]


def test_context_overflow_is_one_clear_error(tiny_path):
    b = _load(tiny_path, n_ctx=64)
    try:
        assert b.max_context == 64
        with pytest.raises(SmallbenchError, match=r"needs 72 tokens of context but the context holds 64"):
            b.stream(list(range(3, 63)), 12)
        assert len(b.stream(list(range(3, 53)), 12).token_ids) == 12  # what fits still runs
        long = list(range(3, 200))  # scoring cuts from the left, as lm-eval does
        assert b.loglikelihood([(long[:-3], long[-3:])])[0][0] < 0
    finally:
        b.close()


def test_select_gguf_picks_files_like_llama_cpp():
    files = ["README.md", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "mmproj-m-F16.gguf", "F16/m-F16-00001-of-00002.gguf",
             "F16/m-F16-00002-of-00002.gguf", "m-Q4_K_S.gguf"]
    assert select_gguf(files, None, "repo") == ["m-Q4_K_M.gguf"]  # llama.cpp's -hf default
    assert select_gguf(files, "q8_0", "repo") == ["m-Q8_0.gguf"]
    assert select_gguf(files, "F16", "repo") == ["F16/m-F16-00001-of-00002.gguf", "F16/m-F16-00002-of-00002.gguf"]
    with pytest.raises(SmallbenchError, match="--quant Q5_K_M matches 0 of"):
        select_gguf(files, "Q5_K_M", "repo")
    with pytest.raises(SmallbenchError, match="no .gguf file"):
        select_gguf(["config.json", "model.safetensors"], None, "repo")
    assert select_gguf(["only.gguf"], None, "repo") == ["only.gguf"]


def test_cli_runs_every_suite_offline(tmp_path):
    data = task_data.build(tmp_path / "data")
    out = tmp_path / "results"
    proc = run_cli("run", "--backend", "llama-cpp", "--model", "tiny-llama",
                   "--suite", "latency,throughput,memory,accuracy", "--tasks", "arc_easy", "--data-dir", str(data),
                   "--limit", "12", "--prompt-tokens", "32", "--gen-tokens", "16", "--batch-sizes", "1,2",
                   "--repeats", "2", "--warmup", "1", "--output", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = load_results(out)
    assert set(df["suite"]) == {"latency", "throughput", "memory", "accuracy"}
    assert set(df["backend"]) == {"llama-cpp"} and set(df["status"]) == {"ok"}
    rec = json.loads(next(out.glob("*__latency__*.json")).read_text())
    assert rec["model"]["quant"] == "F32" and rec["backend"]["flags"]["gguf_file"] == "tiny-llama-F32.gguf"
    assert {"decode_tok_s", "ttft", "tpot", "itl"} <= set(df[df.suite == "latency"]["metric"])
    assert set(df[(df.suite == "throughput") & (df.metric == "decode_tok_s")]["batch_size"]) == {1, 2}
    assert "accuracy · tiny-llama · llama-cpp" in proc.stdout


def test_accuracy_is_identical_to_transformers(tmp_path, tiny_path, llama, tf_backend):
    pytest.importorskip("lm_eval", reason="the accuracy extra (lm-eval) is not installed")
    from tests.test_accuracy import _by_metric, _suite_scores

    data = task_data.build(tmp_path / "data")
    ours = _by_metric(_suite_scores(llama, data, ["arc_easy"]))
    ref = _by_metric(_suite_scores(tf_backend, data, ["arc_easy"]))
    for metric in ("acc", "acc_norm"):
        assert ours[metric].value == ref[metric].value, metric
        assert ours[metric].labels["n"] == 40


def test_bad_gguf_files_fail_their_own_cells_only(tmp_path, tiny_path, llama):
    good = Path(llama.path)
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"not a gguf file at all" * 100)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out = tmp_path / "results"
    proc = run_cli("run", "--backend", "llama-cpp", "--model", f"tiny-llama,{corrupt},{truncated}",
                   "--suite", "latency", "--prompt-tokens", "16", "--gen-tokens", "8", "--repeats", "1",
                   "--warmup", "0", "--output", str(out), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    records = {r["model"]["id"]: r for r in (json.loads(p.read_text()) for p in out.glob("*.json"))}
    assert records["tiny-llama"]["status"] == "ok"
    for bad in (corrupt, truncated):
        err = records[str(bad)]["error"]
        assert records[str(bad)]["status"] == "failed" and "\n" not in err
        assert err.startswith(f"llama.cpp could not load '{bad.name}'")
    assert "invalid magic characters" in records[str(corrupt)]["error"]
    assert "not within the file bounds" in records[str(truncated)]["error"]
    missing = run_cli("run", "--backend", "llama-cpp", "--model", str(tmp_path / "absent.gguf"), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error:")
    assert len(missing.stderr.strip().splitlines()) == 1


def test_context_overflow_is_refused_before_any_cell(tmp_path):
    out = tmp_path / "results"
    proc = run_cli("run", "--backend", "llama-cpp", "--suite", "latency", "--ctx-size", "64", "--prompt-tokens",
                   "60", "--gen-tokens", "8", "--output", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == ("error: suite 'latency': --prompt-tokens + --gen-tokens "
                                                            "= 68 exceeds --ctx-size 64")
    assert not out.exists()


def test_extra_buffer_setting_reaches_llama_cpp_and_the_record(tmp_path):
    """--extra-bufts off, the setting that avoids llama.cpp's AMX crash, runs Q8_0 and Q4_0 cells with
    plain CPU weight buffers; auto keeps the repacked Q4_0 buffer unless this build runs AMX kernels."""
    import llama_cpp

    from smallbench.backends.llama_cpp import amx_build
    from smallbench.hardware import cpu_flags

    out = tmp_path / "results"
    common = ["run", "--backend", "llama-cpp", "--suite", "latency", "--prompt-tokens", "16", "--gen-tokens", "8",
              "--repeats", "2", "--output", str(out)]
    off = run_cli(*common, "--quant", "Q8_0,Q4_0", "--extra-bufts", "off", cwd=tmp_path)
    assert off.returncode == 0, off.stdout + off.stderr
    auto = run_cli(*common, "--quant", "Q4_0", cwd=tmp_path)
    assert auto.returncode == 0, auto.stdout + auto.stderr
    records = [json.loads(p.read_text()) for p in out.glob("*.json")]
    by = {(r["model"]["quant"], r["backend"]["flags"]["extra_bufts_setting"]): r for r in records}
    assert set(by) == {("Q8_0", "off"), ("Q4_0", "off"), ("Q4_0", "auto")}

    def extra_buffers(rec) -> set[str]:  # weights placed anywhere but plain (or memory-mapped) CPU buffers
        assert rec["backend"]["flags"]["weight_buffers"], "llama.cpp's load log named no weights buffer"
        return set(rec["backend"]["flags"]["weight_buffers"]) - {"CPU", "CPU_Mapped"}

    for key in (("Q8_0", "off"), ("Q4_0", "off")):
        assert by[key]["status"] == "ok" and by[key]["backend"]["flags"]["extra_bufts"] is False
        assert extra_buffers(by[key]) == set(), key
    expect = not amx_build(llama_cpp)
    assert by[("Q4_0", "auto")]["backend"]["flags"]["extra_bufts"] is expect
    assert bool(extra_buffers(by[("Q4_0", "auto")])) is expect  # CPU_REPACK where it is on
    assert by[("Q4_0", "auto")]["hardware"]["cpu_flags"] == cpu_flags()
    bad = run_cli("run", "--backend", "llama-cpp", "--extra-bufts", "maybe", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --extra-bufts 'maybe' is not one of: auto, on, off"


def test_a_native_crash_fails_its_cell_with_what_to_try(tmp_path):
    """A cell that dies by a signal in native code (here SIGSEGV sent to it mid-run) is a failed record
    whose one-line reason names the signal and the llama.cpp setting to try."""
    import psutil

    from tests.test_runner import _cell_processes

    proc = subprocess.Popen(
        [sys.executable, "-m", "smallbench.cli", "run", "--backend", "llama-cpp", "--suite", "latency",
         "--repeats", "100000", "--prompt-tokens", "16", "--gen-tokens", "8", "--output", str(tmp_path / "r")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline, victim = time.time() + 120, None
    while victim is None and time.time() < deadline:
        victim = next(iter(_cell_processes(psutil.Process(proc.pid))), None)
        time.sleep(0.2)
    assert victim is not None, "no cell process appeared"
    time.sleep(3.0)  # into the measured loop
    os.kill(victim.pid, signal.SIGSEGV)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in out + err
    rec = json.loads(next((tmp_path / "r").glob("*__latency__*.json")).read_text())
    assert rec["status"] == "failed" and "\n" not in rec["error"]
    assert rec["error"].startswith("cell process killed by signal SIGSEGV in native code; try --extra-bufts off")


def test_hub_repo_of_gguf_files_loads_from_the_cache_offline(tmp_path):
    """A Hub repo id resolves through huggingface_hub's cache (no network here): --quant picks the file."""
    snap = tmp_path / "hub" / "models--someorg--tiny-GGUF" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("a" * 40)
    for q in ("Q8_0", "F32"):
        shutil.copy(_export(q), snap / f"tiny-{q}.gguf")
    out = tmp_path / "results"
    env_cache = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = run_cli("run", "--backend", "llama-cpp", "--model", "someorg/tiny-GGUF", "--quant", "Q8_0,F32",
                   "--suite", "latency", "--prompt-tokens", "16", "--gen-tokens", "8", "--repeats", "1",
                   "--output", str(out), cwd=tmp_path, env=env_cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = load_results(out)
    assert sorted(set(df["quant"])) == ["F32", "Q8_0"]


def _export(quant: str) -> Path:
    from smallbench import tiny_model
    from smallbench.gguf_export import ensure_gguf

    return ensure_gguf(tiny_model.model_dir(), tiny_model.WEIGHTS_SHA256, quant)



def test_gpu_offload_build_runs_on_the_gpu(tiny_path, tf_backend):
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build has no GPU offload (CPU build; see the README for CUDA/Metal)")
    b = _load(tiny_path)
    try:
        info = b.describe()
        assert info.flags["n_gpu_layers"] > 0 and info.device in ("cuda", "metal")
        reqs = _requests(tf_backend)
        for (lp, _), (ref, _) in zip(b.loglikelihood(reqs), tf_backend.loglikelihood(reqs), strict=True):
            assert abs(lp - ref) < 1e-2
        ids = tf_backend.tokenize(PROMPTS[0])
        assert b.stream(ids, 32).token_ids == tf_backend.stream(ids, 32).token_ids
    finally:
        b.close()
