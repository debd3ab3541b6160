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
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallbench.backends import get_backend_class
from smallbench.cell import CellSpec, failed_record
from smallbench.errors import SmallbenchError
from smallbench.hardware import HardwareInfo
from smallbench.models import ResolvedModel
from smallbench.results import ModelRecord, ResultRecord, read_record, write_record
from smallbench.suites import get_suite

LOG_DIR = ".logs"
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
        return f"{self.spec.model.id}{quant} · {self.spec.backend} · {self.spec.suite}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", text).strip("-") or "model"


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
    if not cell.path.exists():
        return None
    try:
        rec = read_record(cell.path)
    except SmallbenchError:
        return None
    return rec if rec.status == "ok" else None


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


def run_one(cell: Cell, timeout: float, hardware: HardwareInfo, software: dict[str, str]) -> ResultRecord:
    """Run one cell in a child process; always returns the cell's record (ok or failed)."""
    cell.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(cell.spec.model_dump_json())
        spec_file = f.name
    error = None
    try:
        with open(cell.log, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "smallbench.cell", spec_file],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                error = f"timed out after {timeout:g} s"
            except KeyboardInterrupt:
                _kill_group(proc)
                raise
            else:
                _kill_group(proc, grace=0)  # reap anything the cell left running
                if code < 0:
                    error = _signal_reason(cell, signal.Signals(-code))
                elif code not in (0, 1):
                    error = f"cell process exited with code {code}"
    finally:
        Path(spec_file).unlink(missing_ok=True)
    record = None
    if cell.path.exists():
        try:
            record = read_record(cell.path)
        except SmallbenchError:
            record = None
    if record is not None and record.run_id == cell.spec.run_id and error is None:
        return record
    if error is None:
        error = "cell process ended without writing a result"
    tail = _log_tail(cell.log)
    if tail:
        error += f"; log: {tail[-300:]}"
    record = failed_record(cell.spec, error, hardware, software, started=started)
    write_record(record, cell.path)
    return record


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def execute(
    cells: list[Cell], timeout: float, force: bool, hardware: HardwareInfo, software: dict[str, str],
    on_start: Callable[[Cell], None] | None = None, on_done: Callable[[Cell, ResultRecord, bool], None] | None = None,
) -> list[ResultRecord]:  # fmt: skip
    """Run the cells in order; returns one record per cell (reused ones included)."""
    records = []
    for cell in cells:
        prior = None if force else finished(cell)
        if prior is not None:
            records.append(prior)
            if on_done:
                on_done(cell, prior, True)
            continue
        if on_start:
            on_start(cell)
        rec = run_one(cell, timeout, hardware, software)
        records.append(rec)
        if on_done:
            on_done(cell, rec, False)
    return records
