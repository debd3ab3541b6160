"""The runner: plans the matrix, runs it group by group through an executor, writes the records, resumes.

A group is the cells of one (model, backend, quant, load settings): its suites run against one load of the model
(``isolate="suite"``: one load per suite, as each cell had before). The executor (smallbench.executors) isolates the
group: a crash, OOM or hang is recorded as failed records and the run goes on. The runner alone writes records.
Finished cells are skipped on the next run unless ``force``; failed cells are retried.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from smallbench.backends import get_backend_class, known_quants
from smallbench.cell import CellSpec, GroupSpec
from smallbench.errors import SmallbenchError
from smallbench.executors import Executor, Interrupted, Job, LocalExecutor, sweep_temp
from smallbench.hardware import HardwareInfo
from smallbench.models import ResolvedModel
from smallbench.results import ModelRecord, ResultRecord, read_record, redact, sweep_partial, write_record
from smallbench.suites import get_suite

__all__ = ["Cell", "Interrupted", "execute", "finished", "new_run_id", "plan"]

LOG_DIR = ".logs"
#: Per-cell locks, beside the records (hidden: scans skip them).
LOCK_DIR = ".locks"


@dataclass
class Cell:
    spec: CellSpec
    path: Path

    @property
    def label(self) -> str:
        quant = f" [{self.spec.model.quant}]" if self.spec.model.quant else ""
        return redact(f"{self.spec.model.id}{quant} · {self.spec.backend} · {self.spec.suite}")


#: The longest a name part of a record file may be (the cell id keeps names unique; file systems stop at 255).
SLUG_MAX = 60


def _slug(text: str) -> str:
    """A file-name part: no token, only [A-Za-z0-9._-], never starting with '.' or '-' (a hidden or option-like
    name), at most SLUG_MAX characters (a long path keeps its end, the part that tells models apart)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", redact(text).replace("hf_***", "token")).strip("-._")
    return slug[-SLUG_MAX:].lstrip("-._") or "model"


def plan(
    models: list[ResolvedModel], backends: list[str], suites: list[str], settings: dict[str, Any],
    load: dict[str, Any], hardware: HardwareInfo, output: Path, run_id: str, quants: list[str] | None = None,
) -> list[Cell]:
    """Every (model, backend, quant, suite) combination, each with a stable id from what determines it.
    ``quants`` applies to backends that take one (GGUF file types...), each the ones it knows; the others run
    once."""
    cells = []
    pairs = [(name, q) for name in backends
             for q in (known_quants(name, quants) if quants and _takes_quant(name) else [None])]
    for m in models:
        for b, quant in pairs:
            load_q = {**load, "quant": quant} if quant else load
            for s in suites:
                model = ModelRecord(
                    id=m.id, source=m.source, revision=m.revision, weights_sha256=m.weights_sha256,
                    builtin=m.builtin, dummy=bool(load.get("dummy")), quant=quant,
                )
                spec = CellSpec(run_id=run_id, cell_id="", model=model, backend=b, suite=s,
                                settings=get_suite(s).settings(settings).model_dump(), load=load_q)
                spec.cell_id = cell_id(spec, hardware.fingerprint)
                cells.append(Cell(spec=spec, path=record_path(output, spec)))
    return cells


