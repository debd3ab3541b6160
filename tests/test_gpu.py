"""The CUDA path end to end on a real NVIDIA GPU: a Transformers cell on ``--device cuda`` records the GPU's memory
(torch's allocator and NVML), its energy counter, the decode roofline against the GPU's bandwidth, and the same
parity probes as on the CPU. Skipped with the reason where there is no CUDA GPU (CI has none)."""

from __future__ import annotations

import pytest
import torch

from smallbench import parity
from smallbench.hardware import nvml_gpus
from smallbench.results import read_records
from tests.conftest import run_cli

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and nvml_gpus()),
                                reason="needs a CUDA GPU with its NVML driver (none on this machine)")


def test_cuda_cell_records_gpu_memory_energy_roofline_and_cpu_parity(tmp_path):
    out = str(tmp_path / "results")
    shape = ["--prompt-tokens", "64", "--gen-tokens", "32", "--repeats", "3", "--batch-sizes", "1,4"]
    res = run_cli("run", "-b", "transformers", "--device", "cuda", "--dtype", "float32", "-s",
                  "memory,latency,throughput,parity", "-o", out, *shape, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    res = run_cli("run", "-b", "transformers", "--device", "cpu", "--dtype", "float32", "-s", "parity", "-o", out,
                  cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    records = read_records(out)
    gpu = {r.suite: r for r in records if r.backend.device.startswith("cuda")}
    assert set(gpu) == {"memory", "latency", "throughput", "parity"}
    assert all(r.status == "ok" and r.hardware.gpus for r in gpu.values())

    mem = gpu["memory"]
    def peak(name: str) -> float:
        return max(mem.samples[mem.metric(name).samples_key])

    assert mem.extra["measured_from"] == "torch CUDA peak allocated"
    measured = mem.metric("measured_model_bytes").value
    assert measured == peak("torch_cuda_peak_allocated_bytes") >= mem.metric("weights_bytes").value
    # NVML sees the process's whole share of the GPU: the allocator's reserve and the CUDA context on top
    assert peak("nvml_process_peak_bytes") > measured

    for suite in ("latency", "throughput"):
        r = gpu[suite]
        assert r.extra["energy"].startswith("NVML")
        joules = r.samples[r.metric("energy_per_token").samples_key]
        assert min(joules) >= 0 and sum(joules) > 0  # a counter that ticks coarsely may read 0 over a short trial
        pct = r.metric("decode_bandwidth_pct")
        assert pct is not None and 0 < pct.value <= 100, r.extra.get("roofline")

    df = parity.table(records)  # the GPU's probes against the CPU's, same weights, same float32
    assert len(df) == 1 and df["reference"][0] == "transformers cpu"
    assert df["max |Δ loglik|"][0] < parity.TOLERANCE and df["within tolerance"][0], df.to_dict("records")
