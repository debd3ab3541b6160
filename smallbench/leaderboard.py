"""The leaderboard's data: result records joined into one wide row per (model, weights, quant, backend, device,
engine config, hardware) and workload shape.

Shared by ``smallbench report`` and ``leaderboard_app.py``. The rules for which number stands for a row (which
suite's TTFT, which batch size's decode speed, NVML before RSS) live here and only here; units, directions and
definitions come from :data:`smallbench.metrics.METRICS`. Values stay numbers (NaN where nothing was measured,
never 0); headers carry the display unit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from smallbench.backends import config_label
from smallbench.errors import SmallbenchError
from smallbench.metrics import METRICS
from smallbench.results import Metric, ResultRecord

#: Which accuracy figure stands for a task, first found wins: byte-length-normalised accuracy where the task
#: reports it (lm-eval's multiple-choice tasks), then plain accuracy, exact match (generation tasks, strict filter
#: first), then perplexity (language-modelling tasks; not averaged).
PRIMARY_ACCURACY = ("acc_norm", "acc", "exact_match", "word_perplexity")
FILTER_ORDER = ("none", "strict-match")
#: Display units: records store SI base units; the table shows these.
DISPLAY = {"s": ("ms", 1e3), "s/token": ("ms/token", 1e3), "bytes": ("GiB", 2.0**-30), "fraction": ("%", 100.0)}
KEY = ["model", "weights", "quant", "backend", "device", "config", "hardware_id"]


def display_unit(unit: str) -> tuple[str, float]:
    return DISPLAY.get(unit, (unit, 1.0))


def _header(label: str, metric: str) -> str:
    return f"{label} ({display_unit(METRICS[metric].unit)[0]})"


#: The table's measured columns: header → (metric, statistic). One place decides what each column shows.
COLUMNS: dict[str, tuple[str, str]] = {
    _header("TTFT p50", "ttft"): ("ttft", "p50"),
    _header("TTFT p99", "ttft"): ("ttft", "p99"),
    _header("TPOT p50", "tpot"): ("tpot", "p50"),
    _header("decode", "decode_tok_s"): ("decode_tok_s", "p50"),
    _header("best throughput", "output_tok_s"): ("output_tok_s", "best"),
    _header("peak memory", "peak_rss_bytes"): ("peak_memory", "p50"),
    _header("roofline", "decode_bandwidth_pct"): ("decode_bandwidth_pct", "p50"),
    _header("energy", "energy_per_token"): ("energy_per_token", "p50"),
}
TTFT, TTFT99, TPOT, DECODE, THROUGHPUT, PEAK, ROOFLINE, ENERGY = COLUMNS
ACC_AVG = "accuracy avg (%)"
#: The bandwidth the roofline column is a share of, and its kind: shares of different kinds do not compare.
BOUND, BOUND_KIND = "roofline bound (GB/s)", "roofline bound"
#: How many of a row's cells ran on a busy machine (smallbench.telemetry.Contention.busy); empty where none was watched.
BUSY = "cells on a busy machine"
#: Largest |Δ log-likelihood| of the parity probes against the same weights on Transformers (smallbench.parity).
PARITY = "parity max |Δ loglik| vs transformers"
SHAPE = "shape (prompt→gen tokens)"
IDENTITY = ["model", "name", "maker", "role", "params total (B)", "params active (B)", "backend", "backend version",
            "device", "config", "quant", "weights", SHAPE, "hardware"]


def primary_accuracy(rec: ResultRecord) -> dict[str, Metric]:
    """Task → the metric that stands for it in an accuracy record (groups' rows, not their subtasks)."""
    out: dict[str, Metric] = {}
    found = [m for m in rec.metrics if m.labels.get("task") and m.labels.get("subtask") is None]
    for task in dict.fromkeys(m.labels["task"] for m in found):
        cands = [m for m in found if m.labels["task"] == task and m.name in PRIMARY_ACCURACY]

        def rank(m: Metric) -> tuple[int, int]:
            f = m.labels.get("filter")
            return PRIMARY_ACCURACY.index(m.name), FILTER_ORDER.index(f) if f in FILTER_ORDER else len(FILTER_ORDER)

        if cands:
            out[task] = min(cands, key=rank)
    return out


def accuracy_header(task: str, m: Metric) -> str:
    unit, _ = display_unit(m.unit)
    return f"{task} {m.name} ({unit})" if unit and unit != "perplexity" else f"{task} {m.name}"


def _pick(recs: list[ResultRecord], name: str, **labels: Any) -> tuple[ResultRecord, Metric] | None:
    """The newest ok record's metric ``name`` with these labels (labels absent from the metric count as None)."""
    for r in sorted(recs, key=lambda r: r.created_at, reverse=True):
        for m in r.metrics:
            if m.name == name and all(m.labels.get(k) == v for k, v in labels.items()):
                return r, m
    return None


def headline(recs: list[ResultRecord]) -> dict[str, tuple[ResultRecord, Metric, Any] | None]:
    """For one row's records: the record and metric behind each measured column (None where nothing measured).

    - TTFT, TPOT: the latency suite (one request at a time); else the serving suite at concurrency 1.
    - decode tok/s, roofline %, energy: the latency suite; else the throughput suite at batch 1.
    - best throughput: the highest ``output_tok_s`` over the throughput suite's batch sizes and the serving suite's
      concurrency levels; the ``best at`` column says where (``batch 8``, ``concurrency 16``).
    - peak memory: the memory suite's NVML process peak on a GPU, else its peak RSS of the process tree.
    """
    ok = [r for r in recs if r.status == "ok"]
    by_suite: dict[str, list[ResultRecord]] = {}
    for r in ok:
        by_suite.setdefault(r.suite, []).append(r)
    lat, thr, srv = by_suite.get("latency", []), by_suite.get("throughput", []), by_suite.get("serving", [])
    mem = by_suite.get("memory", [])

    def first(*options: tuple[list[ResultRecord], dict[str, Any]], name: str):
        for pool, labels in options:
            if pool and (hit := _pick(pool, name, **labels)):
                return (*hit, None)
        return None

    out: dict[str, Any] = {}
    for col in (TTFT, TTFT99, TPOT):
        out[col] = first((lat, {"concurrency": None}), (srv, {"concurrency": 1}), name=COLUMNS[col][0])
    for col in (DECODE, ROOFLINE, ENERGY):
        out[col] = first((lat, {}), (thr, {"batch_size": 1}), name=COLUMNS[col][0])
    best = None
    for r in thr + srv:
        for m in r.metrics:
            if m.name == "output_tok_s" and (best is None or m.value > best[1].value):
                where = (f"batch {m.labels['batch_size']}" if "batch_size" in m.labels
                         else f"concurrency {m.labels.get('concurrency')}")
                best = (r, m, where)
    out[THROUGHPUT] = best
    out[PEAK] = first((mem, {}), name="nvml_process_peak_bytes") or first((mem, {}), name="peak_rss_bytes")
    return out


def _value(m: Metric, stat: str) -> float:
    unit = METRICS[m.name].unit if m.name in METRICS else m.unit
    scale = display_unit(unit)[1]
    v = getattr(m.stats, stat) if m.stats and stat in ("p50", "p99") else m.value
    return v * scale


def _params(rec: ResultRecord, entry) -> tuple[float, float]:
    total = rec.model.params_total or (entry.params_total if entry else None)
    active = rec.model.params_active or (entry.params_active if entry else None) or total
    return (total / 1e9 if total else math.nan), (active / 1e9 if active else math.nan)


def row_key(rec: ResultRecord) -> tuple[str, ...]:
    """The parts of :data:`KEY`: what must be the same for two records' numbers to share a row."""
    weights = "dummy" if rec.model.dummy else (rec.model.weights_id or "")[:12] or "real"
    hw = rec.hardware
    config = config_label(rec.backend, hw.cpu_cores_physical if hw else None)
    return (rec.model.id, weights, rec.model.quant or rec.model.dtype or "", rec.backend.name,
            rec.backend.device or "", config, hw.fingerprint if hw else "unknown")


_CONFIG = KEY.index("config")


def _weights_key(key: tuple[str, ...]) -> tuple[str, ...]:
    """A row key less the engine config: what accuracy and parity belong to (the weights on that engine)."""
    return key[:_CONFIG] + key[_CONFIG + 1 :]


def shape(rec: ResultRecord) -> str:
    """The workload a speed or memory record measured (``64→16``: prompt → generated tokens); "" for accuracy."""
    st = rec.settings
    return f"{st['prompt_tokens']}→{st.get('gen_tokens', '?')}" if rec.suite != "accuracy" and "prompt_tokens" in st \
        else ""


@dataclass
class Board:
    """The wide table and, per row, the records it was built from (for the charts' raw samples)."""

    table: pd.DataFrame
    records: dict[int, list[ResultRecord]]
    #: How many records it was built from (a record can join several rows, or none: parity of the reference).
    read: int

    def samples(self, row: int, metric: str, suite: str | None = None, **labels: Any) -> list[float]:
        for r in self.records.get(row, []):
            if r.status != "ok" or (suite and r.suite != suite):
                continue
            for m in r.metrics:
                if m.name == metric and m.samples_key and all(m.labels.get(k) == v for k, v in labels.items()):
                    return r.samples.get(m.samples_key, [])
        return []

    def curve(self, row: int, metric: str = "output_tok_s") -> list[tuple[str, int, float, float, float]]:
        """(sweep, level, median, ci low, ci high) of ``metric`` across batch sizes and concurrency levels."""
        pts = []
        for r in self.records.get(row, []):
            for m in r.metrics:
                if m.name != metric or r.status != "ok":
                    continue
                for sweep in ("batch_size", "concurrency"):
                    if sweep in m.labels:
                        lo, hi = (m.stats.ci95_low, m.stats.ci95_high) if m.stats else (m.value, m.value)
                        pts.append((sweep, int(m.labels[sweep]), m.value, lo, hi))
        return sorted(pts)


def build(records: Iterable[ResultRecord]) -> Board:
    """One row per :data:`KEY` and workload shape, the measured columns of
    :data:`COLUMNS`, each task's primary accuracy, their average, and bookkeeping (cells, failed cells, newest
    record). Numbers of different shapes or engine configs never share a row; accuracy belongs to the weights, so it
    joins every shape's and config's row of the same weights, backend, device and hardware (and makes a row of its
    own where nothing else ran)."""
    from smallbench import models, parity

    records = list(records)
    deltas = parity.max_deltas(records) if any(r.suite == "parity" for r in records) else {}
    deltas = {_weights_key(k): v for k, v in deltas.items()}
    speed: dict[tuple, list[ResultRecord]] = {}
    accuracy: dict[tuple, list[ResultRecord]] = {}  # accuracy and parity: the weights', whatever the engine config
    for r in records:
        if sh := shape(r):
            speed.setdefault((*row_key(r), sh), []).append(r)
        else:
            accuracy.setdefault(_weights_key(row_key(r)), []).append(r)
    groups = {key: recs + accuracy.get(_weights_key(key[:-1]), []) for key, recs in speed.items()}
    measured = {_weights_key(key[:-1]) for key in speed}
    groups.update({(*key[:_CONFIG], "", *key[_CONFIG:], ""): recs for key, recs in accuracy.items()
                   if key not in measured and (key in deltas or any(r.suite == "accuracy" for r in recs))})
    rows, by_row = [], {}
    for i, (key, recs) in enumerate(groups.items()):
        rec = recs[0]
        entry = models.entry(rec.model.id)
        total, active = _params(rec, entry)
        hw, k = rec.hardware, dict(zip([*KEY, SHAPE], key, strict=True))
        row: dict[str, Any] = {
            "model": rec.model.id, "name": entry.display_name if entry else rec.model.id,
            "maker": entry.maker if entry else "", "role": entry.role if entry else "",
            "params total (B)": total, "params active (B)": active, "backend": rec.backend.name,
            "backend version": rec.backend.version or "", "device": k["device"], "config": k["config"],
            "quant": k["quant"], "weights": "dummy" if rec.model.dummy else "real", SHAPE: k[SHAPE],
            "hardware": hw.accelerator if hw else "unknown", "hardware_id": k["hardware_id"],
        }
        picked = headline(recs)
        for col, (_, stat) in COLUMNS.items():
            hit = picked[col]
            row[col] = _value(hit[1], "p50" if stat == "best" else stat) if hit else math.nan
            if col == DECODE and hit and hit[1].stats:
                row["decode ci low"], row["decode ci high"] = hit[1].stats.ci95_low, hit[1].stats.ci95_high
            if col == THROUGHPUT:
                row["best at"] = hit[2] if hit else ""
            if col == PEAK:
                row["memory source"] = ("NVML" if hit[1].name.startswith("nvml") else "RSS") if hit else ""
            if col == ROOFLINE:
                bound = hit[0].roofline_bound() if hit else None
                row[BOUND] = bound[0] / 1e9 if bound else math.nan
                row[BOUND_KIND] = bound[1] if bound else ""
        fractions: dict[str, float] = {}
        if not rec.model.dummy:  # random weights score nothing worth showing
            acc = [r for r in recs if r.suite == "accuracy" and r.status == "ok"]
            for r in sorted(acc, key=lambda r: r.created_at):  # the newest run of a task wins
                for task, m in primary_accuracy(r).items():
                    row[accuracy_header(task, m)] = _value(m, "value")
                    if METRICS[m.name].unit == "fraction":
                        fractions[task] = row[accuracy_header(task, m)]
        row[ACC_AVG] = sum(fractions.values()) / len(fractions) if fractions else math.nan
        row[PARITY] = deltas.get(_weights_key(key[:-1]), math.nan)
        row["cells"], row["failed"] = len(recs), sum(r.status != "ok" for r in recs)
        watched = [r.contention for r in recs if r.contention]  # records older than the watch: not watched
        row[BUSY] = sum(c.busy for c in watched) if watched else math.nan
        row["updated"] = max(r.created_at for r in recs).strftime("%Y-%m-%d %H:%M")
        rows.append(row)
        by_row[i] = recs
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=[*IDENTITY, "hardware_id", *COLUMNS, ACC_AVG])
    for col in [*COLUMNS, ACC_AVG, PARITY, BOUND, "params total (B)", "params active (B)"]:
        df[col] = pd.to_numeric(df.get(col), errors="coerce")
    return Board(df, by_row, len(records))


