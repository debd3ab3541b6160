"""smallbench compare: ratios with bootstrap intervals and verdicts, McNemar on paired items, pairing of records."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from smallbench import compare as C
from smallbench.results import Metric, write_record
from tests.conftest import run_cli
from tests.records import hardware, record


def _noisy(center: float, n: int, seed: int, spread: float = 0.03) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(center * rng.lognormal(0.0, spread, n))


@pytest.mark.parametrize("seed", range(5))
def test_two_samples_of_one_distribution_are_no_significant_difference(seed):
    a, b = _noisy(0.010, 10, seed), _noisy(0.010, 10, seed + 100)
    ratio, low, high = C.ratio_ci(a, b)
    assert low <= ratio <= high
    assert C.speed_verdict(ratio, low, high, False, "s") == C.SAME


@pytest.mark.parametrize("seed", range(5))
def test_a_20_percent_slowdown_is_significant_in_either_direction_of_better(seed):
    a = _noisy(0.010, 10, seed)
    ratio, low, high = C.ratio_ci(a, _noisy(0.012, 10, seed + 100))  # a time: 20 % more is slower
    assert low > 1.1 and C.speed_verdict(ratio, low, high, False, "s") == "slower"
    ratio, low, high = C.ratio_ci(a, _noisy(0.008, 10, seed + 100))  # 20 % less time is faster
    assert C.speed_verdict(ratio, low, high, False, "s") == "faster"
    ratio, low, high = C.ratio_ci(_noisy(100.0, 10, seed), _noisy(80.0, 10, seed + 100))  # a rate: 20 % less
    assert C.speed_verdict(ratio, low, high, True, "tok/s") == "slower"
    ratio, low, high = C.ratio_ci(_noisy(2.0**30, 5, seed), _noisy(1.2 * 2**30, 5, seed + 100))
    assert C.speed_verdict(ratio, low, high, False, "bytes") == "larger"


def test_a_real_but_tiny_difference_stays_below_the_threshold():
    a, b = _noisy(0.010, 200, 0, spread=0.002), _noisy(0.0102, 200, 1, spread=0.002)  # 2 %, clearly real
    ratio, low, high = C.ratio_ci(a, b)
    assert low > 1.0  # outside the noise...
    assert C.speed_verdict(ratio, low, high, False, "s") == C.SAME  # ...but under the 5 % threshold
    assert C.speed_verdict(ratio, low, high, False, "s", threshold=0.01) == "slower"


def test_mcnemar_exact_p_values():
    right = {i: 1.0 for i in range(100)}
    assert C.mcnemar(right, dict(right)) == (100, 0, 0, 1.0)
    ten_wrong = {**right, **{i: 0.0 for i in range(10)}}
    both, only_b, only_a, p = C.mcnemar(right, ten_wrong)
    assert (both, only_b, only_a) == (100, 0, 10) and p == pytest.approx(2 * 0.5**10)
    mixed = {**ten_wrong, **{i: 1.0 for i in range(3)}}  # ...and B right where A was wrong, 3 times
    a = {**right, **{i: 0.0 for i in range(50, 53)}}
    both, only_b, only_a, p = C.mcnemar(a, mixed)
    assert (only_b, only_a) == (3, 7) and p == pytest.approx(2 * sum(__import__("math").comb(10, k) for k in range(4))
                                                              / 2**10)


def _accuracy(values: list[float], ids: list[int]):
    rec = record("accuracy", "m", "transformers", "F32", hardware(0), random.Random(0))
    key = "acc[task=arc_easy,filter=none]"
    rec.metrics = [Metric(name="acc", unit="fraction", value=float(np.mean(values)), higher_is_better=True,
                          samples_key=key, labels={"task": "arc_easy", "filter": "none"})]
    rec.samples, rec.extra = {key: values}, {"items": {key: ids}}
    return rec


def test_accuracy_is_compared_item_by_item_whatever_the_order():
    values = [float(i % 3 != 0) for i in range(60)]
    a = _accuracy(values, list(range(60)))
    b = _accuracy(values[::-1], list(range(60))[::-1])  # the same answers listed in another order
    (v,) = C.compare_records(a, b)
    assert (v.test, v.verdict, v.p_value) == ("mcnemar", C.SAME, 1.0)
    worse = _accuracy([0.0] * 12 + values[12:], list(range(60)))  # 8 of the right answers now wrong
    (v,) = C.compare_records(a, worse)
    assert v.verdict == "worse" and v.n == (60, 8) and v.p_value == pytest.approx(2 * 0.5**8)


def _group(parts: dict[str, list[float]], group_value: float | None = None):
    """An accuracy record of a group (as BLiMP's): a headline without items of its own, and its parts with theirs."""
    rec = record("accuracy", "m", "transformers", "F32", hardware(0), random.Random(0))
    pooled = [v for values in parts.values() for v in values]
    rec.metrics = [Metric(name="acc", unit="fraction", higher_is_better=True, labels={"task": "g", "subtask": None,
                          "filter": "none"}, value=float(np.mean(pooled)) if group_value is None else group_value)]
    rec.samples, rec.extra = {}, {"items": {}}
    for sub, values in parts.items():
        key = f"acc[task={sub},filter=none]"
        rec.metrics.append(Metric(name="acc", unit="fraction", value=float(np.mean(values)), higher_is_better=True,
                                  samples_key=key, labels={"task": "g", "subtask": sub, "filter": "none"}))
        rec.samples[key], rec.extra["items"][key] = values, list(range(len(values)))  # ids repeat across parts
    return rec


def test_a_groups_headline_is_tested_on_its_parts_items_pooled():
    a = _group({"g_one": [1.0] * 20, "g_two": [1.0] * 20})
    b = _group({"g_one": [0.0] * 5 + [1.0] * 15, "g_two": [0.0] * 4 + [1.0] * 16})  # 9 wrong over two parts
    head, *parts = C.compare_records(a, b)
    assert head.labels["subtask"] is None and head.n == (40, 9) and head.verdict == "worse"
    assert head.p_value == pytest.approx(2 * 0.5**9) and [p.n for p in parts] == [(20, 5), (20, 4)]
    from rich.console import Console

    from smallbench.cli import compare_table

    console = Console(width=300, record=True)
    console.print(compare_table([head, *parts], ("a", "b")))
    shown = console.export_text()  # each part under its own name, not 'task=g' three times
    assert "acc task=g (fraction)" in shown and "task=g_one" in shown and "task=g_two" in shown
    # a headline that is not the mean of its items (another aggregation) is not tested on them
    (*parts,) = C.compare_records(_group({"g_one": [1.0] * 20, "g_two": [1.0] * 10}, 0.9), a)
    assert all(p.labels["subtask"] for p in parts) and len(parts) == 2


def test_cli_compares_two_folders_and_within_one_folder(tmp_path):
    rng = random.Random(0)
    hw = hardware(0)
    for side, scale in (("a", 1.0), ("b", 1.25)):
        rec = record("latency", "m", "llama-cpp", "Q8_0", hw, random.Random(1))
        rec.cell_id = "same-cell"
        rec.samples = {k: [x * scale for x in v] for k, v in rec.samples.items()}
        write_record(rec, tmp_path / side / "m__llama-cpp__latency.json")
        other = record("latency", "m", "vllm", None, hw, rng)
        write_record(other, tmp_path / "a" / "m__vllm__latency.json")
    res = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = {r["metric"]: r for r in json.loads(res.stdout)}
    assert rows["tpot"]["verdict"] == "slower" and rows["decode_tok_s"]["verdict"] == "faster"  # rates scaled up too
    assert rows["tpot"]["ratio"] == pytest.approx(1.25)
    res = run_cli("compare", str(tmp_path / "a"), "--backend", "llama-cpp,vllm", cwd=tmp_path)
    assert res.returncode == 0 and "B ÷ A" in res.stdout and "llama-cpp" in res.stdout, res.stderr
    res = run_cli("compare", str(tmp_path / "a"), cwd=tmp_path)
    assert res.returncode == 2 and "compare takes two results" in res.stderr
    res = run_cli("compare", str(tmp_path / "a"), "--quant", "Q8_0", cwd=tmp_path)
    assert res.returncode == 2 and "--quant takes the two values" in res.stderr


def test_several_runs_per_side_carry_the_noise_between_runs():
    """Runs of one cell that differ by ±30 % between processes (as two runs here did): one run per side calls a
    difference that three runs per side show to be noise; a real 2× slowdown stays significant."""
    level = [1.0, 1.3, 0.75]  # each run's own speed, each with 3 % noise within it
    a = [_noisy(0.010 * f, 10, i) for i, f in enumerate(level)]
    b = [_noisy(0.010 * f, 10, 10 + i) for i, f in enumerate(reversed(level))]
    ratio, low, high = C.ratio_ci(a[0], b[0])  # one run each: A's first (1.0) against B's first (0.75)
    assert C.speed_verdict(ratio, low, high, False, "s") == "faster"  # a verdict the runs do not bear out
    ratio, low, high = C.ratio_ci_runs(a, b)
    assert low < 1.0 < high and C.speed_verdict(ratio, low, high, False, "s") == C.SAME
    ratio, low, high = C.ratio_ci_runs(a, [[2 * x for x in run] for run in b])
    assert C.speed_verdict(ratio, low, high, False, "s") == "slower"


def test_cli_takes_several_runs_per_side(tmp_path):
    hw = hardware(0)
    for side in ("a", "b"):
        for run, f in enumerate((1.0, 1.3, 0.75) if side == "a" else (0.75, 1.3, 1.0)):
            rec = record("latency", "m", "llama-cpp", "Q8_0", hw, random.Random(1))
            rec.samples = {k: [x * f for x in v] for k, v in rec.samples.items()}
            write_record(rec, tmp_path / f"{side}{run}" / "m.json")
    res = run_cli("compare", "a0,a1,a2", "b0,b1,b2", "--format", "json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = {r["metric"]: r for r in json.loads(res.stdout)}
    assert rows["tpot"]["runs_a"] == rows["tpot"]["runs_b"] == 3 and rows["tpot"]["verdict"] == C.SAME
    one = run_cli("compare", "a2", "b0", cwd=tmp_path)  # one run each: says what it cannot know
    assert one.returncode == 0 and "one run on a side" in one.stdout


def test_roofline_shares_are_compared_only_against_one_bound():
    """A share of a CPU copy against a share of a read would be a verdict on the bound, not on the decode."""
    a, b = (record("latency", "m", "llama-cpp", "Q8_0", hardware(0), random.Random(i)) for i in (1, 2))
    assert "decode_bandwidth_pct" in {v.metric for v in C.compare_records(a, b)}  # both: the machine's best read
    b.extra["roofline"]["source"] = "measured: multi-threaded memory copy, best of before load and after close"
    verdicts = {v.metric for v in C.compare_records(a, b)}
    assert "decode_bandwidth_pct" not in verdicts and "decode_tok_s" in verdicts
    # one kind, another value: this machine's best read rose from 54 to 57 GB/s between the runs
    b.extra["roofline"] = {**a.extra["roofline"], "bandwidth_bytes_s": a.extra["roofline"]["bandwidth_bytes_s"] * 1.05}
    verdicts = {v.metric for v in C.compare_records(a, b)}
    assert "decode_bandwidth_pct" not in verdicts and "decode_tok_s" in verdicts
