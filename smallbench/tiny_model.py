"""The built-in default model, ``tiny-llama``: built offline, deterministically, on any machine.

A byte-level BPE tokenizer is trained on docstrings of the Python standard library (present
wherever Python is), then a small Llama-architecture model is trained on the same text for a few
hundred steps so its next-token distributions are peaked. head_dim is 64, which vLLM's CPU
attention accepts. The result is an ordinary Hugging Face model folder (config, safetensors,
tokenizer) cached under the user cache directory; rebuilding it on the same machine gives
byte-identical weights, and ``manifest.json`` carries their sha256.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import sysconfig
import time
from pathlib import Path

from filelock import FileLock

from smallbench.paths import cache_dir, sha256_file

NAME = "tiny-llama"
#: Bump when anything below changes the built weights.
BUILD_VERSION = 1

VOCAB_SIZE = 2048
SEQ_LEN = 128
BATCH = 16
STEPS = 400
LR = 3e-3
SEED = 0
TRAIN_THREADS = 2  # fixed so the floating-point reduction order does not depend on the machine's cores
MAX_CORPUS_CHARS = 3_000_000

MODEL_CONFIG = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=1,
)


def model_dir() -> Path:
    return cache_dir() / "models" / f"{NAME}-v{BUILD_VERSION}"


def corpus() -> list[str]:
    """Docstrings of the standard library's top-level modules, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    texts.append(doc)
                    total += len(doc)
        if total >= MAX_CORPUS_CHARS:
            break
    return texts


def _train_tokenizer(texts: list[str], out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=2048
    )
    fast.save_pretrained(out)
    return fast


def _train_model(texts: list[str], tokenizer, out: Path) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t + "\n")["input_ids"])
    data = torch.tensor(ids, dtype=torch.long)
    n_windows = (data.numel() - 1) // SEQ_LEN

    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    config = LlamaConfig(**MODEL_CONFIG, dtype="float32")
    model = LlamaForCausalLM(config).float()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=STEPS, pct_start=0.1)
    model.train()
    losses = []
    t0 = time.perf_counter()
    try:
        for _ in range(STEPS):
            starts = torch.randint(0, n_windows, (BATCH,), generator=gen) * SEQ_LEN
            batch = torch.stack([data[s : s + SEQ_LEN + 1] for s in starts.tolist()])
            loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
            # labels are shifted inside the model; train on the window's own next tokens
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tail = losses[-20:]
    return {
        "train_tokens": len(ids),
        "steps": STEPS,
        "final_loss": sum(tail) / len(tail),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }


def build(dest: Path) -> dict:
    """Build tokenizer + model into ``dest`` (which must not exist) and return the manifest."""
    texts = corpus()
    dest.mkdir(parents=True)
    tokenizer = _train_tokenizer(texts, dest)
    train = _train_model(texts, tokenizer, dest)
    manifest = {
        "name": NAME,
        "build_version": BUILD_VERSION,
        "weights_sha256": sha256_file(dest / "model.safetensors"),
        "tokenizer_sha256": sha256_file(dest / "tokenizer.json"),
        "corpus_docs": len(texts),
        **train,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def ensure_built(progress=None) -> Path:
    """Return the cached model folder, building it first if it is missing (safe across processes)."""
    final = model_dir()
    if (final / "manifest.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / "manifest.json").exists():
            return final
        tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        if progress:
            progress(f"building the built-in model '{NAME}' (once, about a minute) into {final}")
        try:
            build(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def manifest(path: Path | None = None) -> dict:
    return json.loads(((path or model_dir()) / "manifest.json").read_text())


def builtin_weights_sha256(folder: Path) -> str | None:
    """sha256 of the weights if ``folder`` holds the built-in model (backends that export it to their
    own format key their cached copies by it), else None."""
    if (folder / "manifest.json").is_file():
        data = manifest(folder)
        if data.get("name") == NAME:
            return data["weights_sha256"]
    return None
