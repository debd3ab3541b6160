"""The runner: plans the matrix, runs each cell in its own process with a timeout, resumes.

Isolation is the runner's job alone: a crash, OOM or hang inside one cell is recorded as that
cell's failed record and the run goes on. Finished cells are skipped on the next run unless
``force``; failed cells are retried.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from smallbench.backends import get_backend_class
from smallbench.cell import CellSpec, failed_record
from smallbench.errors import SmallbenchError
from smallbench.hardware import HardwareInfo
from smallbench.models import ResolvedModel
from smallbench.paths import SCRATCH_ENV
from smallbench.results import ModelRecord, ResultRecord, read_record, redact, sweep_partial, write_record
from smallbench.suites import get_suite

LOG_DIR = ".logs"
#: Per-cell locks, beside the records (hidden: scans skip them).
LOCK_DIR = ".locks"
#: Per-cell temp folders: ``smallbench-cell-<runner pid>-<random>`` in the system temp folder.
TMP_PREFIX = "smallbench-cell-"
#: Signals by which native code dies (a segfault in an engine), as opposed to being killed (OOM, timeout).
NATIVE_CRASH = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}


@dataclass
class Cell:
    spec: CellSpec
    path: Path
    log: Path

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
) -> list[Cell]:  # fmt: skip
    """Every (model, backend, quant, suite) combination, each with a stable id from what determines it.
    ``quants`` applies to backends that take one (GGUF file types...); the others run once."""
    cells = []
    for m in models:
        for b, quant in [(name, q) for name in backends for q in (quants if quants and _takes_quant(name) else [None])]:
            load_q = {**load, "quant": quant} if quant else load
            for s in suites:
                suite_settings = get_suite(s).settings(settings).model_dump()
                key = {
                    "model": m.id, "revision": m.revision, "weights": m.weights_sha256, "backend": b, "suite": s,
                    "settings": suite_settings, "load": load_q, "hardware": hardware.fingerprint,
                }  # fmt: skip
                cell_id = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
                name = f"{_slug(m.id)}__{b}{'-' + _slug(quant) if quant else ''}__{s}__{cell_id}"
                path = output / f"{name}.json"
                model = ModelRecord(
                    id=m.id, source=m.source, revision=m.revision, weights_sha256=m.weights_sha256,
                    builtin=m.builtin, dummy=bool(load.get("dummy")), quant=quant,
                )  # fmt: skip
                spec = CellSpec(run_id=run_id, cell_id=cell_id, record_path=str(path), model=model, backend=b,
                                suite=s, settings=suite_settings, load=load_q)  # fmt: skip
                cells.append(Cell(spec=spec, path=path, log=output / LOG_DIR / f"{name}.log"))
    return cells


def _takes_quant(backend: str) -> bool:
    return get_backend_class(backend).takes_quant


def finished(cell: Cell) -> ResultRecord | None:
    """The cell's existing successful record, if any."""
    rec = _existing(cell)
    return rec if rec is not None and rec.status == "ok" else None


def _log_tail(log: Path, lines: int = 1) -> str:
    try:
        text = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the cell's whole process group (engines it spawned included), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break  # the group is empty
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    proc.wait()


def _signal_reason(cell: Cell, sig: signal.Signals) -> str:
    """Why the cell died, with its backend's advice when native code crashed."""
    reason = f"cell process killed by signal {sig.name}"
    if sig == signal.SIGKILL:
        return reason + " (out of memory?)"
    if sig in NATIVE_CRASH:
        hint = get_backend_class(cell.spec.backend).crash_hint(cell.spec.load.get("options", {}))
        return reason + f" in native code{'; ' + hint if hint else ''}"
    return reason


