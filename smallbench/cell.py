"""One cell (model × backend × suite) in its own process: ``python -m smallbench.cell SPEC.json``.

The child loads the backend, runs the suite and writes its own result record atomically. Any
exception becomes a failed record with a one-line error (the traceback goes to the cell's log).
If the process dies outright, the parent runner writes the failed record instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from smallbench import __version__, energy
from smallbench.backends import BackendInfo, LoadedModelInfo, LoadSpec, get_backend_class
from smallbench.errors import SmallbenchError, one_line
from smallbench.hardware import HardwareInfo, hardware_info, measure_memory_bandwidth, software_versions
from smallbench.results import LoadRecord, ModelRecord, ResultRecord, redact, write_record
from smallbench.suites import SuiteContext, get_suite
from smallbench.suites.base import Roofline
from smallbench.telemetry import MemorySampler


class CellSpec(BaseModel):
    run_id: str
    cell_id: str
    record_path: str
    model: ModelRecord
    backend: str
    suite: str
    settings: dict[str, Any] = Field(default_factory=dict)
    load: dict[str, Any] = Field(default_factory=dict)  # LoadSpec fields other than ids


def failed_record(
    spec: CellSpec, error: str, hardware: HardwareInfo | None, software: dict[str, str],
    backend: BackendInfo | None = None, started: float | None = None,
) -> ResultRecord:  # fmt: skip
    return ResultRecord(
        smallbench_version=__version__,
        cell_id=spec.cell_id,
        run_id=spec.run_id,
        status="failed",
        error=redact(error),
        suite=spec.suite,
        settings=spec.settings,
        model=spec.model,
        backend=backend or BackendInfo(name=spec.backend),
        hardware=hardware,
        software=software,
        duration_s=time.perf_counter() - started if started else None,
    )


def roofline(backend: BackendInfo, hardware: HardwareInfo, info: LoadedModelInfo,
             cpu_bandwidth: float | None) -> Roofline | None:  # fmt: skip
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
        gpu = hardware.gpus[int(device.split(":")[1]) if ":" in device else 0]
        bw, source = gpu.peak_bandwidth_bytes_s, f"NVML: {gpu.name} memory clock × bus width"
        if not bw:
            bw, source = sizing.table_bandwidth(gpu.name), f"table: {gpu.name}"
    elif device in ("mps", "metal", "gpu") and hardware.apple:
        bw = sizing.table_bandwidth(hardware.apple.chip, hardware.apple.gpu_cores)
        source = f"table: {hardware.apple.chip}"
    else:
        bw, source = cpu_bandwidth, "measured: multi-threaded memory copy, best of before load and after close"
    dtype = info.dtype if info.dtype in sizing.DTYPE_BYTES else "float16"  # llama.cpp / MLX quantized: f16 KV
    try:
        sizing.count_params(info.config)
    except SmallbenchError:
        return None
    return Roofline(bw, source, info.config, info.weights_bytes, dtype) if bw else None


#: Real faults for the fault-injection tests, never set in use: "KIND:SUITE:BACKEND[:QUANT],..." makes the matching
#: cell, once its model is loaded, crash in native code (segv), hang (hang) or allocate past a memory limit (oom).
INJECT_ENV = "SMALLBENCH_INJECT_FAULT"


def inject_fault(spec: CellSpec) -> None:
    for item in filter(None, os.environ.get(INJECT_ENV, "").split(",")):
        kind, suite, backend, *quant = item.split(":")
        if (suite, backend, quant[0] if quant else spec.model.quant) != (spec.suite, spec.backend, spec.model.quant):
            continue
        if kind == "segv":
            import ctypes

            ctypes.string_at(0)  # a real SIGSEGV in native code
        elif kind == "hang":
            time.sleep(10**6)
        elif kind == "oom":  # a real address-space limit just above what the cell uses, then a 4 GiB allocation
            import resource

            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (used + 2**28, resource.getrlimit(resource.RLIMIT_AS)[1]))
            bytearray(2**32)


def run_cell(spec: CellSpec) -> ResultRecord:
    started = time.perf_counter()
    hardware, software = hardware_info(), software_versions()
    backend_info = None
    try:
        cls = get_backend_class(spec.backend)
        if (why := cls.missing()) is not None:
            raise SmallbenchError(why)
        suite = get_suite(spec.suite)
        settings = suite.settings(spec.settings)
        backend = cls()
        backend.import_library()  # the library import is not part of load time or load memory
        load_spec = LoadSpec(model_id=spec.model.id, source=spec.model.source or spec.model.id,
                             revision=spec.model.revision, **spec.load)  # fmt: skip
        backend.prepare(load_spec)  # conversions and downloads: not part of load time or load memory
        cpu_bandwidth = measure_memory_bandwidth() if suite.uses_roofline else None
        with MemorySampler(interval=0.05) as mem:
            t0 = time.perf_counter()
            info = backend.load(load_spec)
            load_s = time.perf_counter() - t0
        p = mem.peaks
        load = LoadRecord(seconds=load_s, rss_before_bytes=p.rss_start_bytes, rss_after_bytes=p.rss_end_bytes,
                          rss_peak_bytes=p.rss_peak_bytes)  # fmt: skip
        backend_info = backend.describe()
        inject_fault(spec)
        roof = roofline(backend_info, hardware, info, cpu_bandwidth) if suite.uses_roofline else None
        meter = energy.meter_for(backend_info.device)
        try:
            result = suite.run(backend, settings, SuiteContext(load=load, model_info=info, roofline=roof, energy=meter))
        finally:
            backend.close()
        if roof is not None:  # a CPU measurement disturbed by anything else running is retaken with no engine up
            again = measure_memory_bandwidth() if roof.source.startswith("measured") else None
            roof.finish(max(roof.bandwidth_bytes_s, again or 0))
        model = spec.model.model_copy(update={
            "params_total": info.params_total, "params_active": info.params_active, "dtype": info.dtype,
            "quant": info.quant or spec.model.quant,
        })  # fmt: skip
        return ResultRecord(
            smallbench_version=__version__,
            cell_id=spec.cell_id,
            run_id=spec.run_id,
            status="ok",
            suite=spec.suite,
            settings=settings.model_dump(),
            model=model,
            backend=backend_info,
            hardware=hardware,
            software=software,
            load=load,
            metrics=result.metrics,
            samples=result.samples,
            extra=result.extra,
            duration_s=time.perf_counter() - started,
        )
    except Exception as exc:
        traceback.print_exc()
        return failed_record(spec, one_line(exc), hardware, software, backend_info, started)


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


def main(argv: list[str]) -> int:
    tie_to_runner()
    spec = CellSpec.model_validate_json(Path(argv[1]).read_text(encoding="utf-8"))
    record = run_cell(spec)
    write_record(record, Path(spec.record_path))
    return 0 if record.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
