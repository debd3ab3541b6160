"""One cell (model × backend × suite) in its own process: ``python -m smallbench.cell SPEC.json``.

The child loads the backend, runs the suite and writes its own result record atomically. Any
exception becomes a failed record with a one-line error (the traceback goes to the cell's log).
If the process dies outright, the parent runner writes the failed record instead.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from smallbench import __version__, energy
from smallbench.backends import Backend, BackendInfo, LoadedModelInfo, LoadSpec, get_backend_class
from smallbench.backends.base import CLI_OPTIONS
from smallbench.errors import SmallbenchError, one_line
from smallbench.hardware import (
    HardwareInfo,
    hardware_info,
    machine_bandwidth,
    measure_memory_bandwidth,
    software_versions,
)
from smallbench.results import LoadRecord, ModelRecord, ResultRecord, redact
from smallbench.suites import SuiteContext, get_suite
from smallbench.suites.base import Roofline, SuiteResult
from smallbench.telemetry import CpuWatch, MemorySampler


class CellSpec(BaseModel):
    run_id: str
    cell_id: str
    model: ModelRecord
    backend: str
    suite: str
    settings: dict[str, Any] = Field(default_factory=dict)
    load: dict[str, Any] = Field(default_factory=dict)  # LoadSpec fields other than ids


class GroupSpec(BaseModel):
    """Cells of one (model, backend, load) run in one process against one load of the model, in this order."""

    cells: list[CellSpec]


def requested_backend(spec: CellSpec) -> BackendInfo:
    """The backend of a cell that failed before it loaded: its name, and as flags the knobs the run asked for
    (``--enforce-eager``, ``--threads``), so that a failed load is counted against the engine config it tried and
    not against the defaults' (:func:`smallbench.backends.config_label`)."""
    options = spec.load.get("options") or {}
    return BackendInfo(name=spec.backend, flags={k: v for k, v in options.items() if k in CLI_OPTIONS})


def failed_record(
    spec: CellSpec, error: str, hardware: HardwareInfo | None, software: dict[str, str],
    backend: BackendInfo | None = None, started: float | None = None,
) -> ResultRecord:
    return ResultRecord(
        smallbench_version=__version__,
        cell_id=spec.cell_id,
        run_id=spec.run_id,
        status="failed",
        error=redact(error),
        suite=spec.suite,
        settings=spec.settings,
        model=spec.model,
        backend=backend or requested_backend(spec),
        hardware=hardware,
        software=software,
        duration_s=time.perf_counter() - started if started else None,
    )


def roofline(backend: BackendInfo, hardware: HardwareInfo, info: LoadedModelInfo,
             cpu_bandwidth: float | None) -> Roofline | None:
    """The decode roofline of the loaded model on the device it runs on: the GPU's peak bandwidth (NVML's clock ×
    bus width, else the table), the Apple chip's (table), or the CPU's, measured before the model loaded (an
    engine's idle threads spin for a while after work and would halve the measurement; the cell measures again
    after close and keeps the better). None where the backend does not know the model's config or weights size,
    or the device's bandwidth is unknown."""
    from smallbench import sizing

    if not info.config or not info.weights_bytes:
        return None
    device = (backend.device or "cpu").lower()
    if device.startswith("cuda") and hardware.gpus:
        bw, source = hardware.gpus[int(device.split(":")[1]) if ":" in device else 0].bandwidth()
    elif device in ("mps", "metal", "gpu") and hardware.apple:
        bw = sizing.table_bandwidth(hardware.apple.chip, hardware.apple.gpu_cores)
        source = f"table: {hardware.apple.chip}"
    else:
        bw = cpu_bandwidth
        source = "measured: best multi-threaded read of memory over a second before load and one after close"
    dtype = info.dtype if info.dtype in sizing.DTYPE_BYTES else "float16"  # llama.cpp / MLX quantized: f16 KV
    try:
        sizing.count_params(info.config)
    except SmallbenchError:
        return None
    return Roofline(bw, source, info.config, info.weights_bytes, dtype) if bw else None


#: Real faults for the fault-injection tests, never set in use: "KIND:SUITE:BACKEND[:QUANT],..." makes the matching
#: cell, once its model is loaded, crash in native code (segv), hang (hang) or allocate past a memory limit (oom);
#: "exit" makes the Ray worker that would run the cell's group exit (smallbench.ray_executor).
INJECT_ENV = "SMALLBENCH_INJECT_FAULT"


def injected(spec: CellSpec) -> list[str]:
    """The faults :data:`INJECT_ENV` asks of this cell."""
    kinds = []
    for item in filter(None, os.environ.get(INJECT_ENV, "").split(",")):
        kind, suite, backend, *quant = item.split(":")
        if (suite, backend, quant[0] if quant else spec.model.quant) == (spec.suite, spec.backend, spec.model.quant):
            kinds.append(kind)
    return kinds


