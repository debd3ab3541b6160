"""The built-in default model, ``tiny-llama``: shipped with the package, the same bytes on every machine.

A byte-level BPE tokenizer trained on docstrings of the Python standard library, and a small
Llama-architecture model trained on the same text for a few hundred steps so that its next-token
distributions are peaked. head_dim is 64, which vLLM's CPU attention accepts. It is an ordinary
Hugging Face model folder (config, safetensors, tokenizer, ``manifest.json``) under
``smallbench/builtin-models/tiny-llama``, so every backend loads it the way it loads a Hub model.

Why shipped rather than trained on first use: training on different CPU kernels (AVX2 vs AVX-512 vs
AMX) gives different floats, so a model built on each machine would be a different model on each,
and records from two machines could not be compared. :func:`build` is kept as the weights'
provenance (``python -m smallbench.tiny_model DEST`` retrains them; ``manifest.json`` says where the
shipped ones were trained) and a test checks that it still trains.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import sysconfig
import time
from pathlib import Path

from smallbench.errors import SmallbenchError
from smallbench.paths import sha256_file

NAME = "tiny-llama"
#: sha256 of the shipped ``model.safetensors``: the built-in model's identity on every machine.
WEIGHTS_SHA256 = "e910f3d1f31a4d5a4c3f35a4c909200f7d10358365c7a88745cff9b5c5182e48"

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
    """The shipped model folder, checked to hold the weights whose hash is :data:`WEIGHTS_SHA256`."""
    folder = Path(__file__).parent / "builtin-models" / NAME
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise SmallbenchError(f"the built-in model is missing from this installation ({weights}); reinstall smallbench")
    if sha256_file(weights) != WEIGHTS_SHA256:
        raise SmallbenchError(f"the built-in model's weights were modified ({weights}); reinstall smallbench")
    return folder


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


def _train_model(texts: list[str], tokenizer, out: Path, steps: int) -> dict:
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
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    model.train()
    losses = []
    t0 = time.perf_counter()
    try:
        for _ in range(steps):
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
        "steps": steps,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }


def _readable_by_older_transformers(folder: Path) -> None:
    """Transformers 5 writes names that 4.x cannot read (vLLM on CUDA may pin 4.x): name the tokenizer
    class by its 4.x name, which 5.x still accepts, and state the RoPE base the 4.x way too."""
    for name, update in (("tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast"}),
                         ("config.json", {"rope_theta": MODEL_CONFIG["rope_theta"]})):
        path = folder / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **update}, indent=2, sort_keys=True) + "\n")


def build(dest: Path, steps: int = STEPS) -> dict:
    """Train tokenizer + model into ``dest`` (which must not exist) and return the manifest. Bit-for-bit
    repeatable on one machine; another CPU's float kernels give other weights (see the module doc)."""
    import tokenizers
    import torch
    import transformers

    from smallbench.hardware import hardware_info

    texts = corpus()
    dest.mkdir(parents=True)
    tokenizer = _train_tokenizer(texts, dest)
    train = _train_model(texts, tokenizer, dest, steps)
    _readable_by_older_transformers(dest)
    hw = hardware_info()
    manifest = {
        "name": NAME,
        "weights_sha256": sha256_file(dest / "model.safetensors"),
        "tokenizer_sha256": sha256_file(dest / "tokenizer.json"),
        "corpus_docs": len(texts),
        **train,
        "trained_on": {"cpu": hw.cpu_model, "cpu_flags": hw.cpu_flags, "python": platform.python_version(),
                       "torch": torch.__version__, "transformers": transformers.__version__,
                       "tokenizers": tokenizers.__version__},
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m smallbench.tiny_model",
                                     description=f"Retrain {NAME} (its provenance) into a new folder.")
    parser.add_argument("dest", type=Path, help="folder to create")
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    if args.dest.exists():
        parser.error(f"{args.dest} already exists")
    print(json.dumps(build(args.dest, args.steps), indent=2))


if __name__ == "__main__":
    main()
