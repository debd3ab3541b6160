"""Hugging Face Transformers backend (PyTorch; CPU, CUDA, MPS).

Generation runs through the model's own ``generate()``; a streamer stamps each token the moment
it is on the host (``.tolist()`` forces the device to finish that step), so the adapter adds one
timestamp per step and nothing else to the decode loop.
"""

from __future__ import annotations

import time
from typing import Any

from smallbench.backends.base import Backend, BackendInfo, Capabilities, LoadedModelInfo, LoadSpec
from smallbench.errors import SmallbenchError
from smallbench.metrics import BatchTrace, GenerationTrace

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip


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


class TransformersBackend(Backend):
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

    # -- lifecycle ---------------------------------------------------------------------------
    def import_library(self) -> None:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM, GenerationConfig  # noqa: F401

    def load(self, spec: LoadSpec) -> LoadedModelInfo:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        opts = dict(spec.options)
        if "threads" in opts:
            torch.set_num_threads(int(opts.pop("threads")))
        self.batch_size = int(opts.pop("batch_size", self.batch_size))
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
        total = sum(p.numel() for p in model.parameters())
        return LoadedModelInfo(
            params_total=total,
            params_active=_active_params(model, config, total),
            dtype=self.dtype,
            max_context=getattr(config, "max_position_embeddings", None),
            vocab_size=getattr(config, "vocab_size", None),
        )

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # -- tokens ------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    @property
    def special_token_ids(self) -> set[int]:
        return set(self.tokenizer.all_special_ids)

    @property
    def vocab_size(self) -> int:
        return min(len(self.tokenizer), self.model.config.vocab_size)

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
        n_out = [_length_until_eos([step[i] for step in clock.tokens], eos) for i in range(len(prompts))]
        return BatchTrace(
            t_send=t_send,
            t_first=clock.times[0],
            t_last=clock.times[max(n_out) - 1],
            batch=len(prompts),
            n_prompt=len(prompts[0]),
            n_out=n_out,
        )

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Score continuations in length-sorted, right-padded batches; the model sees
        ``(context + continuation)[:-1]`` cut from the left to the model's context length."""
        import torch

        max_len = getattr(self.model.config, "max_position_embeddings", None) or 2048
        prepared = []
        for i, (ctx, cont) in enumerate(requests):
            if not ctx:
                raise ValueError("loglikelihood needs a non-empty context (prepend BOS)")
            if not cont:
                raise ValueError("loglikelihood needs a non-empty continuation")
            whole = (ctx + cont)[-(max_len + 1) :]
            prepared.append((i, whole[:-1], cont))
        prepared.sort(key=lambda r: -len(r[1]))
        results: dict[int, tuple[float, bool]] = {}
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for b in range(0, len(prepared), self.batch_size):
                chunk = prepared[b : b + self.batch_size]
                width = len(chunk[0][1])
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, (_, inp, _) in enumerate(chunk):
                    ids[row, : len(inp)] = torch.tensor(inp)
                    mask[row, : len(inp)] = 1
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                for row, (idx, inp, cont) in enumerate(chunk):
                    n = len(cont)
                    lp = torch.log_softmax(logits[row, len(inp) - n : len(inp)].float(), dim=-1)
                    target = torch.tensor(cont, device=lp.device)
                    score = lp.gather(1, target[:, None]).sum().item()
                    greedy = bool((lp.argmax(dim=-1) == target).all())
                    results[idx] = (score, greedy)
        return [results[i] for i in range(len(requests))]

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


def _length_until_eos(tokens: list[int], eos: int | None) -> int:
    """Number of tokens up to and including the first ``eos`` (all of them when ``eos`` is None)."""
    if eos is not None and eos in tokens:
        return tokens.index(eos) + 1
    return len(tokens)


def _active_params(model, config, total: int) -> int:
    """Parameters used per token: for mixture-of-experts models only ``k`` of ``E`` experts run."""
    n_exp = next((getattr(config, a) for a in ("num_local_experts", "num_experts", "n_routed_experts")
                  if getattr(config, a, None)), None)  # fmt: skip
    k = next((getattr(config, a) for a in ("num_experts_per_tok", "moe_top_k") if getattr(config, a, None)), None)
    if not n_exp or not k:
        return total
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    return int(total - expert + expert * k / n_exp)
