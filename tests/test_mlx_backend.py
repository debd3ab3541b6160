"""The MLX backend, for real (mlx-lm on MLX's CPU build here; Metal on Apple Silicon), against the
Transformers backend on the same built-in model converted with mlx-lm's own converter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from smallbench import load_results
from smallbench.backends import LoadSpec, get_backend_class
from smallbench.errors import SmallbenchError
from tests import task_data
from tests.conftest import config_of, require, run_cli
from tests.parity import PROMPTS
from tests.parity import loglikelihood_requests as _requests

mx = require("mlx.core", "mlx")
require("mlx_lm", "mlx")


def _load(source, quant=None, **kw):
    b = get_backend_class("mlx")()
    b.import_library()
    b.load(LoadSpec(model_id="tiny-llama", source=str(source), quant=quant, **kw))
    return b


@pytest.fixture(scope="module")
def mlx_b(tiny_path):
    b = _load(tiny_path)
    yield b
    b.close()


def test_tokenizer_and_model_facts_match_transformers(mlx_b, tf_backend):
    for text in [*PROMPTS, "  spaces\n\ttabs é ü 日本 <s> x", ""]:
        assert mlx_b.tokenize(text) == tf_backend.tokenize(text)
    assert (mlx_b.bos_token_id, mlx_b.eos_token_id) == (tf_backend.bos_token_id, tf_backend.eos_token_id)
    assert mlx_b.vocab_size == tf_backend.vocab_size and mlx_b.max_context == tf_backend.max_context
    info = mlx_b.describe()
    assert info.dtype == "float32" and info.flags["weights"] == "tiny-llama-float32"
    assert info.device == ("metal" if mx.metal.is_available() else "cpu")
    assert config_of(mlx_b) == ""


def test_f32_loglikelihoods_match_transformers(mlx_b, tf_backend):
    reqs = _requests(tf_backend)
    ours, ref = mlx_b.loglikelihood(reqs), tf_backend.loglikelihood(reqs)
    for (lp, greedy), (lp_ref, greedy_ref) in zip(ours, ref, strict=True):
        assert abs(lp - lp_ref) < 1e-3
        assert greedy == greedy_ref
    assert any(g for _, g in ref) and not all(g for _, g in ref)  # the greedy flag is really compared
    # sharing a context's KV cache gives the scores each request gets on its own
    alone = [mlx_b.loglikelihood([r])[0] for r in reqs]
    assert max(abs(a - b) for (a, _), (b, _) in zip(alone, ours, strict=True)) < 1e-4


def test_scoring_context_is_cut_only_at_the_model_context(mlx_b, tf_backend):
    ctx = [3 + i % 1000 for i in range(mlx_b.max_context + 40)]  # longer than the model's context
    cont = [5, 6, 7]
    (lp, _), (ref, _) = mlx_b.loglikelihood([(ctx, cont)])[0], tf_backend.loglikelihood([(ctx, cont)])[0]
    assert abs(lp - ref) < 1e-3
    with pytest.raises(SmallbenchError, match="exceeds the model's context"):
        mlx_b.loglikelihood([([1], [3 + i % 1000 for i in range(mlx_b.max_context + 1)])])


def test_greedy_generation_is_identical_for_at_least_32_tokens(mlx_b, tf_backend):
    for p in PROMPTS:
        ids = tf_backend.tokenize(p)
        trace = mlx_b.stream(ids, 48, ignore_eos=True)
        assert trace.token_ids == tf_backend.stream(ids, 48, ignore_eos=True).token_ids and trace.n_out == 48
        assert len(trace.chunks) == 48 and trace.t_send < trace.chunks[0][0] <= trace.chunks[-1][0]
        stopped = tf_backend.stream(ids, 48, ignore_eos=False).token_ids
        assert mlx_b.stream(ids, 48, ignore_eos=False).token_ids == stopped
    prompts = [tf_backend.tokenize(p) for p in PROMPTS]
    assert mlx_b.generate_until(prompts, 40, ["\n\n"]) == tf_backend.generate_until(prompts, 40, ["\n\n"])


def test_end_token_stops_generation_unless_ignored(tmp_path, tiny_path, tf_backend):
    """The tiny model never ends a text by itself, so a copy of it names a token it does generate as its
    end-of-sequence token: generation stops there (token included), or with ignore_eos never yields it."""
    ids = tf_backend.tokenize(PROMPTS[0])
    natural = tf_backend.stream(ids, 16).token_ids
    end = natural[5]
    folder = tmp_path / "tiny-end"
    shutil.copytree(tiny_path, folder)
    (folder / "manifest.json").unlink()  # a plain checkpoint: loaded as it is, no conversion
    for name, key, value in (("config.json", "eos_token_id", end), ("generation_config.json", "eos_token_id", end),
                             ("tokenizer_config.json", "eos_token", tf_backend.tokenizer.convert_ids_to_tokens(end))):
        data = json.loads((folder / name).read_text())
        data[key] = value
        (folder / name).write_text(json.dumps(data))
    b, ref = _load(folder), get_backend_class("transformers")()
    ref.load(LoadSpec(model_id="tiny-end", source=str(folder), device="cpu"))
    try:
        assert b.eos_token_id == ref.eos_token_id == end
        stopped = b.stream(ids, 16, ignore_eos=False).token_ids
        assert stopped == natural[: natural.index(end) + 1] == ref.stream(ids, 16, ignore_eos=False).token_ids
        forced = b.stream(ids, 24, ignore_eos=True).token_ids
        assert len(forced) == 24 and end not in forced and forced == ref.stream(ids, 24, ignore_eos=True).token_ids
        batch = b.generate_batch([ids, ids], 16, ignore_eos=False)
        assert batch.token_ids == [stopped, stopped] and batch.n_out == [len(stopped)] * 2
        assert b.generate_batch([ids, ids], 24, ignore_eos=True).token_ids == [forced, forced]
    finally:
        b.close()
        ref.close()


def test_batch_generation_matches_single_sequences(mlx_b, tf_backend):
    prompts = [tf_backend.tokenize(p)[:6] for p in PROMPTS]
    trace = mlx_b.generate_batch(prompts, 24, ignore_eos=True)
    assert trace.batch == 4 and trace.n_out == [24] * 4
    assert trace.token_ids == [mlx_b.stream(p, 24).token_ids for p in prompts]
    assert trace.token_ids == tf_backend.generate_batch(prompts, 24).token_ids
    assert trace.t_send < trace.t_first < trace.t_last


def test_quantized_conversions_load_and_stay_close(tiny_path, mlx_b, tf_backend):
    reqs = _requests(tf_backend)[:8]
    ref = [lp for lp, _ in mlx_b.loglikelihood(reqs)]
    full = mlx_b.describe()
    sizes = {}
    for quant, tol in (("float16", 0.05), ("8bit", 0.5), ("4bit", 2.0)):
        b = _load(tiny_path, quant)
        try:
            info = b.describe()
            assert info.flags["weights"] == f"tiny-llama-{quant}"
            config = json.loads((Path(b.weights) / "config.json").read_text())
            if quant.endswith("bit"):  # written by mlx_lm.convert: affine, group size 64
                assert config["quantization"]["bits"] == int(quant[0]) and config["quantization"]["group_size"] == 64
            sizes[quant] = info.flags["bits_per_weight"]
            got = [lp for lp, _ in b.loglikelihood(reqs)]
            assert max(abs(x - y) for x, y in zip(got, ref, strict=True)) < tol
            assert len(b.stream(tf_backend.tokenize(PROMPTS[0]), 8).token_ids) == 8
        finally:
            b.close()
    assert full.flags["bits_per_weight"] == 32 and sizes["float16"] == 16
    assert 16 > sizes["8bit"] > sizes["4bit"] > 4


def test_peak_memory_is_reset_at_the_start_of_every_trial(mlx_b, tf_backend):
    from smallbench.backends.base import LoadedModelInfo
    from smallbench.results import LoadRecord
    from smallbench.suites import SuiteContext, get_suite

    big = [tf_backend.tokenize(PROMPTS[0])[:4] * 64] * 8  # 8 × 256 tokens: a large peak
    mlx_b.reset_peak_memory()
    mlx_b.generate_batch(big, 4)
    big_peak = mlx_b.memory_stats()["mlx_peak_bytes"]
    suite = get_suite("memory")
    settings = suite.settings({"prompt_tokens": 16, "gen_tokens": 8, "repeats": 3, "warmup": 0})
    ctx = SuiteContext(load=LoadRecord(seconds=0, rss_before_bytes=0, rss_after_bytes=0, rss_peak_bytes=0),
                       model_info=LoadedModelInfo())
    result = suite.run(mlx_b, settings, ctx)
    peaks = result.samples["mlx_peak_bytes"]
    assert len(peaks) == 3 and all(0 < p < big_peak / 2 for p in peaks)  # not the process-lifetime peak
    assert {"mlx_active_bytes", "mlx_cache_bytes", "peak_rss_bytes"} <= set(result.samples)


def test_cli_runs_every_suite_offline(tmp_path, tf_backend):
    pytest.importorskip("lm_eval", reason="the accuracy extra (lm-eval) is not installed")
    data = task_data.build(tmp_path / "data")
    out = tmp_path / "results"
    proc = run_cli("run", "--backend", "mlx", "--model", "tiny-llama", "--quant", "float32,4bit",
                   "--suite", "latency,throughput,memory,accuracy", "--tasks", "arc_easy", "--data-dir", str(data),
                   "--limit", "12", "--prompt-tokens", "32", "--gen-tokens", "16", "--batch-sizes", "1,2",
                   "--repeats", "2", "--warmup", "1", "--output", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = load_results(out)
    assert set(df["suite"]) == {"latency", "throughput", "memory", "accuracy"}
    assert set(df["backend"]) == {"mlx"} and set(df["status"]) == {"ok"} and set(df["quant"]) == {"float32", "4bit"}
    assert {"decode_tok_s", "ttft", "tpot", "itl"} <= set(df[df.suite == "latency"]["metric"])
    assert set(df[(df.suite == "throughput") & (df.metric == "decode_tok_s")]["batch_size"]) == {1, 2}
    assert {"mlx_peak_bytes", "weights_bytes", "peak_rss_bytes"} <= set(df[df.suite == "memory"]["metric"])
    assert "accuracy · tiny-llama · mlx" in proc.stdout and "tiny-llama [4bit]" in proc.stdout


def test_accuracy_is_identical_to_transformers(tmp_path, mlx_b, tf_backend):
    pytest.importorskip("lm_eval", reason="the accuracy extra (lm-eval) is not installed")
    from tests.test_accuracy import _by_metric, _suite_scores

    data = task_data.build(tmp_path / "data")
    ours = _by_metric(_suite_scores(mlx_b, data, ["arc_easy"]))
    ref = _by_metric(_suite_scores(tf_backend, data, ["arc_easy"]))
    for metric in ("acc", "acc_norm"):
        assert ours[metric].value == ref[metric].value, metric
        assert ours[metric].labels["n"] == 40


def test_hub_repos_load_from_the_cache_offline(tmp_path, tiny_path, mlx_b):
    """An mlx-community style repo (already quantized) loads as it is; a Hugging Face checkpoint repo is
    converted with --quant. Both come from huggingface_hub's cache: there is no network here."""
    hub = tmp_path / "hub"
    for repo, folder in (("someorg/tiny-mlx-4bit", _load(tiny_path, "4bit").weights), ("someorg/tiny", tiny_path)):
        snap = hub / f"models--{repo.replace('/', '--')}" / "snapshots" / ("a" * 40)
        shutil.copytree(folder, snap)
        (snap / "manifest.json").unlink(missing_ok=True)  # a plain checkpoint, not the built-in model
        (snap.parent.parent / "refs").mkdir()
        (snap.parent.parent / "refs" / "main").write_text("a" * 40)
    out = tmp_path / "results"
    env = {"HF_HUB_CACHE": str(hub), "SMALLBENCH_CACHE": str(tmp_path / "cache")}
    for model, quant in (("someorg/tiny-mlx-4bit", None), ("someorg/tiny", "8bit")):
        args = ["--quant", quant] if quant else []
        proc = run_cli("run", "--backend", "mlx", "--model", model, *args, "--suite", "latency", "--prompt-tokens",
                       "16", "--gen-tokens", "8", "--repeats", "1", "--output", str(out), cwd=tmp_path,
                       env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    df = load_results(out)
    quants = dict(zip(df["model"], df["quant"], strict=True))
    assert quants == {"someorg/tiny-mlx-4bit": "4bit", "someorg/tiny": "8bit"}
    assert (tmp_path / "cache" / "mlx").is_dir()  # the 8-bit conversion went to smallbench's cache
    again = run_cli("run", "--backend", "mlx", "--model", "someorg/tiny-mlx-4bit", "--quant", "8bit", "--suite",
                    "latency", "--repeats", "1", "--output", str(tmp_path / "r2"), cwd=tmp_path, env=env)
    rec = json.loads(next((tmp_path / "r2").glob("*.json")).read_text())
    assert again.returncode == 1 and "'someorg/tiny-mlx-4bit' is already quantized" in rec["error"]


def test_bad_input_is_one_line(tmp_path):
    """An unknown quantization is refused before any cell; a device this build lacks fails the cell in one line."""
    out = tmp_path / "r"
    common = ["run", "--backend", "mlx", "--suite", "latency", "--repeats", "1", "--prompt-tokens", "8",
              "--gen-tokens", "4", "--output", str(out)]
    quant = run_cli(*common, "--quant", "7bit", cwd=tmp_path)
    assert quant.returncode == 2 and "unknown MLX quantization '7bit'" in quant.stderr and not out.exists()
    if mx.metal.is_available():
        return
    proc = run_cli(*common, "--device", "cuda", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    rec = json.loads(next(out.glob("*.json")).read_text())
    expect = "device 'cuda' requested but this MLX build has no such device"
    assert rec["status"] == "failed" and expect in rec["error"] and "\n" not in rec["error"]


@pytest.mark.skipif(not mx.metal.is_available(), reason="needs Apple Silicon (Metal); MLX runs on its CPU build here")
def test_metal_device_and_apple_fingerprint(mlx_b, tf_backend):
    from smallbench.hardware import hardware_info

    assert mlx_b.describe().device == "metal"
    hw = hardware_info()
    assert hw.apple and hw.apple.chip.startswith("Apple") and hw.apple.gpu_cores and hw.apple.unified_memory_bytes
    ids = tf_backend.tokenize(PROMPTS[0])
    assert mlx_b.stream(ids, 32).token_ids == tf_backend.stream(ids, 32).token_ids
