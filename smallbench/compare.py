"""Two runs side by side, with a verdict that knows the noise.

Speed and memory: the ratio B ÷ A of the two medians, with a percentile-bootstrap 95 % interval from the raw
samples of each side (resampled independently; with several runs of a cell on a side, runs and then samples are
resampled, so that the interval also holds the noise between runs, which one run cannot show). The verdict is
"faster" / "slower" ("smaller" / "larger" for memory) only when the interval leaves out 1 *and* the ratio differs
from 1 by at least ``threshold`` (5 % by default: a difference that small is not worth a verdict even when real,
as in asv's ``compare``); otherwise "no significant difference". Accuracy: the documents both runs scored, paired
item by item, and McNemar's exact test on the ones they disagree on (a different score at p < 0.05 is "better" /
"worse").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smallbench.errors import SmallbenchError
from smallbench.results import Metric, ResultRecord

LEVEL = 0.95
THRESHOLD = 0.05
RESAMPLES = 10_000
SAME = "no significant difference"
#: Units whose better direction reads as speed.
_SPEED_UNITS = {"s", "s/token", "tok/s", "req/s"}


@dataclass
class Verdict:
    """One metric of one pair of records."""

    model: str
    suite: str
    metric: str
    labels: dict[str, Any]
    unit: str
    a: float
    b: float
    test: str  # "bootstrap" (ratio of medians) or "mcnemar" (paired items)
    verdict: str
    ratio: float | None = None  # B ÷ A
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    n: tuple[int, int] = (0, 0)  # samples (bootstrap) or items scored by both, items they disagree on (McNemar)
    runs: tuple[int, int] = (1, 1)  # records (runs of the cell) on each side
    sides: tuple[str, str] = field(default=("A", "B"))


def ratio_ci(a: list[float], b: list[float], level: float = LEVEL, resamples: int = RESAMPLES,
             seed: int = 0) -> tuple[float, float, float]:
    """median(B) ÷ median(A) and its percentile-bootstrap interval (each side resampled on its own)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    mx = np.median(x[rng.integers(0, x.size, size=(resamples, x.size))], axis=1)
    my = np.median(y[rng.integers(0, y.size, size=(resamples, y.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = my / mx
    boot = boot[np.isfinite(boot)]
    alpha = (1.0 - level) / 2.0
    return float(np.median(y) / np.median(x)), float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))


def ratio_ci_runs(a: list[list[float]], b: list[list[float]], level: float = LEVEL, resamples: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """As :func:`ratio_ci` when each side has several runs of the cell: a two-level bootstrap (runs resampled, then
    each chosen run's samples), so that the interval holds the noise between runs as well as within them."""
    if len(a) == 1 and len(b) == 1:
        return ratio_ci(a[0], b[0], level, seed=seed)
    rng = np.random.default_rng(seed)
    runs_a, runs_b = [np.asarray(r, dtype=float) for r in a], [np.asarray(r, dtype=float) for r in b]

    def draw(runs: list[np.ndarray]) -> float:
        picked = [runs[i] for i in rng.integers(0, len(runs), len(runs))]
        return float(np.median(np.concatenate([r[rng.integers(0, r.size, r.size)] for r in picked])))

    boot = np.array([draw(runs_b) / draw(runs_a) for _ in range(resamples)])
    boot = boot[np.isfinite(boot)]
    alpha = (1.0 - level) / 2.0
    point = float(np.median(np.concatenate(runs_b)) / np.median(np.concatenate(runs_a)))
    return point, float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))


def speed_verdict(ratio: float, low: float, high: float, higher_is_better: bool | None, unit: str,
                  threshold: float = THRESHOLD) -> str:
    """What B is next to A for a metric with a direction (``SAME`` inside the noise or the threshold)."""
    if higher_is_better is None or low <= 1.0 <= high or abs(ratio - 1.0) < threshold:
        return SAME
    better = (ratio > 1.0) == higher_is_better
    words = ("faster", "slower") if unit in _SPEED_UNITS else ("smaller", "larger") if unit == "bytes" else \
        ("better", "worse")
    return words[0] if better else words[1]


def mcnemar(a: dict[Any, float], b: dict[Any, float]) -> tuple[int, int, int, float]:
    """Items both scored, those only B got right, those only A got right, and McNemar's exact two-sided p (the
    binomial test of the disagreements against 1/2)."""
    common = a.keys() & b.keys()
    only_b = sum(1 for k in common if b[k] > a[k])
    only_a = sum(1 for k in common if a[k] > b[k])
    n = only_a + only_b
    if n == 0:
        return len(common), 0, 0, 1.0
    k = min(only_a, only_b)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2))
               for i in range(k + 1))
    return len(common), only_b, only_a, min(1.0, 2.0 * tail)