class Interrupted(KeyboardInterrupt):
    """The runner was told to stop (SIGINT or SIGTERM): the running cell is stopped and recorded as failed."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig.name)
        self.signal = sig


def _cell_env(tmp: str) -> dict[str, str]:
    """The child's environment: its temp files go in the runner's per-cell folder (removed after the cell, whatever
    happens to it), and it knows its runner, so that it ends itself if the runner dies."""
    return {**os.environ, SCRATCH_ENV: tmp, "SMALLBENCH_RUNNER_PID": str(os.getpid())}


def run_one(cell: Cell, timeout: float, hardware: HardwareInfo, software: dict[str, str]) -> ResultRecord:
    """Run one cell in a child process; always returns the cell's record (ok or failed). On an interruption the
    cell's process group is stopped, its failed record written, and the interruption raised again."""
    cell.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-")
    spec_file = Path(tmp) / "cell.json"
    spec_file.write_text(cell.spec.model_dump_json(), encoding="utf-8")
    error, stop = None, None
    try:
        with open(cell.log, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "smallbench.cell", str(spec_file)], env=_cell_env(tmp),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                error = f"timed out after {timeout:g} s"
            except KeyboardInterrupt as exc:
                _kill_group(proc, grace=2.0)
                stop = exc
                error = f"interrupted by {exc.signal.name if isinstance(exc, Interrupted) else 'SIGINT'}"
            else:
                _kill_group(proc, grace=0)  # reap anything the cell left running
                if code < 0:
                    error = _signal_reason(cell, signal.Signals(-code))
                elif code not in (0, 1):
                    error = f"cell process exited with code {code}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _scrub_log(cell.log)
    existing = _existing(cell)
    if existing is not None and existing.run_id == cell.spec.run_id and error is None:
        return existing
    if error is None:
        error = "cell process ended without writing a result"
    tail = _log_tail(cell.log)
    if tail and stop is None:
        error += f"; log: {tail[-300:]}"
    record = failed_record(cell.spec, error, hardware, software, started=started)
    if existing is None or existing.status != "ok":  # a failure never replaces a good record (a --force re-run's)
        write_record(record, cell.path)
    if stop is not None:
        raise stop
    return record


def _existing(cell: Cell) -> ResultRecord | None:
    """The cell's record file as it stands (ok or failed), or None when there is none or it is not a record."""
    try:
        return read_record(cell.path) if cell.path.exists() else None
    except SmallbenchError:
        return None


def _scrub_log(log: Path) -> None:
    """Token-shaped strings out of a cell's log (an argument, a traceback's locals)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = log.read_text(encoding="utf-8")
        if redact(text) != text:
            log.write_text(redact(text), encoding="utf-8")


def sweep_temp() -> None:
    """Remove per-cell temp folders whose runner is gone (one killed with SIGKILL cannot clean up after itself)."""
    for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*"):
        pid = d.name.removeprefix(TMP_PREFIX).split("-")[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def execute(
    cells: list[Cell], timeout: float, force: bool, hardware: HardwareInfo, software: dict[str, str],
    on_start: Callable[[Cell], None] | None = None, on_done: Callable[[Cell, ResultRecord, bool], None] | None = None,
    on_wait: Callable[[Cell], None] | None = None,
) -> list[ResultRecord]:  # fmt: skip
    """Run the cells in order; returns one record per cell (reused ones included), in the cells' order.

    A cell is run under its lock (``.locks/`` in the results folder; the OS drops it when its holder dies), so two
    runs on one folder never run the same cell at once: a cell another live run holds is put off to the end, then
    waited for, and its record reused if it ended ok. SIGTERM is handled like Ctrl-C (:class:`Interrupted`)."""
    sweep_temp()
    for folder in {c.path.parent for c in cells if c.path.parent.is_dir()}:
        sweep_partial(folder)
    done: dict[int, ResultRecord] = {}

    def one(i: int, cell: Cell, reuse: bool) -> None:
        prior = finished(cell) if reuse else None
        if prior is not None:
            done[i] = prior
            if on_done:
                on_done(cell, prior, True)
            return
        if on_start:
            on_start(cell)
        done[i] = run_one(cell, timeout, hardware, software)
        if on_done:
            on_done(cell, done[i], False)

    with _stop_on_sigterm():
        later = []
        for i, cell in enumerate(cells):
            lock = _lock(cell)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                later.append((i, cell))
                continue
            try:
                one(i, cell, reuse=not force)
            finally:
                lock.release()
        for i, cell in later:  # another run held it: wait, then take its record if it ended ok, else run it
            if on_wait:
                on_wait(cell)
            with _lock(cell):
                one(i, cell, reuse=True)
    return [done[i] for i in range(len(cells))]


def _lock(cell: Cell) -> FileLock:
    folder = cell.path.parent / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f"{cell.path.stem}.lock")


@contextlib.contextmanager
def _stop_on_sigterm():
    """SIGTERM (what ``timeout``, schedulers and ``kill`` send) stops the run the way Ctrl-C does."""

    def handler(signum, _frame):
        raise Interrupted(signal.Signals(signum))

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
