"""Hugging Face Transformers backend (PyTorch; CPU, CUDA, MPS).

Generation runs through the model's own ``generate()``; a streamer stamps each token the moment
it is on the host (``.tolist()`` forces the device to finish that step), so the adapter adds one
timestamp per step and nothing else to the decode loop.
"""

from __future__ import annotations

import time
from typing import Any

from smallbench.backends.base import (
    Backend,
    BackendInfo,
    Capabilities,
    HFTokenizerMixin,
    LoadedModelInfo,
    LoadSpec,
    config_max_context,
    cut_at_stop,
    own_options,
)
from smallbench.errors import SmallbenchError
from smallbench.metrics import BatchTrace, GenerationTrace

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(requested: str) -> str:
    import torch

    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise SmallbenchError(f"device '{requested}' requested but torch sees no CUDA GPU")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(requested: str, device: str, checkpoint_dtype: Any) -> str:
    """``auto``: float32 on CPU (bf16 is slow without AVX512-BF16); elsewhere the checkpoint's
    16-bit dtype, else bfloat16 where supported, else float16."""
    import torch

    if requested != "auto":
        if requested not in _DTYPES:
            raise SmallbenchError(f"unknown dtype '{requested}'; choose from: auto, float32, float16, bfloat16")
        return _DTYPES[requested]
    if device == "cpu":
        return "float32"
    ck = str(checkpoint_dtype).replace("torch.", "") if checkpoint_dtype else ""
    if ck in ("float16", "bfloat16", "float32"):
        return ck
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float16"