def _items(rec: ResultRecord, m: Metric) -> dict[Any, float] | None:
    """A per-document right/wrong score by document id, where the record kept them (None otherwise)."""
    values = rec.samples.get(m.samples_key or "")
    if not values or any(v not in (0.0, 1.0) for v in values):
        return None
    ids = rec.extra.get("items", {}).get(m.samples_key)
    if ids is None or len(ids) != len(values):
        return None
    return dict(zip(ids, values, strict=True))


def _group_items(rec: ResultRecord, m: Metric) -> dict[Any, float] | None:
    """A group's items (BLiMP's, MMLU's): its subtasks' pooled, by subtask and document, where the group's figure is
    their mean over every item (lm-eval's size-weighted aggregate), so that one test covers the headline figure."""
    if m.samples_key or m.labels.get("subtask") is not None:
        return None
    pooled: dict[Any, float] = {}
    for x in rec.metrics:
        if x.name == m.name and x.labels.get("subtask") is not None and all(
                x.labels.get(k) == m.labels.get(k) for k in ("task", "filter")):
            items = _items(rec, x)
            if items is None:
                return None
            pooled.update({(x.labels["subtask"], doc): v for doc, v in items.items()})
    if not pooled or abs(float(np.mean(list(pooled.values()))) - m.value) > 1e-9:
        return None  # not a plain mean of these items: pooling would test another figure
    return pooled


def _key(m: Metric) -> str:
    return m.name + json.dumps(m.labels, sort_keys=True, default=str)


def compare_records(a: ResultRecord | list[ResultRecord], b: ResultRecord | list[ResultRecord],
                    threshold: float = THRESHOLD, sides: tuple[str, str] = ("A", "B")) -> list[Verdict]:
    """Every metric both sides share that has raw samples on both. A side may be several runs (records) of the same
    cell: speed and memory then use every run (:func:`ratio_ci_runs`); accuracy uses the newest run of each side."""
    runs_a, runs_b = (sorted(x, key=lambda r: r.created_at) if isinstance(x, list) else [x] for x in (a, b))
    first_a, first_b = runs_a[-1], runs_b[-1]
    theirs = {_key(m): m for m in first_b.metrics}
    out = []
    for ma in first_a.metrics:
        mb = theirs.get(_key(ma))
        if mb is None:
            continue
        base = {"model": first_a.model.id, "suite": first_a.suite, "metric": ma.name, "labels": ma.labels,
                "unit": ma.unit, "a": ma.value, "b": mb.value, "sides": sides}
        if first_a.suite == "accuracy":
            items = _items if ma.samples_key and mb.samples_key else _group_items
            ia, ib = items(first_a, ma), items(first_b, mb)
            if ia is None or ib is None:
                continue
            both, only_b, only_a, p = mcnemar(ia, ib)
            verdict = SAME if p >= 1 - LEVEL else ("higher" if only_b > only_a else "lower")
            if verdict != SAME and ma.higher_is_better is not None:
                verdict = "better" if (only_b > only_a) == ma.higher_is_better else "worse"
            out.append(Verdict(**base, test="mcnemar", verdict=verdict, p_value=p, n=(both, only_a + only_b)))
            continue
        if not ma.samples_key or not mb.samples_key:
            continue
        if ma.name == "decode_bandwidth_pct" and not _same_bound(runs_a + runs_b):
            continue
        sa, sb = _runs(runs_a, ma), _runs(runs_b, mb)
        if not sa or not sb or min(map(len, sa + sb)) < 2 or np.median(np.concatenate(sa)) == 0:
            continue
        ratio, low, high = ratio_ci_runs(sa, sb)
        base.update(a=float(np.median(np.concatenate(sa))), b=float(np.median(np.concatenate(sb))))
        out.append(Verdict(**base, test="bootstrap", ratio=ratio, low=low, high=high, runs=(len(sa), len(sb)),
                           n=(sum(map(len, sa)), sum(map(len, sb))),
                           verdict=speed_verdict(ratio, low, high, ma.higher_is_better, ma.unit, threshold)))
    return out


