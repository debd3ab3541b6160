"""``--dummy`` with a catalogued sponsor model at full size on every backend, offline: the issue's command, with
shapes small enough for CI. Records say dummy, carry no accuracy, and the memory suite's prediction (what
``smallbench fit`` computes: weights + KV cache, plus the weights an engine holds twice) is within 10 % of the
measured peak on every backend. On vLLM the measured footprint is over a baseline that also holds vLLM's own
processes as they were before the model loaded (docs/metrics.md)."""

from __future__ import annotations

import json

from smallbench.results import read_records
from tests.conftest import require, run_cli

BACKENDS = {"transformers": ("transformers", "transformers"), "llama-cpp": ("llama_cpp", "llama-cpp"),
            "mlx": ("mlx.core", "mlx"), "vllm": ("vllm", "vllm"), "vllm-server": ("vllm", "vllm")}


def test_minicpm5_dummy_memory_on_every_backend(tmp_path):
    for module, extra in BACKENDS.values():
        require(module, extra)
    out = tmp_path / "results"
    r = run_cli("run", "--backend", ",".join(BACKENDS), "--model", "minicpm5-1b", "--dummy", "--suite", "memory",
                "--prompt-tokens", "8", "--gen-tokens", "4", "--repeats", "1", "--warmup", "0", "--enforce-eager",
                "-o", str(out), cwd=tmp_path, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    records = read_records(out)
    assert sorted(rec.backend.name for rec in records) == sorted(BACKENDS)
    for rec in records:
        assert rec.status == "ok" and rec.model.dummy and rec.model.weights_sha256 is None
        assert rec.model.params_total and abs(rec.model.params_total - 1_080_632_832) < 0.001 * 1_080_632_832
        m = {x.name: x.value for x in rec.metrics}
        if rec.backend.name.startswith("vllm"):  # oneDNN's packed copies of the input embedding and the untied head
            assert rec.extra["prediction"]["kv_cache"] == m["kv_cache_reserved_bytes"]
            assert m["weight_copies_bytes"] == 2 * 130560 * 1536 * 4 and m["engine_runtime_bytes"] > 0
        assert abs(m["prediction_error_pct"]) <= 10, (rec.backend.name, rec.extra.get("prediction"), m)


def test_dummy_decode_reports_its_share_of_the_bandwidth_bound(tmp_path):
    """A full-size model's decode is bound by memory bandwidth: the record says how close it came (0-100 %)."""
    require("llama_cpp", "llama-cpp")
    out = tmp_path / "results"
    r = run_cli("run", "--backend", "llama-cpp", "--model", "minicpm5-1b", "--dummy", "--suite", "latency",
                "--prompt-tokens", "8", "--gen-tokens", "8", "--repeats", "2", "--warmup", "1", "-o", str(out),
                cwd=tmp_path, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (rec,) = read_records(out)
    pct = next(m for m in rec.metrics if m.name == "decode_bandwidth_pct")
    assert 0 < pct.value < 100
    roof = rec.extra["roofline"]
    assert roof["source"].startswith("measured") and roof["bandwidth_bytes_s"] > 1e9
    assert "energy_per_token" not in {m.name for m in rec.metrics}  # no counter on this machine: absent
    assert rec.extra["energy"].startswith("no energy counter")


def test_fit_matches_what_llama_cpp_allocates_for_the_builtin_model(tmp_path):
    """For the 5 MB built-in model the process RSS is mostly runtime (tokenizer, compute buffers); llama.cpp's
    own accounting of its weights and KV buffers is what the prediction is held to."""
    require("llama_cpp", "llama-cpp")
    out = tmp_path / "results"
    r = run_cli("run", "--backend", "llama-cpp", "--suite", "memory", "--prompt-tokens", "16", "--gen-tokens", "4",
                "--repeats", "1", "--warmup", "0", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (rec,) = read_records(out)
    m = {x.name: x.value for x in rec.metrics}
    assert abs(m["engine_prediction_error_pct"]) <= 10, (m, rec.extra.get("prediction"))


def test_scaling_down_leaves_the_catalogue_as_it_was():
    """scale_down works on a copy: the catalogue entry's nested settings (Phi's LongRoPE factors) stay whole."""
    from smallbench import dummy, models

    config = models.entry("phi-4-mini").config
    before = json.dumps(config, sort_keys=True)
    dummy.scale_down(config)
    assert json.dumps(config, sort_keys=True) == before
