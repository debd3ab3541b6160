"""The catalogue and sizing arithmetic: parameter counts against the architectures' own code, Build Small
compliance, KV-cache sizes, what fits, and the CLI commands that show them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smallbench import dummy, models, sizing
from smallbench.errors import SmallbenchError
from tests.conftest import require, run_cli

SPONSORS = ["nemotron-3-nano-4b", "nemotron-3-nano-30b-a3b", "mellum2-12b-a2.5b", "tiny-aya-global", "minicpm5-1b",
            "minicpm4.1-8b"]


def meta_count(config: dict) -> tuple[int, int]:
    """(total, expert) parameters of the architecture as transformers builds it, on the meta device."""
    torch = require("torch", "transformers")
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    cfg = CONFIG_MAPPING[config["model_type"]](**{k: v for k, v in config.items() if k != "model_type"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)


def test_catalogue_entries():
    cat = models.catalogue()
    assert set(SPONSORS) <= set(cat)
    assert "mellum-4b" not in cat  # the first Mellum, not Mellum 2
    assert cat["mellum2-12b-a2.5b"].repo == "JetBrains/Mellum2-12B-A2.5B-Instruct"
    for e in cat.values():
        assert e.config["model_type"] == e.architecture
    assert cat["minicpm4.1-8b"].trust_remote_code and not cat["minicpm5-1b"].trust_remote_code
    assert cat["tiny-aya-global"].gated and cat["tiny-aya-global"].license == "CC-BY-NC-4.0"


@pytest.mark.parametrize("name", [n for n, e in models.catalogue().items() if e.architecture != "minicpm"])
@pytest.mark.parametrize("scaled", [False, True], ids=["full", "scaled"])
def test_param_count_matches_the_architecture_code(name, scaled):
    config = models.entry(name).config
    config = dummy.scale_down(config) if scaled else config
    total, expert = meta_count(config)
    n = sizing.count_params(config)
    assert n.total == total
    if expert:
        a = sizing.arch(config)
        assert n.active == total - expert + expert // a.experts * a.top_k
    else:
        assert n.active == n.total


@pytest.mark.parametrize("name", ["nemotron-3-nano-4b", "nemotron-3-nano-30b-a3b"])
def test_nemotron_h_block_names_scale_down_as_the_pattern_does(name):
    """transformers 5 writes Nemotron-H's blocks as ``layers_block_type`` names, not the pattern's letters: the
    config reads (and scales down) to the same architecture either way."""
    config = models.entry(name).config
    letters = {letter: block for block, letter in sizing.NEMOTRON_LETTERS.items() if block in ("mamba", "attention",
                                                                                                 "mlp", "moe")}
    named = {k: v for k, v in config.items() if k != "hybrid_override_pattern"}
    named["layers_block_type"] = [letters[ch] for ch in config["hybrid_override_pattern"]]
    assert sizing.arch(named) == sizing.arch(config)
    small = dummy.scale_down(named)
    assert small["num_hidden_layers"] == len(small["layers_block_type"]) < config["num_hidden_layers"]
    assert sizing.arch(small) == sizing.arch(dummy.scale_down(config))
    assert meta_count(small) == meta_count(dummy.scale_down(config))


def test_catalogue_counts_within_half_a_percent():
    for e in models.catalogue().values():
        c = sizing.compliance(e.config, e.params_total)
        assert c.matches_catalogue, (e.name, c.deviation)
        assert c.under_cap, e.name


def test_build_small_cap_counts_every_expert():
    nano30 = models.entry("nemotron-3-nano-30b-a3b").config
    ok = sizing.compliance(nano30)
    assert 31.5e9 < ok.params.total < 32e9 and ok.params.active < 4e9 and ok.under_cap
    bigger = {**nano30, "n_routed_experts": 136}  # 8 more experts: 3.5B active still, 33B+ in total
    over = sizing.compliance(bigger)
    assert over.params.total > 33e9 and not over.under_cap
    # the cap is about the total, not what runs per token (which only gains the larger routers here)
    assert abs(over.params.active - ok.params.active) < 1e-3 * ok.params.active


def test_models_check_cli(tmp_path):
    r = run_cli("models", "check", "nemotron-3-nano-30b-a3b", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Build Small: PASS" in r.stdout and "matches the catalogue" in r.stdout
    synthetic = {**models.entry("nemotron-3-nano-30b-a3b").config, "n_routed_experts": 136}
    (tmp_path / "moe33b").mkdir()
    (tmp_path / "moe33b" / "config.json").write_text(json.dumps(synthetic))
    r = run_cli("models", "check", str(tmp_path / "moe33b"), cwd=tmp_path)
    assert r.returncode == 1 and "Build Small: FAIL" in r.stdout
    r = run_cli("models", "check", "no-such-model", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize(("key", "value", "says"), [
    ("hidden_size", "x", "not a whole number"), ("hidden_size", None, "not a whole number"),
    ("vocab_size", 1.5, "not a whole number"), ("num_hidden_layers", -4, "less than 1"),
    ("num_attention_heads", 0, "less than 1"), ("intermediate_size", -1, "less than 0"),
])
def test_a_config_whose_dimensions_are_not_dimensions_is_refused(key, value, says):
    config = {**models.entry("minicpm5-1b").config, key: value}  # these were counted: -4 layers passed Build Small
    with pytest.raises(SmallbenchError, match=f"{key} is {value!r}, {says}"):
        sizing.count_params(config)
    ok = {**models.entry("minicpm5-1b").config, "num_key_value_heads": None, "head_dim": 0}  # absent: derived
    assert sizing.arch(ok).kv_heads == 16 and sizing.arch(ok).head_dim == 1536 // 16


def test_kv_size_gqa_sliding_and_ssm():
    aya = sizing.kv_size(models.entry("tiny-aya-global").config, "bfloat16")
    # 36 layers, 1 in 4 full attention: 9 full + 27 sliding (window 4096); 4 KV heads × 128 × K,V × 2 bytes
    assert aya.per_token == 9 * 2 * 4 * 128 * 2 and aya.sliding_per_token == 27 * 2 * 4 * 128 * 2
    assert aya.bytes(10_000) == aya.per_token * 10_000 + aya.sliding_per_token * 4096
    nano = sizing.kv_size(models.entry("nemotron-3-nano-4b").config, "bfloat16")
    assert nano.per_token == 4 * 2 * 8 * 128 * 2  # 4 attention layers only
    # 21 Mamba layers: conv state (d_inner + 2·groups·state) × (kernel − 1) in bf16 + SSM state in float32
    assert nano.state_per_sequence == 21 * ((7680 + 2 * 8 * 128) * 3 * 2 + 96 * 80 * 128 * 4)
    assert nano.bytes(1, 2) == 2 * (nano.per_token + nano.state_per_sequence)


def test_fit():
    cfg = models.entry("minicpm5-1b").config
    f = sizing.fit(cfg, 16 * 10**9, "Q4_K_M", context=8192, overhead=2**30)
    assert f.weights == sizing.weights_bytes(1_080_632_832, "Q4_K_M")
    assert f.sequences_at_context == (16 * 10**9 - f.weights - 2**30) // f.kv.bytes(8192)
    assert f.longest_context == f.max_context == 131072  # the model card's context
    tight = sizing.fit(cfg, f.weights + 2**30 + f.kv.bytes(1000), "Q4_K_M", overhead=2**30)
    assert tight.longest_context == 1000 and tight.sequences_at_context == 0
    with pytest.raises(SmallbenchError, match="unknown weights type"):
        sizing.weights_bytes(10, "Q9_X")
    assert sizing.parse_bytes("16GB") == 16 * 10**9 and sizing.parse_bytes("24GiB") == 24 * 2**30


def test_fit_cli_says_why_mellum_does_not_fit(tmp_path):
    r = run_cli("fit", "mellum2-12b-a2.5b", "--memory", "23.5GiB", cwd=tmp_path)
    assert r.returncode == 1
    assert "does NOT fit" in r.stdout and "weights" in r.stdout
    r = run_cli("fit", "mellum2-12b-a2.5b", "--memory", "23.5GiB", "--quant", "Q4_K_M", cwd=tmp_path)
    assert r.returncode == 0 and "longest single sequence" in r.stdout
    r = run_cli("fit", "minicpm5-1b", "--memory", "lots", cwd=tmp_path)
    assert r.returncode == 2 and "cannot read 'lots' as a size" in r.stderr


def test_fit_cli_gives_the_decode_bound_of_a_named_gpu(tmp_path):
    """``--gpu NAME``: the table's bandwidth over the bytes one decode step reads (a MoE's routed experts only, the
    KV cache at the context); the same arithmetic the roofline of every decode record uses."""
    import re

    for model, quant, gpu, bandwidth in (("tiny-aya-global", "Q4_K_M", "RTX 4090", 1008e9),
                                         ("mellum2-12b-a2.5b", "bfloat16", "H100 PCIe", 2.0e12)):
        r = run_cli("fit", model, "--memory", "80GB", "--quant", quant, "--gpu", gpu, "--context", "8192",
                    cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        tok_s = float(re.search(r"decode bound +([\d,]+) tok/s at most, one sequence at 8,192 tokens", r.stdout)
                      .group(1).replace(",", ""))
        config = models.entry(model).config
        weights = sizing.weights_bytes(models.entry(model).params_total, quant)
        read = sizing.decode_bytes_per_token(config, weights, 8192, 1, "float16" if quant == "Q4_K_M" else quant)
        assert tok_s == pytest.approx(bandwidth / read, abs=0.5) and f"({gpu})" in r.stdout
    mellum = models.entry("mellum2-12b-a2.5b")  # 2.44B of 12.15B active: a fifth of the weights read per token
    assert tok_s > 4 * 2.0e12 / sizing.weights_bytes(mellum.params_total, "bfloat16")
    r = run_cli("fit", "minicpm5-1b", "--memory", "16GB", "--device", "cpu", cwd=tmp_path)  # no GPU: no bound
    assert r.returncode == 0 and "decode bound" not in r.stdout


def test_fit_cli_adds_what_vllm_holds_besides(tmp_path):
    """``--backend vllm``: on a CPU its packed embedding copies (the rule tests/test_architectures.py holds to what
    vLLM's worker measures), on a GPU the share of memory it leaves free; both shrink what fits."""
    cfg = models.entry("minicpm5-1b").config
    args = ("fit", "minicpm5-1b", "--quant", "float32", "--memory", "16GiB", "--context", "4096")
    plain = run_cli(*args, "--device", "cpu", cwd=tmp_path)
    cpu = run_cli(*args, "--device", "cpu", "--backend", "vllm", cwd=tmp_path)
    assert plain.returncode == cpu.returncode == 0, cpu.stderr
    copies = 2 * 130560 * 1536 * 4  # untied: the input embedding and the output head, float32
    assert f"vllm              {copies / 2**30:.2f} GiB" in cpu.stdout and "vllm" not in plain.stdout

    def sequences(out: str) -> int:
        return int(out.rsplit("at once", 1)[1].replace(",", ""))

    f = sizing.fit(cfg, 16 * 2**30, "float32", 4096, overhead=2**30 + copies)
    assert sequences(cpu.stdout) == f.sequences_at_context < sequences(plain.stdout)
    gpu = run_cli(*args[:5], "80GB", "--backend", "vllm", "--device", "cuda", cwd=tmp_path)
    assert gpu.returncode == 0 and f"{8e9 / 2**30:.2f} GiB (left free: gpu_memory_utilization 0.9)" in gpu.stdout


def test_offload_places_layers_from_the_last_as_llama_cpp_does(tmp_path):
    """llama.cpp's ``n_gpu_layers``: layers from the last down with their KV cache, then the output head, which
    counts as one layer more (tests/test_architectures.py holds the layer sizes to llama.cpp's GGUF)."""
    cfg = models.entry("minicpm5-1b").config  # 24 equal full-attention layers, untied head
    layer = sizing.weights_bytes(sizing.layer_params(cfg)[-1], "Q4_K_M")
    kv = sizing.kv_size(cfg, "float16").per_token // 24 * 4096  # one layer's K and V at 4,096 tokens

    def offload(memory: int) -> int:
        return sizing.offload_layers(cfg, 2**30 + memory, "Q4_K_M", 4096, overhead=2**30)

    assert offload(5 * (layer + kv)) == 5 and offload(5 * (layer + kv) - 1) == 4
    head = sizing.weights_bytes(130560 * 1536 + 1536, "Q4_K_M")
    assert offload(24 * (layer + kv) + head) == 25 and offload(24 * (layer + kv) + head - 1) == 24
    r = run_cli("fit", "mellum2-12b-a2.5b", "--backend", "llama-cpp", "--device", "cuda", "--memory", "8GB",
                "--quant", "Q4_K_M", "--context", "4096", cwd=tmp_path)
    mellum = models.entry("mellum2-12b-a2.5b").config
    k = sizing.offload_layers(mellum, 8 * 10**9, "Q4_K_M", 4096, overhead=2**30)
    assert r.returncode == 1 and 0 < k < 28 and f"--n-gpu-layers {k} puts {k} of 28 layers on the GPU" in r.stdout
    assert "n-gpu-layers" not in run_cli("fit", "mellum2-12b-a2.5b", "--memory", "8GB", cwd=tmp_path).stdout


def test_remote_code_models_are_refused_without_the_flag():
    with pytest.raises(SmallbenchError, match="--trust-remote-code"):
        models.resolve("minicpm4.1-8b", dummy=True)


def test_list_models_shows_the_catalogue(tmp_path):
    r = run_cli("list", "models", cwd=tmp_path)
    assert r.returncode == 0
    for name in SPONSORS:
        assert name in r.stdout
    assert "CC-BY-NC-4.0" in r.stdout and "31.58B" in r.stdout and "needs flag" in r.stdout


def test_dummy_folder_is_offline_and_cached():
    a = models.resolve("minicpm5-1b", dummy=True)
    b = models.resolve("minicpm5-1b", dummy=True)
    assert a.source == b.source and dummy.is_dummy(a.source)
    builtin = models.resolve("tiny-llama", dummy=True)  # random weights: the built-in files' hash is not theirs
    assert builtin.weights_sha256 is None and models.resolve("tiny-llama").weights_sha256
    cfg = json.loads((Path(a.source) / "config.json").read_text())
    assert cfg["hidden_size"] == 1536 and cfg["vocab_size"] == 130560


def test_minimum_library_versions_are_enforced(monkeypatch):
    from smallbench.models import CatalogueEntry, catalogue

    mellum = models.entry("mellum2-12b-a2.5b")
    models.check_versions("mellum2-12b-a2.5b", ["transformers", "mlx"])  # the installed ones are new enough
    future = CatalogueEntry.model_validate({**mellum.model_dump(), "min_versions": {"transformers": "99.0"}})
    monkeypatch.setitem(catalogue(), "mellum2-12b-a2.5b", future)
    with pytest.raises(SmallbenchError, match=r"needs transformers >= 99.0 for backend 'transformers'"):
        models.check_versions("mellum2-12b-a2.5b", ["transformers"])
    models.check_versions("mellum2-12b-a2.5b", ["llama-cpp"])  # no minimum for llama-cpp-python


def test_catalogue_picks_gguf_and_mlx_repos():
    mellum = models.entry("mellum2-12b-a2.5b")
    assert mellum.gguf_repo("Q4_K_M") == "JetBrains/Mellum2-12B-A2.5B-Instruct-GGUF-Q4_K_M"
    assert mellum.gguf_repo("q8_0") == "JetBrains/Mellum2-12B-A2.5B-Instruct-GGUF-Q8_0"
    assert mellum.gguf_repo(None) == mellum.gguf_repo("Q4_K_M")  # llama.cpp's default type
    assert mellum.gguf_repo("IQ2_XS") is None  # no such repo: llama-cpp converts the safetensors instead
    assert models.entry("minicpm5-1b").gguf_repo(None) == "openbmb/MiniCPM5-1B-GGUF"  # one repo, many quants
    assert mellum.mlx_repo("4bit") == "mlx-community/Mellum2-12B-A2.5B-Instruct-4bit"
    assert mellum.mlx_repo("8bit") is None and mellum.mlx_repo(None) is None
    assert models.entry("tiny-aya-global").mlx_repo("8bit") == "mlx-community/tiny-aya-global-8bit-mlx"


def test_unverified_architectures_are_counted_by_their_own_code():
    """Qwen3-30B-A3B's shape (qwen3_moe is not in sizing.VERIFIED): counted on the meta device; 30.5B / 3.3B."""
    require("torch", "transformers")
    cfg = {"model_type": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
           "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
           "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "tie_word_embeddings": False}
    n, how = models.param_count(cfg)
    assert "Transformers" in how and 30.4e9 < n.total < 30.6e9 and 3.3e9 < n.active < 3.4e9
    n_verified, how = models.param_count(models.entry("minicpm5-1b").config)
    assert how.startswith("arithmetic") and n_verified.total == 1_080_632_832


def test_the_memory_suite_counts_an_engines_weight_copies_and_its_processes_runtime():
    """What a backend reports of itself (vLLM's packed embedding copies, its processes' RSS before the model)
    enters the prediction and the baseline; a backend that reports neither is measured as before."""
    from smallbench.backends.base import LoadedModelInfo
    from smallbench.results import LoadRecord
    from smallbench.suites.memory import MemorySettings, measured_footprint, predict

    config = models.entry("minicpm5-1b").config
    plain = LoadedModelInfo(dtype="float32", config=config, kv_cache_tokens=1024)
    engine = plain.model_copy(update={"weight_copies_bytes": 3 * 2**30, "engine_runtime_bytes": 2**30})
    s = MemorySettings()
    assert predict(engine, s)["total"] - predict(plain, s)["total"] == 3 * 2**30
    load = LoadRecord(seconds=1.0, rss_before_bytes=2**30, rss_after_bytes=9 * 2**30, rss_peak_bytes=9 * 2**30)
    trials = {"peak_rss_bytes": [8 * 2**30, 9 * 2**30]}
    assert measured_footprint(trials, load, "cpu")[0] == 8 * 2**30
    assert measured_footprint(trials, load, "cpu", engine.engine_runtime_bytes)[0] == 7 * 2**30
    trials["torch_cuda_peak_allocated_bytes"] = [5 * 2**30]  # on a GPU the device's own figure: no RSS baseline
    assert measured_footprint(trials, load, "cuda", engine.engine_runtime_bytes)[0] == 5 * 2**30
