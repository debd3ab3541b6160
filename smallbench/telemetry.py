"""Background memory sampling: RSS of the process tree, NVML per-process and device-wide usage; and how busy the
rest of the machine was while a suite ran (:class:`CpuWatch`).

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
from pydantic import BaseModel


def tree(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and every living descendant."""
    procs = [root]
    with contextlib.suppress(psutil.Error):
        procs += root.children(recursive=True)
    return procs


def tree_rss(root: psutil.Process, skip: frozenset[int] | set[int] = frozenset()) -> int:
    """Resident set size of ``root`` plus every living descendant, in bytes; processes in ``skip`` left out."""
    total = 0
    for p in tree(root):
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
        proc_b, dev_b = self._nvml.used({p.pid for p in tree(self.proc)})
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


#: A suite's machine counts as busy when others took at least this many CPUs (or this share of all its CPUs,
#: whichever is more) ...
BUSY_CPUS, BUSY_SHARE = 0.25, 0.05
#: ... or the hypervisor held back at least this share of the CPU time asked for (steal); either way at least
#: BUSY_EVIDENCE CPU-seconds, ten ticks of the 100 Hz counters Linux keeps them in (a 50 ms suite cannot tell one
#: stray tick from a busy machine).
BUSY_STEAL = 0.05
BUSY_EVIDENCE = 0.1


class Contention(BaseModel):
    """What else the machine did while a suite ran (see docs/metrics.md, "A busy machine")."""

    seconds: float
    #: CPUs the suite's processes may run on: the machine's, unless they were pinned (taskset, a container's cpuset)
    cpus: int
    #: CPU-seconds of this process tree (the engine's processes included) per second of the suite.
    own_cpus: float
    #: CPU-seconds of every other process on those CPUs per second of the suite.
    others_cpus: float
    #: Share of the CPU time the machine's processes asked for that the hypervisor gave to other guests instead
    #: (steal ÷ (busy + steal), over those CPUs); None where the OS does not count it.
    steal: float | None
    #: others_cpus ≥ max(BUSY_CPUS, BUSY_SHARE × cpus) or steal ≥ BUSY_STEAL, on at least BUSY_EVIDENCE CPU-seconds:
    #: the suite's times may be slow.
    busy: bool


def tree_cpu_seconds(root: psutil.Process) -> dict[int, float]:
    """User + system CPU seconds of ``root`` (with its reaped children) and of every living descendant, by pid."""
    out = {}
    for p in tree(root):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = t.user + t.system + (t.children_user + t.children_system if p is root else 0.0)
    return out


def allowed_cpus(proc: psutil.Process | None = None) -> list[int]:
    """Indices of the CPUs ``proc`` (this process) may run on: all of the machine's, unless pinned (taskset, a
    container's cpuset); all of them where the OS has no affinity (macOS)."""
    n = len(psutil.cpu_times(percpu=True))
    try:
        allowed = [i for i in (proc or psutil.Process()).cpu_affinity() if i < n]
    except (AttributeError, psutil.Error):
        allowed = []
    return allowed or list(range(n))


class CpuWatch:
    """Context manager: how much CPU this process tree, everything else and the hypervisor took while it was open;
    read :attr:`contention` afterwards (None where the system's CPU times cannot be read)."""

    def __init__(self, pid: int | None = None) -> None:
        self.proc = psutil.Process(pid or os.getpid())
        self.contention: Contention | None = None
        self.cpus = allowed_cpus(self.proc)

    def _system(self) -> tuple[float, float, float | None]:
        """(total, busy, steal) CPU seconds since boot, summed over the CPUs the tree may run on (work pinned to
        other CPUs takes none of their time); steal None where not counted."""
        per = psutil.cpu_times(percpu=True)
        times = [per[i] for i in self.cpus if i < len(per)]
        steal = sum(t.steal for t in times) if hasattr(times[0], "steal") else None
        idle = sum(t.idle + getattr(t, "iowait", 0.0) for t in times)
        # guest time is inside user time already
        total = sum(getattr(t, f) for t in times for f in t._fields if f not in ("guest", "guest_nice"))
        return total, total - idle - (steal or 0.0), steal

    def __enter__(self) -> CpuWatch:
        self._t0 = time.perf_counter()
        self._sys0 = self._system()
        self._own0 = tree_cpu_seconds(self.proc)
        return self

    def __exit__(self, *exc) -> None:
        own1 = tree_cpu_seconds(self.proc)
        total1, busy1, steal1 = self._system()
        seconds = time.perf_counter() - self._t0
        total0, busy0, steal0 = self._sys0
        if seconds <= 0 or total1 <= total0:
            return
        own = sum(max(0.0, v - self._own0.get(pid, 0.0)) for pid, v in own1.items())
        stolen = steal1 - steal0 if steal1 is not None and steal0 is not None else None
        self.contention = judge(seconds, len(self.cpus), own, busy1 - busy0, stolen)


def judge(seconds: float, cpus: int, own: float, busy: float, stolen: float | None) -> Contention:
    """The contention of a window of ``seconds`` on ``cpus`` CPUs, from CPU-seconds summed over them: this tree's
    (``own``), everyone's (``busy``, this tree's included) and the hypervisor's (``stolen``, None if not counted)."""
    others = max(0.0, busy - own)
    wanted = busy + (stolen or 0.0)  # CPU time asked for: an idle CPU has nothing to be stolen
    flag = (others >= max(BUSY_EVIDENCE, max(BUSY_CPUS, BUSY_SHARE * cpus) * seconds)
            or (stolen or 0.0) >= max(BUSY_EVIDENCE, BUSY_STEAL * wanted))
    return Contention(seconds=seconds, cpus=cpus, own_cpus=own / seconds, others_cpus=others / seconds,
                      steal=None if stolen is None or wanted <= 0 else stolen / wanted, busy=flag)
