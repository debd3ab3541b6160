"""The parity probes and their comparison: every backend and quantization against a reference backend for the
same weights (``smallbench run --suite parity``, then ``smallbench report --parity``).

Per compared record: the largest and the mean |Δ log-likelihood| over the probe requests, the length of the
greedy continuation both produce before they first differ (the shortest over the prompts), whether the
tokenizers agree on every prompt, and the accuracy difference per task where both ran the accuracy suite (with
McNemar's verdict on the items, smallbench.compare).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from smallbench.backends.base import Backend
from smallbench.results import ResultRecord

PROBES: dict[str, Any] = json.loads(files("smallbench").joinpath("probes/parity.json").read_text(encoding="utf-8"))
PROBE_HASH = hashlib.sha256(json.dumps(PROBES, sort_keys=True).encode()).hexdigest()[:16]
PROMPTS: list[str] = PROBES["prompts"]
#: Agreement the backends' tests hold on tiny-llama in float32 (|Δ log-likelihood| per request).
TOLERANCE = 1e-2


@dataclass
class Probe:
    loglikelihoods: list[float]
    is_greedy: list[bool]
    prompt_ids: list[list[int]]
    greedy_ids: list[list[int]]
    greedy_text: list[str]

    def extra(self) -> dict[str, Any]:
        return {"probes": PROBE_HASH, "prompt_ids": self.prompt_ids, "greedy_ids": self.greedy_ids,
                "greedy_text": self.greedy_text}


def requests(backend: Backend) -> list[tuple[list[int], list[int]]]:
    """The scored requests, tokenized by ``backend``: every prompt × every continuation (shared contexts), the
    prompts joined after a lone BOS (a rolling-perplexity request), and the tail of a long context."""
    reqs = []
    conts = [backend.tokenize(c, add_special_tokens=False) for c in PROBES["continuations"]]
    for p in PROMPTS:
        ctx = backend.tokenize(p)
        reqs += [(ctx, c) for c in conts]
    if backend.bos_token_id is not None:
        reqs.append(([backend.bos_token_id], backend.tokenize(" ".join(PROMPTS), add_special_tokens=False)))
    long = backend.tokenize(" ".join(PROMPTS * PROBES["long_context_repeats"]))[: backend.max_context - 1]
    tail = PROBES["long_context_tail"]
    reqs.append((long[:-tail], long[-tail:]))
    return reqs


def run_probes(backend: Backend, gen_tokens: int) -> Probe:
    scored = backend.loglikelihood(requests(backend))
    prompt_ids = [backend.tokenize(p) for p in PROMPTS]
    greedy = [backend.stream(ids, gen_tokens, ignore_eos=True).token_ids for ids in prompt_ids]
    return Probe([float(ll) for ll, _ in scored], [bool(g) for _, g in scored], prompt_ids, greedy,
                 [backend.detokenize(g) for g in greedy])


def _prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _weights(r: ResultRecord) -> tuple:
    """What two parity records must share to be compared: the weights and the greedy length (warm-up, repeats and
    seed change nothing in a deterministic probe run)."""
    return r.model.id, r.model.weights_id, r.settings.get("gen_tokens")


def table(records: list[ResultRecord], reference: str = "transformers"):
    """One row per parity record (model × backend × quant × hardware) against the ``reference`` backend's parity
    record of the same weights and settings (the newest; the same hardware where there is one)."""
    import pandas as pd

    from smallbench import compare
    from smallbench.leaderboard import row_key

    ok = sorted((r for r in records if r.status == "ok"), key=lambda r: r.created_at)
    probes = [r for r in ok if r.suite == "parity" and r.extra.get("parity", {}).get("probes") == PROBE_HASH]
    accuracy = {(r.model.id, r.model.weights_id, r.backend.name, r.model.quant): r for r in ok
                if r.suite == "accuracy"}
    rows = []
    for r in probes:
        # the reference backend itself is compared only off the CPU: its GPU records against its CPU records
        own = r.backend.name == reference
        if own and r.backend.device == "cpu":
            continue
        refs = [x for x in probes if x.backend.name == reference and _weights(x) == _weights(r)
                and (not own or x.backend.device == "cpu")]
        if not refs:
            continue
        same_hw = [x for x in refs if x.hardware and r.hardware and x.hardware.fingerprint == r.hardware.fingerprint]
        ref = (same_hw or refs)[-1]
        a, b = ref.samples["loglikelihood"], r.samples["loglikelihood"]
        pa, pb = ref.extra["parity"], r.extra["parity"]
        diffs = [abs(x - y) for x, y in zip(a, b, strict=True)] if len(a) == len(b) else []
        prefixes = [_prefix(x, y) for x, y in zip(pa["greedy_ids"], pb["greedy_ids"], strict=True)]
        agree = sum(x == y for x, y in zip(pa["prompt_ids"], pb["prompt_ids"], strict=True))
        acc = []
        ra = accuracy.get((r.model.id, r.model.weights_id, reference, ref.model.quant))
        rb = accuracy.get((r.model.id, r.model.weights_id, r.backend.name, r.model.quant))
        if ra is not None and rb is not None:
            for v in compare.compare_records(ra, rb):
                acc.append(f"{v.labels.get('task')} {v.metric} {v.b - v.a:+.4f} ({v.verdict})")
        rows.append({
            "key": row_key(r), "model": r.model.id, "backend": r.backend.name, "device": r.backend.device or "",
            "quant": r.model.quant or r.model.dtype or "",
            "hardware": r.hardware.accelerator if r.hardware else "",
            "reference": " ".join(x for x in (reference, ref.model.quant, "cpu" * own) if x), "requests": len(b),
            "max |Δ loglik|": max(diffs) if diffs else float("nan"),
            "mean |Δ loglik|": sum(diffs) / len(diffs) if diffs else float("nan"),
            "greedy prefix": f"{min(prefixes)} of {len(pb['greedy_ids'][0])}",
            "tokenizer": f"{agree} of {len(pb['prompt_ids'])} prompts",
            "within tolerance": bool(diffs) and max(diffs) < TOLERANCE and agree == len(pb["prompt_ids"]),
            "accuracy Δ": "; ".join(acc),
        })
    return pd.DataFrame(rows)


def max_deltas(records: list[ResultRecord], reference: str = "transformers") -> dict[tuple, float]:
    """The leaderboard's parity column: row key (model, weights, quant, backend, hardware) → max |Δ loglik|."""
    df = table(records, reference)
    return {} if df.empty else dict(zip(df["key"], df["max |Δ loglik|"], strict=True))

