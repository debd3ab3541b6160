"""Accuracy: lm-eval's task definitions and scoring, run through the loaded backend.

Every task's metrics land in the same record as the other suites: per task (and per subtask of a
group) the metric, its stderr, n, the few-shot count, lm-eval's task version, a hash of the task's
definition and a hash of the exact documents scored. Per-document scores are kept as raw samples, in document
order, with their document ids in ``extra["items"]`` (the same key), for item-by-item comparisons.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from smallbench.backends.base import Backend
from smallbench.metrics import METRICS
from smallbench.paths import scratch_dir
from smallbench.results import Metric
from smallbench.suites.base import Suite, SuiteContext, SuiteResult, SuiteSettings

#: lm-eval's default few-shot / numpy / torch seed, so default runs match ``lm_eval``'s.
LM_EVAL_SEED = 1234
DEFAULT_TASKS = ["arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande"]
_DATA_KEYS = {"dataset_path", "dataset_name", "dataset_kwargs", "metadata"}


class AccuracySettings(SuiteSettings):
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS))
    data_dir: str | None = None  # local HF-format files instead of the Hub (docs/accuracy.md)
    limit: int | None = Field(None, ge=1)  # documents per task (lm-eval --limit)
    num_fewshot: int | None = Field(None, ge=0)  # None: each task's own default
    bootstrap_iters: int = Field(100_000, ge=0)  # lm-eval's default, for stderr without a closed form
    seed: int = LM_EVAL_SEED
    warmup: int = 0  # accuracy is deterministic: no warm-up or repeats
    repeats: int = 1

    @field_validator("tasks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from smallbench.tasks import resolve_tasks

        return [t.name for t in resolve_tasks(v)]

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return str(Path(v).expanduser().resolve()) if v else None


class AccuracySuite(Suite):
    name = "accuracy"
    settings_model = AccuracySettings
    needs_real_weights = True

    def preflight(self, settings: AccuracySettings) -> None:
        from smallbench.errors import SmallbenchError
        from smallbench.tasks import check_data, resolve_tasks

        if importlib.util.find_spec("lm_eval") is None:
            raise SmallbenchError("the accuracy suite needs lm-eval: pip install 'smallbench[accuracy]'")
        if settings.data_dir:
            check_data(resolve_tasks(settings.tasks), Path(settings.data_dir), settings.num_fewshot)

    def run(self, backend: Backend, settings: AccuracySettings, ctx: SuiteContext) -> SuiteResult:
        if settings.data_dir:  # local data only: make sure nothing reaches for the Hub
            os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
        import lm_eval

        from smallbench.lm_bridge import BackendLM, cache_prompt_templates
        from smallbench.tasks import resolve_tasks, task_manager

        cache_prompt_templates()

        specs = resolve_tasks(settings.tasks)
        data_dir = Path(settings.data_dir) if settings.data_dir else None
        with tempfile.TemporaryDirectory(prefix="smallbench-tasks-", dir=scratch_dir()) as work:
            tm = task_manager(specs, data_dir, settings.num_fewshot, Path(work))
            out = lm_eval.simple_evaluate(
                model=BackendLM(backend), tasks=[s.lm_eval for s in specs], task_manager=tm,
                num_fewshot=settings.num_fewshot, limit=settings.limit, bootstrap_iters=settings.bootstrap_iters,
                log_samples=True, fewshot_random_seed=settings.seed, numpy_random_seed=settings.seed,
                torch_random_seed=settings.seed,
            )
        result = SuiteResult()
        for spec in specs:
            for name in [spec.lm_eval, *out.get("group_subtasks", {}).get(spec.lm_eval, [])]:
                _add_task(result, out, spec.name, name, subtask=name != spec.lm_eval)
        result.extra["lm_eval_version"] = out.get("lm_eval_version")
        return result


def _add_task(result: SuiteResult, out: dict[str, Any], task: str, name: str, subtask: bool) -> None:
    scores = out.get("groups", {}).get(name) or out["results"].get(name)
    if scores is None:
        return
    leaves = _leaf_tasks(out, name)
    n = sum(out["n-samples"][leaf]["effective"] for leaf in leaves if leaf in out["n-samples"])
    shots = {out["n-shot"].get(leaf) for leaf in leaves}  # a group's row: its leaves' count, if they agree
    labels: dict[str, Any] = {
        "task": task, "subtask": name if subtask else None, "n": n,
        "num_fewshot": shots.pop() if len(shots) == 1 else None,
        "task_version": str(out["versions"].get(name)), "task_hash": _definition_hash(out, leaves),
        "data_hash": _data_hash(out, leaves),
    }
    better = out.get("higher_is_better", {}).get(name, {})
    for key, value in scores.items():
        if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
            continue
        metric, filt = key.split(",", 1)
        stderr = scores.get(f"{metric}_stderr,{filt}")
        stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
        m_labels = {**labels, "filter": filt}
        samples_key = None
        if name not in out.get("group_subtasks", {}):  # per-document scores live with the leaf task
            docs = [s for leaf in leaves for s in out.get("samples", {}).get(leaf, []) if s.get("filter") == filt]
            docs.sort(key=lambda s: s["doc_id"])
            per_doc = [_doc_value(s.get(metric)) for s in docs]
            if per_doc and all(v is not None for v in per_doc):
                samples_key = f"{metric}[task={name},filter={filt}]"
                result.samples[samples_key] = per_doc
                # which document each score is, so two runs can be compared item by item (smallbench compare)
                result.extra.setdefault("items", {})[samples_key] = [s["doc_id"] for s in docs]
        spec = METRICS.get(metric)  # lm-eval metrics smallbench does not declare keep lm-eval's direction
        result.metrics.append(Metric(name=metric, unit=spec.unit if spec else "", value=float(value), stderr=stderr,
                                     higher_is_better=spec.higher_is_better if spec else better.get(metric),
                                     samples_key=samples_key, labels=m_labels))


def _leaf_tasks(out: dict[str, Any], name: str) -> list[str]:
    """The scored tasks under ``name``: itself, or a group's members expanded down through its subgroups
    (``mmlu`` → ``mmlu_humanities`` → ``mmlu_philosophy``...)."""
    groups = out.get("group_subtasks", {})
    if name not in groups:
        return [name]
    return [leaf for member in groups[name] for leaf in _leaf_tasks(out, member)]


def _doc_value(v: Any) -> float | None:
    """One document's score: a number, or a perplexity task's log-likelihood (its weight is in the doc)."""
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (list, tuple)) and v and isinstance(v[0], (int, float)):
        return float(v[0])
    return None


def _definition_hash(out: dict[str, Any], leaves: list[str]) -> str:
    """sha256 over each leaf's task config without its data source: same prompts + scoring = same hash."""
    configs = out.get("configs", {})
    body = [{k: v for k, v in configs.get(leaf, {}).items() if k not in _DATA_KEYS} for leaf in leaves]
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _data_hash(out: dict[str, Any], leaves: list[str]) -> str:
    """sha256 over lm-eval's per-document hashes, in order: the exact documents that were scored."""
    h = hashlib.sha256()
    for leaf in leaves:
        for s in sorted(out.get("samples", {}).get(leaf, []), key=lambda s: s["doc_id"]):
            h.update(s.get("doc_hash", "").encode())
    return h.hexdigest()[:16]
