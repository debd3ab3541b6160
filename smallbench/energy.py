"""Energy counters: NVML's total energy of an NVIDIA GPU, or Linux RAPL's CPU package energy.

Both are cumulative hardware counters, read before and after a trial; the difference over the tokens the trial
produced is its energy per token (docs/metrics.md). Where the machine has no such counter (most VMs, Macs),
there is no energy metric at all: absent, never zero.
"""

from __future__ import annotations

from pathlib import Path

RAPL = Path("/sys/class/powercap")


class EnergyMeter:
    """A cumulative energy counter in joules. ``source`` names it; ``read()`` is None when unreadable."""

    def __init__(self, source: str, read_joules) -> None:
        self.source = source
        self._read = read_joules

    def read(self) -> float | None:
        try:
            return self._read()
        except Exception:  # noqa: BLE001 - a counter that stops answering is treated as absent
            return None


def nvml_meter(index: int = 0) -> EnergyMeter | None:
    """NVML ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded; Volta and newer)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:  # noqa: BLE001 - no NVML, no GPU, or a GPU without the counter
        return None
    return EnergyMeter(f"NVML total energy, GPU {index}",
                       lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0)


def rapl_meter(root: Path = RAPL) -> EnergyMeter | None:
    """RAPL package domains (``intel-rapl:N``, also exposed on AMD): microjoules, wrapping at
    ``max_energy_range_uj``; summed over packages. None where Linux does not expose them or they are not readable."""
    domains = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1) if root.is_dir() else []
    try:
        ranges = [int((d / "max_energy_range_uj").read_text()) for d in domains]
        for d in domains:
            int((d / "energy_uj").read_text())
    except (OSError, ValueError):
        return None
    if not domains:
        return None
    last = [0] * len(domains)
    total = [0.0]

    def read() -> float:
        for i, d in enumerate(domains):
            now = int((d / "energy_uj").read_text())
            if last[i]:
                total[0] += (now - last[i]) % ranges[i]  # the counter wraps at its range
            last[i] = now
        return total[0] / 1e6

    read()
    return EnergyMeter(f"RAPL package energy ({len(domains)} package{'s' * (len(domains) > 1)})", read)


def meter_for(device: str | None) -> EnergyMeter | None:
    """The counter for a backend's device: the GPU's on CUDA, the CPU packages' otherwise."""
    device = (device or "cpu").lower()
    if device.startswith("cuda"):
        return nvml_meter(int(device.split(":")[1]) if ":" in device else 0)
    if device == "cpu":
        return rapl_meter()
    return None
