"""Metric math against values computed by hand from given timestamps."""

import pytest

from smallbench import metrics as M

# sent at t=10.0; tokens at 10.5, 10.6, 10.8, 11.1 (one token each)
ONE = M.GenerationTrace(t_send=10.0, n_prompt=100, chunks=[(10.5, 1), (10.6, 1), (10.8, 1), (11.1, 1)])


def test_ttft_e2e_tpot():
    assert M.ttft(ONE) == pytest.approx(0.5)
    assert M.e2e_latency(ONE) == pytest.approx(1.1)
    assert M.tpot(ONE) == pytest.approx((1.1 - 0.5) / 3)  # 0.2


def test_itl_one_token_chunks():
    assert M.itl(ONE) == pytest.approx([0.1, 0.2, 0.3])
    assert sum(M.itl(ONE)) == pytest.approx(M.e2e_latency(ONE) - M.ttft(ONE))


def test_itl_multi_token_chunk_split_evenly():
    t = M.GenerationTrace(t_send=0.0, n_prompt=5, chunks=[(1.0, 1), (1.4, 4), (1.5, 1)])
    assert M.itl(t) == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.1])
    assert t.n_out == 6
    assert M.tpot(t) == pytest.approx(0.5 / 5)


def test_first_chunk_extra_tokens_have_no_gap():
    t = M.GenerationTrace(t_send=0.0, n_prompt=5, chunks=[(1.0, 3), (1.3, 1)])
    assert M.itl(t) == pytest.approx([0.3])
    assert M.tpot(t) == pytest.approx(0.3 / 3)


def test_prefill_and_decode_rates():
    assert M.prefill_tps(ONE) == pytest.approx(100 / 0.5)
    assert M.decode_tps(ONE) == pytest.approx(3 / 0.6)


def test_tpot_needs_two_tokens():
    with pytest.raises(M.MetricError):
        M.tpot(M.GenerationTrace(t_send=0, n_prompt=1, chunks=[(1.0, 1)]))
    with pytest.raises(M.MetricError):
        M.ttft(M.GenerationTrace(t_send=0, n_prompt=1))


def test_batch_rates():
    b = M.BatchTrace(t_send=0.0, t_first=2.0, t_last=6.0, batch=4, n_prompt=512, n_out=[9, 9, 9, 9])
    assert M.batch_prefill_tps(b) == pytest.approx(4 * 512 / 2.0)
    assert M.batch_decode_tps(b) == pytest.approx(4 * 8 / 4.0)


def test_output_throughput_and_goodput():
    a = M.GenerationTrace(t_send=0.0, n_prompt=1, chunks=[(0.1, 1), (0.3, 1)])  # ttft .1, tpot .2
    b = M.GenerationTrace(t_send=0.5, n_prompt=1, chunks=[(1.0, 1), (1.1, 1), (2.0, 1)])  # ttft .5, tpot .5
    assert M.output_throughput([a, b]) == pytest.approx(5 / 2.0)
    assert M.goodput([a, b], ttft_slo=0.2, tpot_slo=None) == pytest.approx(1 / 2.0)
    assert M.goodput([a, b], ttft_slo=None, tpot_slo=0.6) == pytest.approx(2 / 2.0)
    assert M.goodput([a, b], ttft_slo=1.0, tpot_slo=0.3) == pytest.approx(1 / 2.0)


def test_roofline():
    assert M.roofline_fraction(100.0, 2e9, 4e11) == pytest.approx(0.5)


def test_batch_trace_of_sequence_traces():
    other = M.GenerationTrace(t_send=10.2, n_prompt=100, chunks=[(10.7, 1), (10.9, 2)], token_ids=[5, 6, 7])
    b = M.BatchTrace.of([ONE, other])
    assert (b.t_send, b.t_first, b.t_last, b.batch, b.n_out) == (10.0, 10.7, 11.1, 2, [4, 3])
    assert b.token_ids == [[], [5, 6, 7]] and M.BatchTrace.of([other], t_send=9.0).t_send == 9.0
    assert M.batch_decode_tps(b) == pytest.approx((3 + 2) / (11.1 - 10.7))
    with pytest.raises(M.MetricError):
        M.BatchTrace.of([ONE, M.GenerationTrace(t_send=10.0, n_prompt=100)])
