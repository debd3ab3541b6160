"""Background memory sampling: RSS of the process tree, NVML per-process and device-wide usage.

One :class:`MemorySampler` thread polls every ``interval`` seconds while a workload runs and keeps
the peaks plus a (downsampled) timeline. RSS is summed over this process and all its descendants
(vLLM spawns engine processes); shared pages are counted once per process, so the sum can overstate.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field

import psutil


def tree_rss(root: psutil.Process, skip: frozenset[int] | set[int] = frozenset()) -> int:
    """Resident set size of ``root`` plus every living descendant, in bytes; processes in ``skip`` left out."""
    total = 0
    procs = [root]
    with contextlib.suppress(psutil.Error):
        procs += root.children(recursive=True)
    for p in procs:
        if p.pid in skip:
            continue
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


class _NVML:
    """NVML handles for per-process and device-wide used memory; inert where NVML is absent."""

    def __init__(self) -> None:
        self.handles: list = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # no driver, no library: no GPU telemetry
            self.handles = []

    @property
    def available(self) -> bool:
        return bool(self.handles)

    def used(self, pids: set[int]) -> tuple[int, int]:
        """(bytes used by ``pids`` on all GPUs, bytes used on all GPUs by anyone)."""
        nv = self._nvml
        proc_total = dev_total = 0
        for h in self.handles:
            dev_total += nv.nvmlDeviceGetMemoryInfo(h).used
            for getter in (nv.nvmlDeviceGetComputeRunningProcesses, nv.nvmlDeviceGetGraphicsRunningProcesses):
                try:
                    procs = getter(h)
                except nv.NVMLError:
                    continue
                for p in procs:
                    if p.pid in pids and p.usedGpuMemory:
                        proc_total += p.usedGpuMemory
        return proc_total, dev_total

    def close(self) -> None:
        if self.handles:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()


@dataclass
class MemoryPeaks:
    rss_start_bytes: int
    rss_peak_bytes: int
    rss_end_bytes: int
    nvml_process_peak_bytes: int | None = None
    nvml_device_peak_bytes: int | None = None
    #: (seconds since start, tree RSS bytes, NVML process bytes or None)
    timeline: list[tuple[float, int, int | None]] = field(default_factory=list)


class MemorySampler:
    """Context manager: samples memory in a daemon thread until exit; read :attr:`peaks` afterwards."""

    MAX_TIMELINE = 500

    def __init__(self, interval: float = 0.02, pid: int | None = None) -> None:
        self.interval = interval
        self.proc = psutil.Process(pid or os.getpid())
        self.peaks: MemoryPeaks | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = _NVML()

    def _sample(self) -> tuple[int, int | None, int | None]:
        rss = tree_rss(self.proc)
        if not self._nvml.available:
            return rss, None, None
        pids = {self.proc.pid}
        with contextlib.suppress(psutil.Error):
            pids |= {c.pid for c in self.proc.children(recursive=True)}
        proc_b, dev_b = self._nvml.used(pids)
        return rss, proc_b, dev_b

    def _loop(self, t0: float) -> None:
        while not self._stop.is_set():
            self._record(t0)
            self._stop.wait(self.interval)

    def _record(self, t0: float) -> None:
        rss, proc_b, dev_b = self._sample()
        p = self.peaks
        assert p is not None
        p.rss_peak_bytes = max(p.rss_peak_bytes, rss)
        p.rss_end_bytes = rss
        if proc_b is not None:
            p.nvml_process_peak_bytes = max(p.nvml_process_peak_bytes or 0, proc_b)
            p.nvml_device_peak_bytes = max(p.nvml_device_peak_bytes or 0, dev_b or 0)
        p.timeline.append((time.perf_counter() - t0, rss, proc_b))

    def __enter__(self) -> MemorySampler:
        rss = tree_rss(self.proc)
        self.peaks = MemoryPeaks(rss_start_bytes=rss, rss_peak_bytes=rss, rss_end_bytes=rss)
        t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, args=(t0,), daemon=True, name="smallbench-mem")
        self._thread.start()
        self._t0 = t0
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._record(self._t0)  # one last sample so a short workload is never missed entirely
        self._nvml.close()
        assert self.peaks is not None
        tl = self.peaks.timeline
        if len(tl) > self.MAX_TIMELINE:  # keep the raw timeline bounded, evenly thinned
            step = len(tl) / self.MAX_TIMELINE
            self.peaks.timeline = [tl[int(i * step)] for i in range(self.MAX_TIMELINE)]