def inject_fault(spec: CellSpec) -> None:
    for kind in injected(spec):
        if kind == "segv":
            import ctypes

            ctypes.string_at(0)  # a real SIGSEGV in native code
        elif kind == "hang":
            time.sleep(10**6)
        elif kind == "oom":  # a real address-space limit just above what the cell uses, then a 4 GiB allocation
            import resource

            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limits = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (used + 2**28, limits[1]))
            try:
                bytearray(2**32)
            finally:
                resource.setrlimit(resource.RLIMIT_AS, limits)


@dataclass
class Opened:
    """A loaded backend: the engine, what it knows about the weights, and what loading cost (time, memory)."""

    backend: Backend
    info: LoadedModelInfo
    load: LoadRecord


@contextlib.contextmanager
def opened(backend: str, spec: LoadSpec, before_load: Callable[[], None] | None = None) -> Iterator[Opened]:
    """Load ``spec`` on ``backend`` and close it on leaving. The library import and ``prepare`` (conversions,
    downloads) are not part of load time or load memory; ``before_load`` runs between them and the load."""
    cls = get_backend_class(backend)
    if (why := cls.missing()) is not None:
        raise SmallbenchError(why)
    b = cls()
    b.import_library()
    b.prepare(spec)
    if before_load is not None:
        before_load()
    with MemorySampler(interval=0.05) as mem:
        t0 = time.perf_counter()
        info = b.load(spec)
        seconds = time.perf_counter() - t0
    p = mem.peaks
    load = LoadRecord(seconds=seconds, rss_before_bytes=p.rss_start_bytes, rss_after_bytes=p.rss_end_bytes,
                      rss_peak_bytes=p.rss_peak_bytes)
    try:
        yield Opened(b, info, load)
    finally:
        b.close()


def open_backend(model: str = "tiny-llama", backend: str = "transformers", *, quant: str | None = None,
                 revision: str | None = None, **load: Any) -> contextlib.AbstractContextManager[Opened]:
    """A loaded backend for notebooks, benchmarks and tests, resolved and loaded the way a run loads it::

        with smallbench.open_backend("tiny-llama", "llama-cpp", quant="Q8_0") as m:
            trace = m.backend.stream(m.backend.tokenize("Hello"), 16)

    ``load`` takes :class:`LoadSpec`'s fields (``device``, ``dtype``, ``dummy``, ``trust_remote_code``, ``options``).
    """
    from smallbench import validate
    from smallbench.models import resolve

    validate.check_choice("device", load.get("device", "auto"), validate.DEVICE)  # as the CLI checks them
    validate.check_choice("dtype", load.get("dtype", "auto"), validate.DTYPES)
    m = resolve(model, revision, load.get("dummy", False), load.get("trust_remote_code", False))
    return opened(backend, LoadSpec(model_id=m.id, source=m.source, revision=m.revision, quant=quant, **load))


def run_group(group: GroupSpec, emit: Callable[[int, ResultRecord | None], None]) -> None:
    """Run a group's suites, in order, against one load of its model. ``emit(i, None)`` announces cell ``i``
    (before the load for the first); ``emit(i, record)`` hands back its record (ok or failed). A suite that raises
    fails alone; a load that fails fails every cell. Where the CPU's bandwidth is measured, a roofline record is
    emitted twice: first with the measurement before the load, then against this machine's peak, which takes in
    the better of it and one after the engine closed (the caller keeps the last)."""
    started = time.perf_counter()
    hardware, software = hardware_info(), software_versions()
    first = group.cells[0]
    suites = [get_suite(c.suite) for c in group.cells]
    bandwidth: list[float] = []
    backend_info, roofs, recorded = None, [], set()

    def record(i: int, rec: ResultRecord) -> None:
        recorded.add(i)
        emit(i, rec)

    def before_load() -> None:
        if any(s.uses_roofline for s in suites):
            bandwidth.append(measure_memory_bandwidth())

    emit(0, None)
    try:
        load_spec = LoadSpec(model_id=first.model.id, source=first.model.source or first.model.id,
                             revision=first.model.revision, **first.load)
        with opened(first.backend, load_spec, before_load) as m:
            backend_info = m.backend.describe()
            meter = energy.meter_for(backend_info.device)
            for i, (spec, suite) in enumerate(zip(group.cells, suites, strict=True)):
                if i:
                    emit(i, None)
                t0 = time.perf_counter()
                try:
                    inject_fault(spec)
                    settings = suite.settings(spec.settings)
                    roof = roofline(backend_info, hardware, m.info, bandwidth[0]) if suite.uses_roofline else None
                    ctx = SuiteContext(load=m.load, model_info=m.info, roofline=roof, energy=meter,
                                       device=backend_info.device or "cpu")
                    with CpuWatch() as watch:
                        result = suite.run(m.backend, settings, ctx)
                except Exception as exc:
                    traceback.print_exc()
                    record(i, failed_record(spec, one_line(exc), hardware, software, backend_info, t0))
                    continue
                model = spec.model.model_copy(update={
                    "params_total": m.info.params_total, "params_active": m.info.params_active, "dtype": m.info.dtype,
                    "quant": m.info.quant or spec.model.quant,
                })
                rec = ResultRecord(
                    smallbench_version=__version__, cell_id=spec.cell_id, run_id=spec.run_id, status="ok",
                    suite=spec.suite, settings=settings.model_dump(), model=model, backend=backend_info,
                    hardware=hardware, software=software, load=m.load, metrics=result.metrics, samples=result.samples,
                    extra=result.extra, duration_s=time.perf_counter() - t0 + (m.load.seconds if not i else 0.0),
                    contention=watch.contention,
                )
                if roof is None:
                    record(i, rec)
                    continue
                roofs.append((i, rec, result, roof))
                measured = roof.source.startswith("measured")
                record(i, _with_roofline(rec, result, roof, roof.bandwidth_bytes_s,
                                         BEFORE_LOAD if measured else roof.source))
    except Exception as exc:  # the load (or the close) failed: every cell not yet recorded fails with it
        traceback.print_exc()
        for i, spec in enumerate(group.cells):
            if i not in recorded:
                record(i, failed_record(spec, one_line(exc), hardware, software, backend_info, started))
        return
    # a CPU measurement disturbed by anything else running is retaken with no engine up; the roofline records are
    # sent again against this machine's peak: the better of the two, kept with earlier runs' (their best)
    if any(r.source.startswith("measured") for *_, r in roofs):
        this_run = max(bandwidth[0], measure_memory_bandwidth())
        peak, reads, since = machine_bandwidth(hardware.fingerprint, [this_run])
        source = MACHINE_BEST.format(reads=reads, since=since)
        for i, rec, result, roof in roofs:  # one backend per group: all of them measured
            emit(i, _with_roofline(rec, result, roof, peak, source, this_run))


