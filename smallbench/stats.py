"""Summary statistics over raw samples: percentiles, bootstrap CI, coefficient of variation.

Every timing metric in smallbench is summarised by :func:`summarize`; the raw samples are kept
in the result record next to the summary, so any other statistic can be recomputed later.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel

#: A coefficient of variation above this marks a metric as noisy (``cv_flag``).
CV_THRESHOLD = 0.10
BOOTSTRAP_RESAMPLES = 2000
#: Slowdown across trials (thermal throttling): flagged when at least this many trials show a rank
#: correlation with trial order of at least DRIFT_RHO and the last third is DRIFT_CHANGE slower.
DRIFT_MIN_TRIALS = 5
DRIFT_RHO = 0.8
DRIFT_CHANGE = 0.05


class Stats(BaseModel):
    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float
    ci95_low: float
    ci95_high: float
    cv: float
    cv_flag: bool


def percentile(samples: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default, same as vLLM's benchmark scripts)."""
    return float(np.percentile(np.asarray(samples, dtype=float), q))


def bootstrap_ci(
    samples: list[float], stat=np.median, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``stat`` (the median by default)."""
    x = np.asarray(samples, dtype=float)
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    boot = stat(x[idx], axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(boot, alpha)), float(np.quantile(boot, 1.0 - alpha))


def summarize(samples: list[float]) -> Stats:
    """Summarise raw samples. ``std`` is the sample standard deviation (ddof=1); CV = std / mean."""
    if not samples:
        raise ValueError("cannot summarise an empty sample")
    x = np.asarray(samples, dtype=float)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    cv = std / abs(mean) if mean != 0 else (0.0 if std == 0 else math.inf)
    lo, hi = bootstrap_ci(samples)
    return Stats(
        n=int(x.size),
        mean=mean,
        std=std,
        min=float(x.min()),
        max=float(x.max()),
        p50=percentile(samples, 50),
        p90=percentile(samples, 90),
        p99=percentile(samples, 99),
        ci95_low=lo,
        ci95_high=hi,
        cv=cv,
        cv_flag=bool(cv > CV_THRESHOLD),
    )


class Drift(BaseModel):
    """How a per-trial metric moved over the trials, in the order they ran."""

    n: int
    #: Spearman rank correlation between trial order and slowness (1 = each trial slower than the one before).
    spearman: float
    #: How much slower the last third of the trials ran than the first third (medians): 0.1 = 10 % slower.
    slowdown: float
    #: A steady slowdown: spearman ≥ DRIFT_RHO and slowdown ≥ DRIFT_CHANGE over ≥ DRIFT_MIN_TRIALS trials.
    flag: bool


def drift(samples: list[float], higher_is_better: bool) -> Drift | None:
    """Trend of per-trial samples taken in order; None with fewer than DRIFT_MIN_TRIALS. For a rate
    (tok/s) slower means lower, for a time higher; ``slowdown`` is a ratio of times either way."""
    x = np.asarray(samples, dtype=float)
    if x.size < DRIFT_MIN_TRIALS:
        return None
    slowness = -x if higher_is_better else x
    ranks = _ranks(slowness)
    rho = 0.0 if ranks.std() == 0 else float(np.corrcoef(np.arange(x.size), ranks)[0, 1])
    k = max(1, x.size // 3)
    first, last = float(np.median(x[:k])), float(np.median(x[-k:]))
    ratio = (first / last if higher_is_better else last / first) if first > 0 and last > 0 else 1.0
    slowdown = ratio - 1.0
    return Drift(n=int(x.size), spearman=rho, slowdown=slowdown,
                 flag=bool(rho >= DRIFT_RHO and slowdown >= DRIFT_CHANGE))


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties given their average rank (as Spearman's correlation needs)."""
    ordinal = np.empty(a.size)
    ordinal[a.argsort(kind="stable")] = np.arange(a.size)
    _, group, counts = np.unique(a, return_inverse=True, return_counts=True)
    return (np.bincount(group, weights=ordinal) / counts)[group]
