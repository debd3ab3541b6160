"""Tiny accuracy tasks in the Hub's layout, built offline for tests (see docs/accuracy.md)."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("return", "the", "value", "of", "a", "list", "string", "file", "object", "function", "name", "if",
         "is", "not", "none", "for", "each", "item", "in", "new", "default", "error", "path", "data", "type",
         "with", "this", "that", "from", "to", "and", "or", "key", "dict", "set", "call", "class")


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def arc_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        texts = [_sentence(rng, rng.randint(1, 4)) for _ in range(4)]
        rows.append({"id": f"q{i}", "question": _sentence(rng, 9) + "?",
                     "choices": {"text": texts, "label": list("ABCD")}, "answerKey": rng.choice("ABCD")})
    return rows


def wikitext_raw(rng: random.Random, pages: int) -> str:
    lines = [" "]
    for p in range(pages):
        lines += [f" = {_sentence(rng, 2).title()} {p} = ", " "]
        for s in range(3):
            if s:
                lines += [f" = = {_sentence(rng, 2)} = = ", " "]
            body = " . ".join(_sentence(rng, rng.randint(5, 12)) for _ in range(rng.randint(2, 5)))
            lines += [f" {body} @-@ {rng.choice(WORDS)} , {_sentence(rng, 3)} . ", " "]
    return "\n".join(lines) + "\n"


def gsm8k_rows(rng: random.Random, n: int) -> list[dict]:
    return [{"question": _sentence(rng, 12) + "?", "answer": f"{_sentence(rng, 6)}\n#### {rng.randint(1, 99)}"}
            for _ in range(n)]


def build(root: Path, seed: int = 0) -> Path:
    """arc_easy (test + train), wikitext (release-style raw file) and gsm8k (test) under ``root``."""
    rng = random.Random(seed)
    _jsonl(root / "ai2_arc" / "ARC-Easy" / "test.jsonl", arc_rows(rng, 40))
    _jsonl(root / "ai2_arc" / "ARC-Easy" / "train.jsonl", arc_rows(rng, 10))
    (root / "wikitext-2-raw").mkdir(parents=True, exist_ok=True)
    (root / "wikitext-2-raw" / "wiki.test.raw").write_text(wikitext_raw(rng, 6), encoding="utf-8")
    _jsonl(root / "gsm8k" / "test.jsonl", gsm8k_rows(rng, 6))
    return root
