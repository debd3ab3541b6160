"""Two runs side by side, with a verdict that knows the noise.

Speed and memory: the ratio B ÷ A of the two medians, with a percentile-bootstrap 95 % interval from the raw
samples of each side (resampled independently). The verdict is "faster" / "slower" ("smaller" / "larger" for
memory) only when the interval leaves out 1 *and* the ratio differs from 1 by at least ``threshold`` (5 % by
default: a difference that small is not worth a verdict even when real, as in asv's ``compare``); otherwise "no
significant difference". Accuracy: the documents both runs scored, paired item by item, and McNemar's exact test
on the ones they disagree on (a different score at p < 0.05 is "higher" / "lower").
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
    sides: tuple[str, str] = field(default=("A", "B"))


def ratio_ci(a: list[float], b: list[float], level: float = LEVEL, resamples: int = RESAMPLES,
             seed: int = 0) -> tuple[float, float, float]:  # fmt: skip
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


def speed_verdict(ratio: float, low: float, high: float, higher_is_better: bool | None, unit: str,
                  threshold: float = THRESHOLD) -> str:  # fmt: skip
    """What B is next to A for a metric with a direction (``SAME`` inside the noise or the threshold)."""
    if higher_is_better is None or low <= 1.0 <= high or abs(ratio - 1.0) < threshold:
        return SAME
    better = (ratio > 1.0) == higher_is_better
    words = ("faster", "slower") if unit in _SPEED_UNITS else ("smaller", "larger") if unit == "bytes" else \
        ("better", "worse")  # fmt: skip
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
               for i in range(k + 1))  # fmt: skip
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


def _key(m: Metric) -> str:
    return m.name + json.dumps(m.labels, sort_keys=True, default=str)


def compare_records(a: ResultRecord, b: ResultRecord, threshold: float = THRESHOLD,
                    sides: tuple[str, str] = ("A", "B")) -> list[Verdict]:  # fmt: skip
    """Every metric the two records share that has raw samples on both sides."""
    theirs = {_key(m): m for m in b.metrics}
    out = []
    for ma in a.metrics:
        mb = theirs.get(_key(ma))
        if mb is None or not ma.samples_key or not mb.samples_key:
            continue
        sa, sb = a.samples.get(ma.samples_key) or [], b.samples.get(mb.samples_key) or []
        base = {"model": a.model.id, "suite": a.suite, "metric": ma.name, "labels": ma.labels, "unit": ma.unit,
                "a": ma.value, "b": mb.value, "sides": sides}  # fmt: skip
        if a.suite == "accuracy":
            ia, ib = _items(a, ma), _items(b, mb)
            if ia is None or ib is None:
                continue
            both, only_b, only_a, p = mcnemar(ia, ib)
            verdict = SAME if p >= 1 - LEVEL else ("higher" if only_b > only_a else "lower")
            if verdict != SAME and ma.higher_is_better is not None:
                verdict = "better" if (only_b > only_a) == ma.higher_is_better else "worse"
            out.append(Verdict(**base, test="mcnemar", verdict=verdict, p_value=p, n=(both, only_a + only_b)))
            continue
        if len(sa) < 2 or len(sb) < 2 or np.median(sa) == 0:
            continue
        ratio, low, high = ratio_ci(sa, sb)
        base.update(a=float(np.median(sa)), b=float(np.median(sb)))  # the medians the ratio is of
        out.append(Verdict(**base, test="bootstrap", ratio=ratio, low=low, high=high, n=(len(sa), len(sb)),
                           verdict=speed_verdict(ratio, low, high, ma.higher_is_better, ma.unit, threshold)))
    return out


#: What makes two records the same cell apart from one compared dimension.
DIMENSIONS = {
    "backend": lambda r: r.backend.name,
    "quant": lambda r: r.model.quant,
    "hardware": lambda r: r.hardware.fingerprint if r.hardware else None,
}


def _cell(r: ResultRecord, without: tuple[str, ...] = ()) -> str:
    key = {"model": r.model.id, "weights": r.model.weights_sha256, "suite": r.suite, "settings": r.settings,
           **{d: f(r) for d, f in DIMENSIONS.items() if d not in without}}  # fmt: skip
    return json.dumps(key, sort_keys=True, default=str)


#: What else may differ when one dimension is compared: two backends run their own weights formats.
FREE = {"backend": ("backend", "quant"), "quant": ("quant",), "hardware": ("hardware",)}


def pair(a: Iterable[ResultRecord], b: Iterable[ResultRecord],
         by: str | None = None) -> list[tuple[ResultRecord, ResultRecord]]:  # fmt: skip
    """Records of A and B that measure the same cell, the newest record of each cell; with ``by`` (backend, quant,
    hardware), the same cell apart from that dimension (a backend also apart from its quant): every such pair."""
    def newest(records: Iterable[ResultRecord]) -> dict[str, list[ResultRecord]]:
        latest: dict[str, ResultRecord] = {}
        for r in sorted((r for r in records if r.status == "ok"), key=lambda r: r.created_at):
            latest[_cell(r)] = r
        out: dict[str, list[ResultRecord]] = {}
        for r in latest.values():
            out.setdefault(_cell(r, FREE[by] if by else ()), []).append(r)
        return out

    left, right = newest(a), newest(b)
    return [(x, y) for k in sorted(left.keys() & right.keys()) for x in left[k] for y in right[k]]


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