class _TokenClock:
    """A ``generate()`` streamer that records when each step's tokens exist on the host."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[list[int]] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt itself
            self._prompt_seen = True
            return
        ids = value.tolist()  # waits for the device: the token now exists
        self.times.append(time.perf_counter())
        self.tokens.append(ids)

    def end(self) -> None:
        pass


class TransformersBackend(HFTokenizerMixin, Backend):
    name = "transformers"
    requires_module = "transformers"
    install_hint = "pip install 'smallbench[transformers]' (install torch for your platform first)"
    capabilities = Capabilities(
        streaming=True,
        batching=True,
        logprobs=True,
        server_mode=False,
        dummy_weights=True,
        quant_formats=["float32", "float16", "bfloat16"],
        devices=["cpu", "cuda", "mps"],
    )

    def __init__(self) -> None:
        self.model = None
        self.tokenizer = None
        self.device = "cpu"
        self.dtype = "float32"
        self.spec: LoadSpec | None = None
        self.batch_size = 16
        self.share_context = True
        self._max_context = 2048
        self._vocab_size = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def import_library(self) -> None:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM, GenerationConfig  # noqa: F401

    def load(self, spec: LoadSpec) -> LoadedModelInfo:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        if spec.quant:
            raise SmallbenchError(f"transformers takes --dtype, not --quant ('{spec.quant}')")
        opts = own_options(spec.options, {"threads", "batch_size", "share_context"})
        if "threads" in opts:
            torch.set_num_threads(int(opts.pop("threads")))
        self.batch_size = int(opts.pop("batch_size", self.batch_size))
        self.share_context = bool(opts.pop("share_context", self.share_context))
        if opts:
            raise SmallbenchError(f"unknown transformers option(s): {', '.join(opts)}")
        common = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
        config = AutoConfig.from_pretrained(spec.source, **common)
        self.device = resolve_device(spec.device)
        self.dtype = resolve_dtype(spec.dtype, self.device, getattr(config, "dtype", None))
        torch_dtype = getattr(torch, self.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(spec.source, **common)
        kwargs = {"dtype": torch_dtype, **opts}
        if spec.dummy:
            with torch.device(self.device):
                model = AutoModelForCausalLM.from_config(config, trust_remote_code=spec.trust_remote_code, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(spec.source, config=config, **common, **kwargs)
            model.to(self.device)
        self.model = model.eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self._max_context = _max_context(config, self.tokenizer)
        self._vocab_size = min(len(self.tokenizer), model.config.vocab_size)
        total = sum(p.numel() for p in model.parameters())
        return LoadedModelInfo(
            params_total=total,
            params_active=_active_params(config, total),
            dtype=self.dtype,
            max_context=self._max_context,
            vocab_size=getattr(config, "vocab_size", None),
            weights_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
            config=config.to_dict(),
        )

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # -- work --------------------------------------------------------------------------------
    def _generation_config(self, max_new_tokens: int, ignore_eos: bool):
        from transformers import GenerationConfig

        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens if ignore_eos else 0,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    def _generate(self, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool):
        import torch

        ids = torch.tensor(prompts, dtype=torch.long, device=self.device)
        mask = torch.ones_like(ids)
        clock = _TokenClock()
        cfg = self._generation_config(max_new_tokens, ignore_eos)
        with torch.inference_mode():
            t_send = time.perf_counter()
            self.model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, streamer=clock)
        return t_send, clock

    def stream(self, prompt_ids: list[int], max_new_tokens: int, ignore_eos: bool = True) -> GenerationTrace:
        t_send, clock = self._generate([prompt_ids], max_new_tokens, ignore_eos)
        tokens = [step[0] for step in clock.tokens]
        n = _length_until_eos(tokens, None if ignore_eos else self.tokenizer.eos_token_id)
        return GenerationTrace(
            t_send=t_send,
            n_prompt=len(prompt_ids),
            chunks=[(t, 1) for t in clock.times[:n]],
            token_ids=tokens[:n],
        )

    def generate_batch(
        self, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool = True
    ) -> BatchTrace:
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("generate_batch needs equal-length prompts")
        t_send, clock = self._generate(prompts, max_new_tokens, ignore_eos)
        eos = None if ignore_eos else self.tokenizer.eos_token_id
        seqs = [[step[i] for step in clock.tokens] for i in range(len(prompts))]
        n_out = [_length_until_eos(s, eos) for s in seqs]
        return BatchTrace(
            t_send=t_send,
            t_first=clock.times[0],
            t_last=clock.times[max(n_out) - 1],
            batch=len(prompts),
            n_prompt=len(prompts[0]),
            n_out=n_out,
            token_ids=[s[:n] for s, n in zip(seqs, n_out, strict=True)],
        )

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Requests that share a context (a question and its answer choices) run the context once and
        score every continuation from its KV cache; the rest run as length-sorted, right-padded
        batches of ``(context + continuation)[:-1]``, cut from the left to the model's context length
        (lm-eval's HFLM layout)."""
        import torch

        for ctx, cont in requests:
            if not ctx or not cont:
                raise ValueError("loglikelihood needs a non-empty context (prepend BOS) and continuation")
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, cont) in enumerate(requests):
            if len(ctx) > 1 and len(ctx) + len(cont) <= self.max_context:  # a lone BOS is not worth a cache
                groups.setdefault(tuple(ctx), []).append(i)
        shared = [idx for idx in groups.values() if len(idx) > 1] if self.share_context else []
        in_shared = {i for idx in shared for i in idx}
        results: dict[int, tuple[float, bool]] = {}
        with torch.inference_mode():
            self._score_shared(requests, shared, results)
            self._score_plain(requests, [i for i in range(len(requests)) if i not in in_shared], results)
        return [results[i] for i in range(len(requests))]

    def _score_plain(self, requests, indices: list[int], results: dict) -> None:
        prepared = []
        for i in indices:
            ctx, cont = requests[i]
            whole = (ctx + cont)[-(self.max_context + 1) :]
            prepared.append((i, whole[:-1], cont))
        prepared.sort(key=lambda r: -len(r[1]))
        for b in range(0, len(prepared), self.batch_size):
            chunk = prepared[b : b + self.batch_size]
            ids, mask = self._pad([inp for _, inp, _ in chunk], left=False)
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            for row, (idx, inp, cont) in enumerate(chunk):
                results[idx] = _score(logits[row, len(inp) - len(cont) : len(inp)], cont)

    def _score_shared(self, requests, groups: list[list[int]], results: dict) -> None:
        """One forward pass over a batch of distinct contexts (left-padded), then one over all their
        continuations, each row reading its context's KV cache."""
        import torch

        groups = sorted(groups, key=lambda g: -len(requests[g[0]][0]))
        per_batch = max(1, self.batch_size // 2)
        for b in range(0, len(groups), per_batch):
            chunk = groups[b : b + per_batch]
            ctx_ids, ctx_mask = self._pad([requests[g[0]][0] for g in chunk], left=True)
            out = self.model(input_ids=ctx_ids, attention_mask=ctx_mask, position_ids=_positions(ctx_mask),
                             use_cache=True)
            first = out.logits[:, -1]  # predicts each continuation's first token
            rows = [(gi, i) for gi, g in enumerate(chunk) for i in g]
            tails = [requests[i][1][:-1] for _, i in rows]
            width = max(len(t) for t in tails)
            tail_logits = None
            if width:
                cache = out.past_key_values
                row_group = torch.tensor([gi for gi, _ in rows], device=self.device)
                cache.reorder_cache(row_group)
                ids, mask = self._pad([t or [0] for t in tails], left=False, width=width)
                mask[[r for r, t in enumerate(tails) if not t]] = 0  # one-token continuation: a masked dummy
                full_mask = torch.cat([ctx_mask[row_group], mask], dim=1)
                pos = _positions(full_mask)[:, -width:]
                tail_logits = self.model(input_ids=ids, attention_mask=full_mask, position_ids=pos,
                                         past_key_values=cache, use_cache=True).logits
            for r, (gi, i) in enumerate(rows):
                cont = requests[i][1]
                steps = first[gi : gi + 1]
                if len(cont) > 1:
                    steps = torch.cat([steps, tail_logits[r, : len(cont) - 1]], dim=0)
                results[i] = _score(steps, cont)

    def _pad(self, seqs: list[list[int]], left: bool, width: int | None = None):
        import torch

        width = width or max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(seqs):
            span = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[row, span] = torch.tensor(seq)
            mask[row, span] = 1
        return ids.to(self.device), mask.to(self.device)

    def generate_until(self, prompts: list[list[int]], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Batches of left-padded prompts through ``generate()``, stopping on ``stop`` strings or EOS."""
        import torch

        cfg = self._generation_config(max_new_tokens, ignore_eos=False)
        cfg.stop_strings = [s for s in stop if s] or None
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: dict[int, str] = {}
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                chunk = order[b : b + self.batch_size]
                ids, mask = self._pad([prompts[i] for i in chunk], left=True)
                gen = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg,
                                          tokenizer=self.tokenizer)
                for row, i in enumerate(chunk):
                    new = gen[row, ids.shape[1] :].tolist()
                    text = self.tokenizer.decode(new, skip_special_tokens=True)
                    out[i] = cut_at_stop(text, stop)
        return [out[i] for i in range(len(prompts))]

    # -- self-description --------------------------------------------------------------------
    def describe(self) -> BackendInfo:
        import torch
        import transformers

        flags: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        if self.model is not None:
            flags["attn_implementation"] = getattr(self.model.config, "_attn_implementation", None)
        if self.device.startswith("cuda"):
            flags["cuda"] = torch.version.cuda
        return BackendInfo(
            name=self.name, version=transformers.__version__, device=self.device, dtype=self.dtype, flags=flags
        )

    def memory_stats(self) -> dict[str, int]:
        if not self.device.startswith("cuda"):
            return {}
        import torch

        return {
            "torch_cuda_allocated_bytes": torch.cuda.memory_allocated(),
            "torch_cuda_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
            "torch_cuda_peak_reserved_bytes": torch.cuda.max_memory_reserved(),
        }

    def reset_peak_memory(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()


def _score(logits, cont: list[int]) -> tuple[float, bool]:
    """(Σ log p(cont), greedy?) from the logits at the positions that predict ``cont``."""
    import torch

    lp = torch.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(cont, device=lp.device)
    return lp.gather(1, target[:, None]).sum().item(), bool((lp.argmax(dim=-1) == target).all())


def _positions(mask):
    """Position ids for a (left- or right-) padded attention mask: 0.. over the real tokens."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _length_until_eos(tokens: list[int], eos: int | None) -> int:
    """Number of tokens up to and including the first ``eos`` (all of them when ``eos`` is None)."""
    if eos is not None and eos in tokens:
        return tokens.index(eos) + 1
    return len(tokens)


def _active_params(config, total: int) -> int:
    """Parameters used per token: for mixture-of-experts models only the routed top-k of the experts run
    (smallbench.sizing's count of the inactive experts, taken from the loaded total)."""
    from smallbench import sizing

    try:
        n = sizing.count_params(config.to_dict())
    except SmallbenchError:
        return total
    return total - (n.total - n.active)


def _max_context(config, tokenizer, default: int = 2048) -> int:
    """The model's context length as lm-eval's HFLM finds it: the config, else the tokenizer's limit."""
    if n := config_max_context(config):
        return n
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10**9 else default
