"""The Transformers backend on the built-in model, checked against the model's own forward/generate."""

import pytest
import torch

from smallbench.backends import LoadSpec, get_backend_class
from smallbench.suites.base import synthetic_prompt
from tests.conftest import config_of


def test_stream_matches_plain_generate_and_stamps_every_token(tf_backend):
    prompt = synthetic_prompt(tf_backend, 20, seed=1)
    trace = tf_backend.stream(prompt, 32)
    assert trace.n_out == 32 and trace.n_prompt == 20
    times = [t for t, _ in trace.chunks]
    assert trace.t_send < times[0] and times == sorted(times)
    with torch.inference_mode():
        ref = tf_backend.model.generate(
            torch.tensor([prompt]), max_new_tokens=32, min_new_tokens=32, do_sample=False
        )[0, 20:].tolist()
    assert trace.token_ids == ref


def test_generate_batch(tf_backend):
    prompts = [synthetic_prompt(tf_backend, 16, seed=s) for s in range(3)]
    bt = tf_backend.generate_batch(prompts, 8)
    assert bt.batch == 3 and bt.n_prompt == 16 and bt.n_out == [8, 8, 8]
    assert bt.t_send < bt.t_first < bt.t_last
    with pytest.raises(ValueError):
        tf_backend.generate_batch([prompts[0], prompts[1][:5]], 4)


def test_loglikelihood_equals_direct_computation(tf_backend):
    ctx = tf_backend.tokenize("The function returns")
    cont = tf_backend.tokenize(" the number of items", add_special_tokens=False)
    with torch.inference_mode():
        logits = tf_backend.model(input_ids=torch.tensor([ctx + cont])).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    expected = sum(lp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))
    (score, _), = tf_backend.loglikelihood([(ctx, cont)])
    assert score == pytest.approx(expected, abs=1e-4)


def test_loglikelihood_greedy_flag_and_batch_invariance(tf_backend):
    ctx = tf_backend.tokenize("Return the")
    greedy = tf_backend.stream(ctx, 5).token_ids
    reqs = [(ctx, greedy), (ctx, [greedy[0] + 1] + greedy[1:])] + [
        (synthetic_prompt(tf_backend, n, seed=n), synthetic_prompt(tf_backend, 3, seed=100 + n)) for n in (4, 9, 30)
    ]
    batched = tf_backend.loglikelihood(reqs)
    assert batched[0][1] is True and batched[1][1] is False
    one_by_one = [tf_backend.loglikelihood([r])[0] for r in reqs]
    for (a, ga), (b, gb) in zip(batched, one_by_one, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb


def test_dummy_weights_same_shapes_other_values(tiny_path, tf_backend):
    b = get_backend_class("transformers")()
    info = b.load(LoadSpec(model_id="tiny-llama", source=str(tiny_path), device="cpu", dummy=True))
    assert info.params_total == sum(p.numel() for p in tf_backend.model.parameters())
    real = tf_backend.model.model.embed_tokens.weight
    assert not torch.equal(b.model.model.embed_tokens.weight, real)


def test_describe(tf_backend):
    d = tf_backend.describe()
    assert d.name == "transformers" and d.device == "cpu" and d.dtype == "float32" and d.version
    assert config_of(tf_backend) == ""  # torch's own thread count: the machine's physical cores


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_cuda_stream_and_memory_stats(tiny_path):
    b = get_backend_class("transformers")()
    b.load(LoadSpec(model_id="tiny-llama", source=str(tiny_path), device="cuda"))
    b.reset_peak_memory()
    trace = b.stream(synthetic_prompt(b, 32, seed=0), 16)
    assert trace.n_out == 16
    stats = b.memory_stats()
    assert stats["torch_cuda_peak_allocated_bytes"] >= stats["torch_cuda_allocated_bytes"] > 0


def test_shared_context_scores_equal_plain_scores(tf_backend):
    """Multiple-choice requests reuse one context pass; the scores must not change."""
    import random

    rng = random.Random(0)
    requests = []
    for _ in range(12):
        ctx = [tf_backend.bos_token_id] + [rng.randrange(3, 2000) for _ in range(rng.randrange(2, 40))]
        requests += [(ctx, [rng.randrange(3, 2000) for _ in range(rng.randrange(1, 9))]) for _ in range(4)]
    requests.append(([tf_backend.bos_token_id], [7, 8, 9]))  # a lone-BOS context takes the plain path
    shared = tf_backend.loglikelihood(requests)
    tf_backend.share_context = False
    try:
        plain = tf_backend.loglikelihood(requests)
    finally:
        tf_backend.share_context = True
    for (a, ga), (b, gb) in zip(shared, plain, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
