"""Every catalogued architecture (the sponsors' and the references'; not MiniCPM4.1's, which is the repo's own
code), scaled down, through every backend (the README's support matrix).

Each architecture is the catalogue entry's embedded config with small dimensions (``dummy.scale_down``: same
model type, same kinds of layers, a few of each), written once as a random float32 checkpoint. Every backend
loads that same checkpoint the way it loads a real one (llama.cpp through llama.cpp's own converter, MLX
directly), scores log-likelihoods (one context longer than the sliding windows) and streams tokens; the
log-likelihoods must agree with Transformers'. ``smallbench.support.MATRIX`` states the outcome of each cell and
this test holds it to that: a cell that starts or stops working, or a known difference that goes away, fails
here until the table (and so the README) says so.
"""

from __future__ import annotations

import os

import pytest

from smallbench import dummy, models, support
from smallbench.backends import LoadedModelInfo, LoadSpec, get_backend_class
from tests.conftest import require

LIBRARY = {"transformers": ("transformers", "transformers"), "vllm": ("vllm", "vllm"),
           "llama-cpp": ("llama_cpp", "llama-cpp"), "mlx": ("mlx.core", "mlx")}
TOLERANCE = 1e-2  # per summed log-likelihood, float32 everywhere (observed ≤ 2e-4 where the cell is "ok")
DIFFERS = 1e-3  # an "ok*" cell's known difference is still there: some score is off by more than this
TEXT = "def load(path): return open(path).read() if the file exists else None  # small models, big plans"


def scaled_checkpoint(arch: str):
    cfg = dummy.scale_down(models.entry(support.TESTED_WITH[arch]).config)
    cfg["torch_dtype"] = "float32"
    return dummy.checkpoint(dummy.model_folder(f"{support.TESTED_WITH[arch]}-scaled", cfg), "float32")


@pytest.fixture(scope="module")
def checkpoints():
    require("transformers", "transformers")
    return {arch: scaled_checkpoint(arch) for arch in support.MATRIX}


def _requests(b) -> list[tuple[list[int], list[int]]]:
    ids = b.tokenize(TEXT * 6)  # ~300 tokens: past the scaled sliding window (64)
    assert len(ids) > 128
    return [(ids[:5], ids[5:9]), (ids[:3], ids[3:12]), (ids[:-6], ids[-6:])]


_RUNS: dict[tuple[str, str], tuple[list[float], int, LoadedModelInfo]] = {}  # a cell's outcome, for a second look


def _run(backend: str, path) -> tuple[list[float], int, LoadedModelInfo]:
    if (backend, str(path)) not in _RUNS:
        _RUNS[backend, str(path)] = _load_and_score(backend, path)
    return _RUNS[backend, str(path)]


def _load_and_score(backend: str, path) -> tuple[list[float], int, LoadedModelInfo]:
    b = get_backend_class(backend)()
    try:
        # enforce_eager: vLLM skips torch.compile (about 25 s per architecture on 2 cores); same model code
        opts = {"enforce_eager": True} if backend == "vllm" else {}
        info = b.load(LoadSpec(model_id="scaled", source=str(path), dtype="float32", device="cpu", options=opts))
        lls = [ll for ll, _ in b.loglikelihood(_requests(b))]
        n = len(b.stream(b.tokenize(TEXT), 6).token_ids)
        return lls, n, info
    finally:
        b.close()


@pytest.fixture(scope="module")
def reference(checkpoints):
    return {arch: _run("transformers", path)[0] for arch, path in checkpoints.items()}


@pytest.mark.parametrize("backend", support.BACKENDS)
@pytest.mark.parametrize("arch", list(support.MATRIX))
def test_architecture_on_backend(arch, backend, checkpoints, reference):
    require(*LIBRARY[backend])
    expected = support.MATRIX[arch][backend]
    try:
        lls, n, info = _run(backend, checkpoints[arch])
    except Exception as exc:  # noqa: BLE001 - the outcome is compared with the table
        assert expected.startswith("no:"), f"{arch} on {backend} fails: {exc}; the support matrix says {expected!r}"
        assert expected.removeprefix("no:").strip() in str(exc)
        return
    assert not expected.startswith("no:"), f"{arch} runs on {backend} now; the support matrix says {expected!r}"
    assert n == 6
    if backend == "vllm":  # the KV cache it reports is the space it was given (hybrids: blocks hold layer groups)
        space = float(os.environ["VLLM_CPU_KVCACHE_SPACE"]) * 2**30
        assert 0.95 * space < info.kv_cache_bytes <= space, (arch, info.kv_cache_bytes / 2**30)
        # the embedding copies it measured are what `smallbench fit --backend vllm` adds by rule
        rule = get_backend_class("vllm").memory_allowances(info.config, "float32", "cpu", 0)
        assert info.weight_copies_bytes == sum(rule.values()), (arch, info.weight_copies_bytes, rule)
    gaps = [abs(a - b) for a, b in zip(lls, reference[arch], strict=True)]
    if expected == "ok":
        assert max(gaps) <= TOLERANCE, f"{arch} on {backend}: {lls} vs Transformers {reference[arch]}"
    else:  # "ok*: a known difference": it is still there (when it goes away, the table should say "ok")
        assert max(gaps) > DIFFERS, f"{arch} on {backend} now agrees with Transformers; the matrix says {expected!r}"