#: The roofline's source while only the measurement before the load is in (the one after close comes at the end).
BEFORE_LOAD = "measured: best multi-threaded read of memory over a second before the load"
#: The roofline's final source on a CPU: this machine's best (smallbench.hardware.machine_bandwidth).
MACHINE_BEST = ("measured: best multi-threaded read of memory on this machine, {reads} runs since {since}; this run's "
                "is the better of a second before load and one after close")


def _with_roofline(rec: ResultRecord, result: SuiteResult, roof: Roofline, bandwidth: float,
                   source: str, this_run: float | None = None) -> ResultRecord:
    """The record with ``decode_bandwidth_pct`` at ``bandwidth`` (the suite's own result and roofline stay
    unfinished, so that a better bandwidth can be applied later); ``this_run``: the run's own measurement, kept."""
    result, roof = copy.deepcopy((result, roof))
    roof.source = source
    roof.finish(bandwidth)
    if this_run is not None:
        result.extra["roofline"]["this_run_bytes_s"] = this_run
    return rec.model_copy(update={"metrics": result.metrics, "samples": result.samples, "extra": result.extra})


def _end_group() -> None:
    os.killpg(0, signal.SIGKILL)  # this cell and every engine process it started; nothing is written


def tie_to_runner() -> None:
    """A cell started by the runner (its own process group, SMALLBENCH_RUNNER_PID set) ends its whole group when
    the runner stops it (SIGTERM) or dies (PR_SET_PDEATHSIG on Linux; elsewhere a watch of the parent pid), so no
    engine goes on without its timeout and no result arrives after the run has ended."""
    runner = os.environ.get("SMALLBENCH_RUNNER_PID")
    if not runner or os.getpgid(0) != os.getpid():
        return  # run by hand: leave the caller's process group alone
    signal.signal(signal.SIGTERM, lambda *_: _end_group())
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while True:
            if os.getppid() != int(runner):
                _end_group()
            time.sleep(1.0)

    threading.Thread(target=watch, name="smallbench-runner-watch", daemon=True).start()


#: The file descriptor on which a cell started by the runner sends its messages (JSON lines).
CHANNEL_ENV = "SMALLBENCH_CHANNEL_FD"


def main(argv: list[str]) -> int:
    """``python -m smallbench.cell GROUP.json``: run the group, send each message to the runner as a JSON line
    (``{"start": i}``, ``{"record": i, "data": {...}}``); the runner alone writes records."""
    tie_to_runner()
    group = GroupSpec.model_validate_json(Path(argv[1]).read_text(encoding="utf-8"))
    channel = os.fdopen(int(os.environ[CHANNEL_ENV]), "w", encoding="utf-8")
    failed = False

    def emit(i: int, record: ResultRecord | None) -> None:
        nonlocal failed
        failed |= record is not None and record.status != "ok"
        msg = {"start": i} if record is None else {"record": i, "data": record.model_dump(mode="json")}
        channel.write(json.dumps(msg) + "\n")
        channel.flush()

    run_group(group, emit)
    channel.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
