"""Any smallbench backend as an lm-eval ``LM``, so lm-eval's tasks run on every backend.

Tokenization follows lm-eval's ``TemplateLM`` (the same context/continuation split as its ``hf``
model); the token work goes to the backend's ``loglikelihood`` (which batches and shares contexts
its own way) and ``generate_until``. One deliberate difference from ``hf``: rolling
log-likelihood (perplexity tasks) encodes the text *without* the tokenizer's BOS, because the
window prefix already is BOS; ``hf`` with a BOS-adding tokenizer scores a duplicated BOS
(``lm_eval --model hf --model_args add_bos_token=False`` matches smallbench).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

import lm_eval.utils
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from smallbench.backends.base import Backend
from smallbench.errors import SmallbenchError

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default when a task does not set max_gen_toks


@functools.lru_cache(maxsize=4096)
def _compiled(template: str):
    return lm_eval.utils.env.from_string(template)


def _apply_template(template: str, doc: dict) -> str:
    return _compiled(template).render(**doc)


def cache_prompt_templates() -> None:
    """lm-eval compiles a task's Jinja prompt template anew for every document (about half of a BLiMP
    run's wall time on a small model); compile each template once instead. Same environment, same
    templates, same rendered text: only the repeated compilation goes."""
    lm_eval.utils.apply_template = _apply_template


class BackendLM(TemplateLM):
    def __init__(self, backend: Backend) -> None:
        super().__init__()  # TemplateLM's own ``backend`` attribute stays "causal"
        self.engine = backend
        self._bos_text = backend.detokenize([backend.bos_token_id]) if backend.bos_token_id is not None else None

    # -- tokens ------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.engine.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        b = self.engine
        return b.bos_token_id if b.bos_token_id is not None else b.eos_token_id

    @property
    def max_length(self) -> int:
        return self.engine.max_context

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        if add_special_tokens is None:  # the tokenizer's own default, unless the text already starts with BOS
            add_special_tokens = not (self._bos_text and string.startswith(self._bos_text))
        return self.engine.tokenize(string, add_special_tokens=add_special_tokens)

    # -- requests ----------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        return self.engine.loglikelihood([(ctx, cont) for _, ctx, cont in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        pairs: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []
        for i, (text,) in enumerate(r.args for r in requests):
            windows = get_rolling_token_windows(
                token_list=self.tok_encode(text, add_special_tokens=False),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for ctx, cont in map(make_disjoint_window, windows):
                pairs.append((ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logp, _) in zip(owner, self.engine.loglikelihood(pairs), strict=True):
            totals[i] += logp
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy only, like lm-eval's tasks for accuracy; requests with the same settings go together."""
        by_kwargs: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            by_kwargs[repr(sorted(r.args[1].items()))].append(i)
        out: list[str] = [""] * len(requests)
        eot = self.engine.detokenize([self.eot_token_id]) if self.eot_token_id is not None else None
        for idx in by_kwargs.values():
            kwargs = dict(requests[idx[0]].args[1])
            if kwargs.get("do_sample") or kwargs.get("temperature", 0) > 0:
                raise SmallbenchError("this task asks for sampled generation; the accuracy suite generates greedily")
            until = kwargs.get("until") or []
            stop = [until] if isinstance(until, str) else list(until)
            if eot and eot not in stop:
                stop.append(eot)
            max_new = int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
            keep = max(1, self.max_length - max_new)  # lm-eval's room for the answer
            prompts = [self.tok_encode(requests[i].args[0])[-keep:] for i in idx]
            for i, text in zip(idx, self.engine.generate_until(prompts, max_new, stop), strict=True):
                out[i] = text
        return out
