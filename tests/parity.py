"""Inputs shared by the backend parity tests (every backend against Transformers, same tiny model)."""

from __future__ import annotations

PROMPTS = [
    "Return a new list containing the",
    "The default value of the key is",
    "Raise ValueError if the path",
    "Open the file and",
]


def loglikelihood_requests(tf) -> list[tuple[list[int], list[int]]]:
    """Multiple-choice style (shared contexts, one of them the greedy answer), rolling style (lone
    BOS) and a long context, tokenized by the Transformers backend ``tf``."""
    reqs = []
    for p in PROMPTS:
        ctx = tf.tokenize(p)
        for answer in (" list", " the file", " not None", " a new default value"):
            reqs.append((ctx, tf.tokenize(answer, add_special_tokens=False)))
        reqs.append((ctx, tf.stream(ctx, 5, ignore_eos=False).token_ids))  # the model's own greedy answer
    reqs.append(([tf.bos_token_id], tf.tokenize(" ".join(PROMPTS), add_special_tokens=False)))
    long = tf.tokenize(" ".join(PROMPTS * 12))
    reqs.append((long[:-5], long[-5:]))
    return reqs