def test_cohere2_on_vllm_is_transformers_with_a_window_one_wider(checkpoints, tmp_path):
    """The matrix's note on Cohere2 × vLLM, proven: vLLM's Cohere2 gives its attention ``sliding_window + 1``
    (its comment: Cohere trained with a query seeing [pos - window, pos]); Transformers, llama.cpp and MLX let a
    query see ``sliding_window`` tokens, itself included. With that window one wider, Transformers scores as
    vLLM does."""
    require("vllm", "vllm")
    import json

    path = checkpoints["cohere2"]
    for f in path.iterdir():  # the same weights beside a config whose window is one wider
        (tmp_path / f.name).symlink_to(f.resolve())
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps({**config, "sliding_window": config["sliding_window"] + 1}))
    gaps = [abs(a - b) for a, b in zip(_run("vllm", path)[0], _run("transformers", tmp_path)[0], strict=True)]
    assert max(gaps) < DIFFERS / 10, gaps


@pytest.mark.parametrize("arch", list(support.MATRIX))
def test_layer_sizes_are_what_llama_cpp_stores(arch, checkpoints):
    """``smallbench fit --backend llama-cpp`` places layers on a GPU by their size: each layer's parameters
    (``sizing.layer_params``) are the elements of its ``blk.N`` tensors in llama.cpp's GGUF of the same checkpoint
    (a MoE router's score-correction bias, a buffer in Transformers, is a tensor there: one per expert)."""
    require("llama_cpp", "llama-cpp")
    import json
    import re
    from collections import Counter

    import gguf

    from smallbench import sizing
    from smallbench.backends.llama_cpp import resolve_gguf

    path = checkpoints[arch]
    config = json.loads((path / "config.json").read_text())
    spec = LoadSpec(model_id="scaled", source=str(path), dtype="float32", device="cpu")
    stored: Counter[int] = Counter()
    for t in gguf.GGUFReader(str(resolve_gguf(spec, "F32"))).tensors:
        if m := re.match(r"blk\.(\d+)\.", t.name):
            stored[int(m[1])] += int(t.n_elements)
    a, counted = sizing.arch(config), sizing.layer_params(config)
    assert len(stored) == len(counted) == len(a.layers)
    for i, n in enumerate(counted):
        assert 0 <= stored[i] - n <= (a.experts if a.layers[i].ffn == "moe" else 0), (arch, i, stored[i], n)


def test_readme_has_the_support_matrix():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert support.markdown() in readme, "README's support matrix differs from smallbench/support.py"


def test_converter_runs_no_repo_code_without_the_flag(tmp_path):
    """llama.cpp's converter loads Nemotron-H's tokenizer with trust_remote_code=True; smallbench holds it to the
    user's flag: a tokenizer whose auto_map points at repo code is loaded with the library's own class instead."""
    require("llama_cpp", "llama-cpp")
    import json
    import shutil

    from smallbench import llama_convert

    src = scaled_checkpoint("nemotron_h")
    repo = tmp_path / "repo"
    shutil.copytree(src, repo)
    marker = tmp_path / "repo-code-ran"
    (repo / "tokenization_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                               "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n")
    cfg = json.loads((repo / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    (repo / "tokenizer_config.json").write_text(json.dumps(cfg))
    llama_convert.convert(repo, tmp_path / "out.gguf", "F32")
    assert (tmp_path / "out.gguf").stat().st_size > 0
    assert not marker.exists()


def test_nemotron_h_as_transformers_5_writes_its_config(tmp_path):
    """A Nemotron-H checkpoint saved by transformers 5 (a fine-tune, or the Hub's newer files) names its blocks in
    ``layers_block_type`` and has no ``hybrid_override_pattern``: llama.cpp's converter takes such a list's MLP
    entries for nothing, so without the shim's spelling-back the dense model converts to a file llama.cpp cannot
    load. Converted, it loads and agrees with Transformers."""
    require("transformers", "transformers")
    require("llama_cpp", "llama-cpp")
    import json
    import shutil

    src = scaled_checkpoint("nemotron_h")
    path = tmp_path / "saved-by-transformers-5"
    shutil.copytree(src, path)
    config = json.loads((path / "config.json").read_text())
    names = {"M": "mamba", "*": "attention", "-": "mlp"}
    config["layers_block_type"] = [names[b] for b in config.pop("hybrid_override_pattern")]
    (path / "config.json").write_text(json.dumps(config))
    expected, _, _ = _run("transformers", path)
    lls, n, _ = _run("llama-cpp", path)
    assert n == 6
    assert all(abs(a - b) <= TOLERANCE for a, b in zip(lls, expected, strict=True)), (lls, expected)


def test_the_same_weights_beside_another_config_convert_anew(tmp_path):
    """A GGUF carries the config's settings: seeded dummies of one shape have the same weights, and a local
    checkpoint's config.json can be edited, so the converted file is cached by weights and config together."""
    require("llama_cpp", "llama-cpp")
    import json
    import shutil

    import gguf

    from smallbench.backends.llama_cpp import resolve_gguf

    src = scaled_checkpoint("llama")
    edited = tmp_path / "edited"
    shutil.copytree(src, edited)
    config = json.loads((edited / "config.json").read_text())
    config["rope_parameters"]["rope_theta"] *= 2
    (edited / "config.json").write_text(json.dumps(config))
    bases = []
    for path in (src, edited):
        spec = LoadSpec(model_id="scaled", source=str(path), dtype="float32", device="cpu")
        field = gguf.GGUFReader(str(resolve_gguf(spec, "F32"))).fields["llama.rope.freq_base"]
        bases.append(float(field.parts[field.data[0]][0]))
    assert bases[1] == 2 * bases[0], bases
