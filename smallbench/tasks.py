"""Accuracy tasks: smallbench's task names, the lm-eval tasks behind them, and offline data.

Task definitions (prompts, few-shot, metrics) are lm-eval's own YAML files. smallbench only picks
which folders of ``lm_eval/tasks`` to index (indexing all of them takes ~15 s) and, with
``--data-dir``, points each task at local HF-format files instead of the Hub: for every leaf task it
writes a one-line-of-override YAML that ``include``s lm-eval's file and replaces the dataset source,
so groups (``mmlu``, ``blimp``) keep their own aggregation. The expected layout is in
``docs/accuracy.md`` and in :data:`TASKS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallbench.errors import SmallbenchError

DATA_EXTS = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class TaskSpec:
    name: str  # smallbench's name
    lm_eval: str  # lm-eval task or group
    dirs: tuple[str, ...]  # folders of lm_eval/tasks that define it
    folder: str  # its folder under --data-dir (the Hub dataset's repo name)
    fields: tuple[str, ...]  # columns every row needs
    raw_text: tuple[str, ...] = ()  # WikiText's original release files, accepted as well


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("arc_easy", "arc_easy", ("arc",), "ai2_arc", ("question", "choices", "answerKey")),
    TaskSpec("arc_challenge", "arc_challenge", ("arc",), "ai2_arc", ("question", "choices", "answerKey")),
    TaskSpec("hellaswag", "hellaswag", ("hellaswag",), "hellaswag",
             ("ctx_a", "ctx_b", "activity_label", "endings", "label")),
    TaskSpec("piqa", "piqa", ("piqa",), "piqa", ("goal", "sol1", "sol2", "label")),
    TaskSpec("winogrande", "winogrande", ("winogrande",), "winogrande", ("sentence", "option1", "option2", "answer")),
    TaskSpec("mmlu", "mmlu", ("mmlu/default",), "mmlu", ("question", "choices", "answer")),
    TaskSpec("gsm8k", "gsm8k", ("gsm8k",), "gsm8k", ("question", "answer")),
    TaskSpec("blimp", "blimp", ("blimp",), "blimp", ("sentence_good", "sentence_bad")),
    TaskSpec("wikitext", "wikitext", ("wikitext",), "wikitext", ("page",),
             raw_text=("wikitext-2-raw/wiki.{split}.raw", "wikitext/wiki.{split}.raw")),
)}


def resolve_tasks(names: list[str]) -> list[TaskSpec]:
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise SmallbenchError(f"unknown task '{unknown[0]}'; choose from: {', '.join(TASKS)}")
    if not names:
        raise SmallbenchError(f"--tasks needs at least one task; choose from: {', '.join(TASKS)}")
    return [TASKS[n] for n in dict.fromkeys(names)]


def lm_eval_task_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


# -- lm-eval's configs -------------------------------------------------------------------------
@dataclass
class Leaf:
    """One lm-eval task (a group's member or a task on its own) and where its data comes from."""

    name: str
    yaml_path: Path
    config: dict[str, Any]  # its YAML with includes resolved, functions left as text

    @property
    def dataset_name(self) -> str | None:
        return self.config.get("dataset_name")

    def eval_split(self) -> str | None:
        return self.config.get("test_split") or self.config.get("validation_split")

    def fewshot_split(self) -> str | None:
        c = self.config
        return c.get("fewshot_split") or c.get("training_split") or c.get("validation_split")

    def num_fewshot(self, override: int | None) -> int:
        return override if override is not None else int(self.config.get("num_fewshot") or 0)


def leaves(spec: TaskSpec) -> list[Leaf]:
    """Expand a task or group into its leaf tasks, reading lm-eval's index (no dataset access)."""
    from lm_eval.tasks._index import Kind, TaskIndex
    from lm_eval.tasks._yaml_loader import load_yaml

    index = TaskIndex.build([lm_eval_task_dir() / d for d in spec.dirs])
    out: dict[str, Leaf] = {}

    def walk(name: str) -> None:
        entry = index[name]
        if entry.kind == Kind.TAG:
            for member in sorted(entry.tags):
                walk(member)
        elif entry.kind == Kind.GROUP:
            for member in entry.cfg.get("task", []):
                walk(member if isinstance(member, str) else member.get("task") or member["group"])
        else:
            out[name] = Leaf(name, entry.yaml_path, load_yaml(entry.yaml_path, resolve_func=False))

    walk(spec.lm_eval)
    return list(out.values())


# -- local data --------------------------------------------------------------------------------
def _split_files(root: Path, spec: TaskSpec, leaf: Leaf, split: str, single_leaf: bool) -> list[Path]:
    """Files for one split, first match wins (see docs/accuracy.md)."""
    base = root / spec.folder
    cfg = leaf.dataset_name
    dirs = ([base / cfg] if cfg else []) + ([base, base / "data"] if single_leaf or not cfg else [])
    for d in dirs:
        for ext in DATA_EXTS:
            if (f := d / f"{split}{ext}").is_file():
                return [f]
            if shards := sorted(d.glob(f"{split}-*{ext}")):
                return shards
    if cfg and len(_used_splits(leaf)) == 1:  # a one-split dataset may be one file named after its config
        for ext in DATA_EXTS:
            if (f := base / f"{cfg}{ext}").is_file():
                return [f]
    for pattern in spec.raw_text:
        if (f := root / pattern.format(split=split)).is_file():
            return [f]
    return []


def _used_splits(leaf: Leaf) -> set[str]:
    keys = ("training_split", "validation_split", "test_split", "fewshot_split")
    return {leaf.config[k] for k in keys if leaf.config.get(k)}


def _expected(spec: TaskSpec, leaf: Leaf, split: str) -> str:
    where = f"{spec.folder}/{leaf.dataset_name}" if leaf.dataset_name else spec.folder
    return f"{where}/{split}.{{jsonl,json,parquet}}"


def read_text(path: Path) -> str:
    """A data file's text; one that is not UTF-8 is a one-line error naming the file and the byte."""
    try:
        return path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise SmallbenchError(f"data file {path} is not UTF-8 (byte {exc.start}: {exc.reason})") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of one data file; a malformed file raises a one-line :class:`SmallbenchError`."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:
            raise SmallbenchError(f"malformed Parquet file {path}: {exc}") from None
    text = read_text(path)
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SmallbenchError(f"malformed JSON file {path}: {exc}") from None
    else:
        rows = []
        # JSON Lines are separated by "\n" alone: str.splitlines() would also split at U+2028, U+2029,
        # U+0085 and others, which are legal inside a JSON string (real MMLU files contain U+2028).
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SmallbenchError(f"malformed JSON Lines file {path} line {n}: {exc.msg}") from None
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise SmallbenchError(f"malformed data file {path}: row {n} is not a JSON object")
    return rows


def wikitext_pages(raw: str) -> list[dict[str, str]]:
    """Split a WikiText release file into articles the way the Hub's ``wikitext_document_level``
    does: a new page starts at each top-level heading line (`` = Title = ``)."""
    pages, lines = [], []
    for line in raw.split("\n"):
        flat = line.replace("= = =", "===").replace("= =", "==").strip()
        if flat.startswith("= ") and flat.endswith(" ="):
            page = "\n".join(lines)
            if page.strip():
                pages.append({"page": page})
            lines = []
        lines.append(line)
    page = "\n".join(lines)
    if page.strip():
        pages.append({"page": page})
    return pages


@dataclass
class LocalSplit:
    files: list[Path]
    rows: int


def check_leaf_data(root: Path, spec: TaskSpec, leaf: Leaf, num_fewshot: int | None,
                    single_leaf: bool) -> dict[str, LocalSplit]:
    """Find and validate the local files of every split the leaf uses; one-line errors."""
    needed = {leaf.eval_split()}
    if leaf.num_fewshot(num_fewshot) > 0:
        needed.add(leaf.fewshot_split())
    found: dict[str, LocalSplit] = {}
    for split in sorted(_used_splits(leaf)):
        files = _split_files(root, spec, leaf, split, single_leaf)
        if not files:
            if split in needed:
                role = "evaluation" if split == leaf.eval_split() else "few-shot"
                raise SmallbenchError(f"--data-dir {root}: task '{spec.name}' ({leaf.name}) needs its {role} split "
                                      f"'{split}': no {_expected(spec, leaf, split)}")
            continue
        n = 0
        for f in files:
            if f.suffix == ".raw":
                n += len(wikitext_pages(read_text(f)))
                continue
            rows = read_rows(f)
            for i, row in enumerate(rows, 1):
                if missing := [k for k in spec.fields if k not in row]:
                    raise SmallbenchError(f"malformed data file {f}: row {i} lacks field '{missing[0]}' "
                                          f"(task '{spec.name}' needs {', '.join(spec.fields)})")
            n += len(rows)
        if n == 0:
            raise SmallbenchError(f"data file {files[0]} for task '{spec.name}' ({leaf.name}) has no rows")
        found[split] = LocalSplit(files, n)
    return found


def local_data(specs: list[TaskSpec], data_dir: Path, num_fewshot: int | None):
    """(leaf, its validated local splits) for every leaf task of these tasks; one-line errors."""
    if not data_dir.is_dir():
        raise SmallbenchError(f"--data-dir {data_dir} is not a folder")
    for spec in specs:
        ls = leaves(spec)
        for leaf in ls:
            yield leaf, check_leaf_data(data_dir, spec, leaf, num_fewshot, single_leaf=len(ls) == 1)


def check_data(specs: list[TaskSpec], data_dir: Path, num_fewshot: int | None) -> None:
    """Validate ``--data-dir`` for these tasks before anything runs."""
    for _ in local_data(specs, data_dir, num_fewshot):
        pass


def task_manager(specs: list[TaskSpec], data_dir: Path | None, num_fewshot: int | None, workdir: Path):
    """An lm-eval TaskManager that knows these tasks; with ``data_dir``, reading local files only."""
    import logging

    import yaml
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval.tasks._index").setLevel(logging.ERROR)  # our overrides are deliberate

    paths: list[Path] = [lm_eval_task_dir() / d for spec in specs for d in spec.dirs]
    if data_dir is not None:
        overrides = workdir / "tasks"
        overrides.mkdir(parents=True, exist_ok=True)
        for leaf, splits in local_data(specs, data_dir, num_fewshot):
            cfg = _local_config(leaf, splits, workdir)
            (overrides / f"{leaf.name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        paths.append(overrides)
    return TaskManager(include_path=[str(p) for p in dict.fromkeys(paths)], include_defaults=False)


def _local_config(leaf: Leaf, splits: dict[str, LocalSplit], workdir: Path) -> dict[str, Any]:
    data_files: dict[str, list[str]] = {}
    for split, local in splits.items():
        files = []
        for f in local.files:
            if f.suffix == ".raw":  # WikiText release file -> the Hub's one-page-per-row JSONL
                out = workdir / "data" / leaf.name / f"{split}.jsonl"
                out.parent.mkdir(parents=True, exist_ok=True)
                pages = wikitext_pages(read_text(f))
                out.write_text("".join(json.dumps(p) + "\n" for p in pages), encoding="utf-8")
                f = out
            files.append(str(f.resolve()))
        data_files[split] = files
    kinds = {Path(f).suffix for fs in data_files.values() for f in fs}
    if len(kinds) > 1:
        raise SmallbenchError(f"task {leaf.name}: mixed data file formats {sorted(kinds)}; use one format")
    cfg: dict[str, Any] = {
        "include": str(leaf.yaml_path),
        "task": leaf.name,
        "dataset_path": "parquet" if kinds == {".parquet"} else "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": data_files},
    }
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if leaf.config.get(key) and leaf.config[key] not in splits:
            cfg[key] = None  # not provided locally and not needed: don't let lm-eval look for it
    return cfg