#: Bounds this close (ratio) count as one: two runs' NVML or data-sheet figures for one GPU are equal.
SAME_BOUND = 1.01


def _same_bound(records: list[ResultRecord]) -> bool:
    """Whether every record's roofline share is of one bound: one kind (shares of a CPU copy and of a read, or of a
    measurement and a data sheet, do not compare) and one value (a CPU machine's best read rises as runs add
    measurements; shares of 54 and of 57 GB/s would give a verdict on the bound, not on the decode)."""
    bounds = [ResultRecord.roofline_bound(r) for r in records]
    if None in bounds or len({kind for _, kind in bounds}) != 1:
        return False
    values = [bw for bw, _ in bounds]
    return max(values) <= SAME_BOUND * min(values)


def _runs(records: list[ResultRecord], m: Metric) -> list[list[float]]:
    """The raw samples of metric ``m`` (same name and labels) in each run that has them."""
    out = []
    for r in records:
        hit = next((x for x in r.metrics if _key(x) == _key(m) and x.samples_key), None)
        if hit is not None and r.samples.get(hit.samples_key):
            out.append(r.samples[hit.samples_key])
    return out


#: What makes two records the same cell apart from one compared dimension.
DIMENSIONS = {
    "backend": lambda r: r.backend.name,
    "quant": lambda r: r.model.quant,
    "hardware": lambda r: r.hardware.fingerprint if r.hardware else None,
}


def cell_key(r: ResultRecord, without: tuple[str, ...] = ()) -> str:
    key = {"model": r.model.id, "weights": r.model.weights_id, "suite": r.suite, "settings": r.settings,
           **{d: f(r) for d, f in DIMENSIONS.items() if d not in without}}
    return json.dumps(key, sort_keys=True, default=str)


#: What else may differ when one dimension is compared: two backends run their own weights formats.
FREE = {"backend": ("backend", "quant"), "quant": ("quant",), "hardware": ("hardware",)}


def pair(a: Iterable[ResultRecord], b: Iterable[ResultRecord],
         by: str | None = None) -> list[tuple[list[ResultRecord], list[ResultRecord]]]:
    """The runs (ok records) of A and of B that measure the same cell; with ``by`` (backend, quant, hardware), the
    same cell apart from that dimension (a backend also apart from its quant): every such pair of cells."""
    def cells(records: Iterable[ResultRecord]) -> dict[str, dict[str, list[ResultRecord]]]:
        out: dict[str, dict[str, list[ResultRecord]]] = {}
        for r in records:
            if r.status == "ok":
                out.setdefault(cell_key(r, FREE[by] if by else ()), {}).setdefault(cell_key(r), []).append(r)
        return out

    left, right = cells(a), cells(b)
    return [(x, y) for k in sorted(left.keys() & right.keys()) for x in left[k].values() for y in right[k].values()]


def split(records: list[ResultRecord], dimension: str, values: list[str]) -> tuple[list, list]:
    """A folder's records as the two sides of ``--backend X,Y`` (or --quant, --hardware)."""
    if dimension not in DIMENSIONS:
        raise SmallbenchError(f"cannot compare by '{dimension}': one of {', '.join(DIMENSIONS)}")
    if len(values) != 2:
        raise SmallbenchError(f"--{dimension} takes the two values to compare, like X,Y; got {','.join(values)}")
    def side(value: str) -> list[ResultRecord]:
        if dimension == "hardware":  # the accelerator's name or the fingerprint
            return [r for r in records if r.hardware and value in (r.hardware.accelerator, r.hardware.fingerprint)]
        return [r for r in records if DIMENSIONS[dimension](r) == value]

    return side(values[0]), side(values[1])