def accuracy_columns(df: pd.DataFrame) -> list[str]:
    """The per-task accuracy columns, in the order they appear."""
    return [c for c in df.columns if len(c.split(" ")) > 1 and c.split(" ")[1] in PRIMARY_ACCURACY]


def higher_is_better(col: str) -> bool:
    """Direction of a table column: accuracy and rates up, times, memory and energy down."""
    if col not in COLUMNS:
        return True  # accuracy columns (perplexity aside)
    metric = COLUMNS[col][0]
    return bool(METRICS["peak_rss_bytes" if metric == "peak_memory" else metric].higher_is_better)


def rank(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Rows best first by ``col`` (in its own direction), rows without it last."""
    return df.sort_values(col, ascending=not higher_is_better(col), na_position="last", kind="stable")


def pareto(df: pd.DataFrame, x: str, y: str, x_higher: bool, y_higher: bool) -> pd.Series:
    """Rows no other row dominates (at least as good on ``x`` and ``y``, better on one), per the given directions;
    identical points are all kept; rows with a missing value are not on it."""
    pts = df[[x, y]].dropna()
    sx = pts[x] if x_higher else -pts[x]
    sy = pts[y] if y_higher else -pts[y]
    order = sorted(zip(sx, sy, pts.index, strict=True), key=lambda t: (-t[0], -t[1]))
    best, keep = (math.inf, -math.inf), set()
    for vx, vy, idx in order:
        if vy > best[1] or (vx, vy) == best:
            keep.add(idx)
            best = (vx, vy)
    return pd.Series([i in keep for i in df.index], index=df.index)


def no_significant_difference(a: tuple[ResultRecord, Metric], b: tuple[ResultRecord, Metric]) -> bool:
    """Whether two rows' values of one metric are the same as far as the raw samples tell: the verdict of
    ``smallbench compare`` (bootstrap interval of the ratio of medians, and the 5 % threshold). Without raw samples
    on both sides, whether their 95 % intervals overlap."""
    from smallbench import compare

    (ra, ma), (rb, mb) = a, b
    sa, sb = ra.samples.get(ma.samples_key or ""), rb.samples.get(mb.samples_key or "")
    if sa and sb and len(sa) > 1 and len(sb) > 1 and ma.value:
        ratio, low, high = compare.ratio_ci(sa, sb)
        return compare.speed_verdict(ratio, low, high, METRICS[ma.name].higher_is_better, ma.unit) == compare.SAME
    ia = (ma.stats.ci95_low, ma.stats.ci95_high) if ma.stats else (ma.value, ma.value)
    ib = (mb.stats.ci95_low, mb.stats.ci95_high) if mb.stats else (mb.value, mb.value)
    return ia[0] <= ib[1] and ib[0] <= ia[1]

def filter_table(df: pd.DataFrame, hardware: list[str] | None = None, backends: list[str] | None = None,
                 roles: list[str] | None = None, quants: list[str] | None = None, weights: list[str] | None = None,
                 params: tuple[float, float] | None = None, search: str = "",
                 shapes: list[str] | None = None) -> pd.DataFrame:
    """The rows matching every given filter (None or empty: no filter on that field)."""
    mask = pd.Series(True, index=df.index)
    for col, allowed in (("hardware", hardware), ("backend", backends), ("role", roles), ("quant", quants),
                         ("weights", weights), (SHAPE, shapes)):
        if allowed:
            mask &= df[col].isin(allowed)
    if params:
        total = df["params total (B)"]
        mask &= total.isna() | total.between(params[0], params[1])
    if search:
        text = df["model"].str.contains(search, case=False, regex=False) | df["name"].str.contains(
            search, case=False, regex=False)
        mask &= text
    return df[mask]


def fits(memory_bytes: int, quant: str = "Q4_K_M", context: int = 4096, overhead: int = 2**30,
         backend: str | None = None, device: str = "cuda", gpu: str | None = None) -> pd.DataFrame:
    """The sizing module's answer for every catalogued model at one memory budget (plus what ``backend`` holds
    besides on ``device``, and what it can still run where a model does not fit, as ``smallbench fit --backend``
    says; with ``gpu``, a name in the bandwidth table, the fastest one sequence decodes there, as ``fit --gpu``)."""
    from smallbench import models, sizing
    from smallbench.backends import get_backend_class, memory_allowances

    partial = get_backend_class(backend).partial_fit if backend else None
    bandwidth = sizing.table_bandwidth(gpu) if gpu else None
    if gpu and not bandwidth:
        raise SmallbenchError(f"'{gpu}' is not in smallbench's bandwidth table")
    rows = []
    for name, e in models.catalogue().items():
        if e.role == "builtin":
            continue
        extra = sum(memory_allowances(backend, e.config, quant, device, memory_bytes).values())
        params = e.params_total or sizing.count_params(e.config).total  # counted where none is published
        f = sizing.fit(e.config, memory_bytes, quant, context, overhead + extra, params=params)
        over = context > f.max_context  # the model cannot take such a context at all, whatever the memory
        fits = f"no: longer than its {f.max_context:,}-token maximum" if over else "yes" if f.fits else "no"
        rows.append({
            "model": name, "role": e.role, "params total (B)": round(params / 1e9, 3),
            "weights (GiB)": round(f.weights / 2**30, 2), **({f"{backend} holds besides (GiB)":
                                                             round(extra / 2**30, 2)} if backend else {}),
            "KV per token (KiB)": f.kv.per_token / 1024,  # full-attention layers; the next column has them all
            "KV per sequence at this context (MiB)": round(f.kv.bytes(f.context) / 2**20, 1),
            "fits": fits, "sequences at this context": 0 if over else f.sequences_at_context,
            "longest context (tokens)": f.longest_context,
        })
        if bandwidth:
            rows[-1][f"decode bound on {gpu} (tok/s)"] = math.nan if over else round(
                sizing.decode_bound(e.config, f, bandwidth, f.context)[0])
        if partial:
            line = None if f.fits or over else partial(e.config, quant, device, memory_bytes, f.context, f.overhead)
            rows[-1][f"{backend} when it does not fit"] = line or ""
    return pd.DataFrame(rows)
