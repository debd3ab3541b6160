"""The built-in model: the same shipped bytes on every machine, content-hashed, and actually trained."""

import json
import math

import pytest
import torch
from safetensors import safe_open

from smallbench import models, tiny_model
from smallbench.errors import SmallbenchError
from smallbench.paths import sha256_file

#: tiny-llama's weights, stated here and in the README: a change to the shipped file must be deliberate.
SHIPPED_WEIGHTS_SHA256 = "e910f3d1f31a4d5a4c3f35a4c909200f7d10358365c7a88745cff9b5c5182e48"


def test_shipped_weights_are_the_same_bytes_everywhere(tiny_path):
    assert tiny_model.WEIGHTS_SHA256 == SHIPPED_WEIGHTS_SHA256
    assert sha256_file(tiny_path / "model.safetensors") == SHIPPED_WEIGHTS_SHA256
    m = tiny_model.manifest(tiny_path)
    assert m["weights_sha256"] == SHIPPED_WEIGHTS_SHA256
    assert m["tokenizer_sha256"] == sha256_file(tiny_path / "tokenizer.json")
    assert models.resolve("tiny-llama").weights_sha256 == SHIPPED_WEIGHTS_SHA256
    assert tiny_model.MODEL_CONFIG["head_dim"] >= 32  # vLLM's CPU attention needs it


def test_a_modified_copy_is_refused(monkeypatch):
    monkeypatch.setattr(tiny_model, "WEIGHTS_SHA256", "0" * 64)  # as if the file no longer matched
    with pytest.raises(SmallbenchError, match="the built-in model's weights were modified"):
        models.resolve("tiny-llama")


def _tensors(folder):
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict


def test_the_builder_still_trains_the_shipped_architecture_repeatably(tiny_path, tmp_path):
    """The shipped weights' provenance: the builder still trains this architecture and tokenizer, and a
    rebuild on one machine is byte-identical (a short run: the full one takes ~2 min on 2 cores)."""
    steps = 30
    a = tiny_model.build(tmp_path / "a", steps=steps)
    assert a["final_loss"] < a["first_loss"] - 1.0  # from log(2048) ≈ 7.6 nats: it learns
    # what defines the model and tokenizer (not e.g. the transformers_version that wrote the file)
    keys = {"config.json": [*tiny_model.MODEL_CONFIG, "model_type", "architectures"],
            "tokenizer_config.json": ["tokenizer_class", "bos_token", "eos_token", "unk_token", "model_max_length"]}
    for name, names in keys.items():
        built, ship = (json.loads((d / name).read_text()) for d in (tmp_path / "a", tiny_path))
        assert {k: built.get(k) for k in names} == {k: ship.get(k) for k in names}, name
    shipped, built = _tensors(tiny_path), _tensors(tmp_path / "a")
    assert {k: v.shape for k, v in built.items()} == {k: v.shape for k, v in shipped.items()}
    vocab = json.loads((tiny_path / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(json.loads((tmp_path / "a" / "tokenizer.json").read_text())["model"]["vocab"]) == len(vocab)
    b = tiny_model.build(tmp_path / "b", steps=steps)
    assert b["weights_sha256"] == a["weights_sha256"] and b["tokenizer_sha256"] == a["tokenizer_sha256"]
    assert tiny_model.manifest(tiny_path)["steps"] == tiny_model.STEPS


def test_next_token_distributions_are_peaked(tf_backend):
    text = "Return a new list containing all items from the iterable in ascending order."
    ids = torch.tensor([tf_backend.tokenize(text)])
    with torch.inference_mode():
        probs = torch.softmax(tf_backend.model(input_ids=ids).logits[0].float(), dim=-1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean().item()
    assert entropy < 0.6 * math.log(tiny_model.VOCAB_SIZE)  # a flat (untrained) model sits at log V


def test_greedy_paths_of_the_parity_prompts_have_no_near_ties(tf_backend):
    """The backend parity tests compare 48 greedy tokens across engines whose float32 kernels differ by
    ~1e-5 in a logit (AVX2 vs AVX-512, torch vs ggml vs MLX): a top-2 gap far above that keeps their
    verdicts the same on every machine. A new shipped model must keep it."""
    from tests.parity import PROMPTS

    gaps = []
    for p in PROMPTS:
        ids = tf_backend.tokenize(p)
        with torch.inference_mode():
            for _ in range(48):
                logits = tf_backend.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
                logits[tf_backend.eos_token_id] = -math.inf  # the speed suites' ignore_eos
                top = logits.topk(2)
                gaps.append((top.values[0] - top.values[1]).item())
                ids.append(int(top.indices[0]))
    assert min(gaps) > 1e-3