def cell_id(spec: CellSpec, fingerprint: str) -> str:
    """The cell's stable id: a hash of everything that determines its result, the hardware it runs on included
    (so a cell run on another machine, e.g. a Ray node, has its own id and its own record)."""
    key = {
        "model": spec.model.id, "revision": spec.model.revision, "weights": spec.model.weights_sha256,
        "backend": spec.backend, "suite": spec.suite, "settings": spec.settings, "load": spec.load,
        "hardware": fingerprint,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_path(output: Path, spec: CellSpec) -> Path:
    """``<model>__<backend>[-quant]__<suite>__<cell id>.json``: visible, token-free, bounded, unique per cell."""
    quant = spec.model.quant
    return output / f"{_slug(spec.model.id)}__{spec.backend}{'-' + _slug(quant) if quant else ''}__{spec.suite}__" \
                    f"{spec.cell_id}.json"


def _takes_quant(backend: str) -> bool:
    return get_backend_class(backend).takes_quant


def finished(cell: Cell, rerun_busy: bool = False) -> ResultRecord | None:
    """The cell's existing successful record, if any (with ``rerun_busy``, not one that ran on a busy machine)."""
    rec = _existing(cell.path)
    if rec is None or rec.status != "ok":
        return None
    return None if rerun_busy and rec.contention is not None and rec.contention.busy else rec


def _existing(path: Path) -> ResultRecord | None:
    """A cell's record file as it stands (ok or failed), or None when there is none or it is not a record."""
    try:
        return read_record(path) if path.exists() else None
    except SmallbenchError:
        return None


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def groups(cells: list[Cell], isolate: str = "group") -> list[list[int]]:
    """The cells' indices by group, in the order groups first appear: the cells of one (model, backend, quant, load
    settings), the suites that measure the process's memory first (before other suites' work has grown the
    process), the others in the order asked for. ``isolate="suite"``: every cell its own group."""
    if isolate == "suite":
        return [[i] for i in range(len(cells))]
    out: dict[str, list[int]] = {}
    for i, c in enumerate(cells):
        key = json.dumps([c.spec.model.model_dump(mode="json"), c.spec.backend, c.spec.load], sort_keys=True)
        out.setdefault(key, []).append(i)
    return [sorted(idx, key=lambda i: not get_suite(cells[i].spec.suite).runs_first) for idx in out.values()]


def execute(
    cells: list[Cell], timeout: float, force: bool, hardware: HardwareInfo, software: dict[str, str],
    on_start: Callable[[Cell], None] | None = None, on_done: Callable[[Cell, ResultRecord, bool], None] | None = None,
    on_wait: Callable[[Cell], None] | None = None, executor: Executor | None = None, isolate: str = "group",
    rerun_busy: bool = False,
) -> list[ResultRecord]:
    """Run the cells group by group (:func:`groups`) through ``executor`` (default: a local child process per
    group); returns one record per cell (reused ones included), in the cells' order. ``force`` re-runs cells that
    have a successful record, ``rerun_busy`` those whose record was flagged busy (``Contention.busy``).

    A cell runs under its lock (``.locks/`` in the results folder; the OS drops it when its holder dies), so two
    runs on one folder never run the same cell at once: a cell another live run holds is put off to the end, then
    waited for, and its record reused if it ended ok. SIGINT and SIGTERM raise :class:`Interrupted`."""
    executor = executor or LocalExecutor(hardware, software)
    sweep_temp()
    folders = {c.path.parent for c in cells}
    for folder in folders:
        if folder.is_dir():
            sweep_partial(folder)
    done: dict[int, ResultRecord] = {}

    def reuse(i: int, record: ResultRecord) -> None:
        done[i] = record
        if on_done:
            on_done(cells[i], record, True)

    def job(idx: list[int], check: bool) -> Job | None:
        """The group of these cells that have no good record yet (all of them unless ``check``)."""
        todo = []
        for i in idx:
            prior = finished(cells[i], rerun_busy) if check else None
            if prior is None:
                todo.append(i)
            else:
                reuse(i, prior)
        if not todo:
            return None

        def started(k: int) -> None:
            if on_start:
                on_start(cells[todo[k]])

        def emit(k: int, record: ResultRecord) -> None:
            i = todo[k]
            _store(_path_for(cells[i], record.cell_id), record)
            first = i not in done
            done[i] = record
            if first and on_done:
                on_done(cells[i], record, False)

        def reused(k: int, cell_id: str) -> None:
            rec = _existing(_path_for(cells[todo[k]], cell_id))
            if rec is not None:
                reuse(todo[k], rec)

        return Job(GroupSpec(cells=[cells[i].spec for i in todo]), _group_log(cells, todo), started, emit, reused)

    def done_ids() -> set[str]:
        from smallbench.results import scan_records

        return {r.cell_id for folder in folders for r in scan_records(folder)[0] if r.status == "ok"}

    with _stop_on_signals(), contextlib.ExitStack() as held:
        later, jobs = [], []
        for idx in groups(cells, isolate):
            mine = []
            with contextlib.ExitStack() as locks:
                for i in idx:
                    lock = _lock(cells[i])
                    try:
                        lock.acquire(timeout=0)
                    except Timeout:
                        later.append(i)
                        continue
                    locks.callback(lock.release)
                    mine.append(i)
                if (j := job(mine, check=not force)) is None:
                    continue
                if executor.parallel:  # all groups at once: their locks are held until the executor is done
                    held.push(locks.pop_all())
                    jobs.append(j)
                else:
                    executor.run_all([j], timeout, done_ids)
        if jobs:
            executor.run_all(jobs, timeout, done_ids)
        held.close()
        # cells another run held: wait for them (in one global order, so two runs never wait on each other), then
        # take its records where they ended ok, else run them
        for idx in groups([cells[i] for i in later], isolate):
            idx = [later[k] for k in idx]
            for i in idx:
                if on_wait:
                    on_wait(cells[i])
            with contextlib.ExitStack() as locks:
                for i in sorted(idx, key=lambda i: cells[i].path.name):
                    locks.enter_context(_lock(cells[i]))
                if (j := job(idx, check=True)) is not None:
                    executor.run_all([j], timeout, done_ids)
    return [done[i] for i in range(len(cells))]


def _path_for(cell: Cell, cell_id: str) -> Path:
    """Where a record of this cell goes: its planned path, or, run where the hardware differs (a Ray node), the path
    for the id it got there."""
    if cell_id == cell.spec.cell_id:
        return cell.path
    return record_path(cell.path.parent, cell.spec.model_copy(update={"cell_id": cell_id}))


def _store(path: Path, record: ResultRecord) -> None:
    """Write the cell's record, except a failure over a good record (a --force re-run's failure keeps the old)."""
    existing = _existing(path)
    if record.status == "ok" or existing is None or existing.status != "ok":
        write_record(record, path)


def _group_log(cells: list[Cell], idx: list[int]) -> Path:
    """One log per group run: ``.logs/<model>__<backend>[-quant]__<suite+suite>__<id>.log``."""
    first = cells[idx[0]]
    prefix = first.path.stem.rsplit("__", 2)[0]
    suites = "+".join(cells[i].spec.suite for i in idx)
    gid = hashlib.sha256("".join(cells[i].spec.cell_id for i in idx).encode()).hexdigest()[:16]
    return first.path.parent / LOG_DIR / f"{prefix}__{suites}__{gid}.log"


def _lock(cell: Cell) -> FileLock:
    folder = cell.path.parent / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f"{cell.path.stem}.lock")


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT (Ctrl-C) and SIGTERM (what ``timeout``, schedulers and ``kill`` send) stop the run: the running cell is
    stopped and recorded. Both are handled here even where the runner was started with SIGINT ignored (a background
    job of a script, a test harness), so that ``kill -INT`` does what the README says."""

    def handler(signum, _frame):
        raise Interrupted(signal.Signals(signum))

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
