"""The built-in model: deterministic, content-hashed, and actually trained."""

import json
import math

import torch

from smallbench import tiny_model
from smallbench.paths import sha256_file


def test_manifest_hash_matches_weights(tiny_path):
    m = json.loads((tiny_path / "manifest.json").read_text())
    assert m["weights_sha256"] == sha256_file(tiny_path / "model.safetensors")
    assert tiny_model.MODEL_CONFIG["head_dim"] >= 32  # vLLM's CPU attention needs it


def test_rebuild_is_byte_identical(tiny_path, tmp_path):
    rebuilt = tiny_model.build(tmp_path / "again")
    assert rebuilt["weights_sha256"] == tiny_model.manifest(tiny_path)["weights_sha256"]
    assert rebuilt["tokenizer_sha256"] == tiny_model.manifest(tiny_path)["tokenizer_sha256"]


def test_next_token_distributions_are_peaked(tf_backend):
    text = "Return a new list containing all items from the iterable in ascending order."
    ids = torch.tensor([tf_backend.tokenize(text)])
    with torch.inference_mode():
        probs = torch.softmax(tf_backend.model(input_ids=ids).logits[0].float(), dim=-1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean().item()
    assert entropy < 0.6 * math.log(tiny_model.VOCAB_SIZE)  # a flat (untrained) model sits at log V
