import pytest

from smallbench.hardware import (
    AppleInfo,
    apple_gpu_cores,
    cgroup_cpu_quota,
    hardware_info,
    nvml_gpus,
    software_versions,
)
from smallbench.telemetry import MemorySampler


def test_fingerprint_is_stable_and_sane():
    a, b = hardware_info(), hardware_info()
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 12
    assert a.ram_bytes > 2**30 and a.cpu_model and a.cpu_threads >= 1
    v = software_versions()
    assert v["python"].startswith("3.") and "torch" in v


def test_memory_sampler_sees_an_allocation():
    with MemorySampler(interval=0.005) as s:
        block = bytearray(200 * 2**20)
        block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page so it is resident
        import time

        time.sleep(0.05)
    assert s.peaks.rss_peak_bytes - s.peaks.rss_start_bytes > 150 * 2**20
    assert s.peaks.timeline
    del block


@pytest.mark.skipif(not nvml_gpus(), reason="needs an NVIDIA GPU and driver (NVML); none on this machine")
def test_nvml_gpu_fields():
    g = nvml_gpus()[0]
    assert g.memory_total_bytes > 0 and g.driver_version
    assert g.peak_bandwidth_bytes_s is None or g.peak_bandwidth_bytes_s > 1e11


def test_apple_fingerprint_names_chip_gpu_cores_and_unified_memory():
    displays = """Graphics/Displays:

    Apple M3 Max:

      Chipset Model: Apple M3 Max
      Type: GPU
      Bus: Built-In
      Total Number of Cores: 40
      Vendor: Apple (0x106b)
      Metal Support: Metal 3
"""
    assert apple_gpu_cores(displays) == 40 and apple_gpu_cores("") is None
    hw = hardware_info()
    base = {**hw.model_dump(exclude={"fingerprint", "accelerator", "apple"}), "gpus": []}
    m3 = [type(hw)(**base, apple=AppleInfo(chip="Apple M3 Max", gpu_cores=c, unified_memory_bytes=64 * 2**30))
          for c in (30, 40)]
    assert m3[0].accelerator == "Apple M3 Max" and m3[0].fingerprint != m3[1].fingerprint


def test_cpu_flags_tell_apart_cpus_that_share_a_name():
    from smallbench.hardware import cpu_flags

    head = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.50GHz\n"
    spr = head + "flags\t\t: fpu sse avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 " \
                 "amx_tile amx_int8 avx512_fp16\n"
    clx = head + "flags\t\t: fpu sse avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp sve i8mm bf16\n"
    assert cpu_flags(spr) == ["avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"]
    assert "amx_int8" not in cpu_flags(clx) and cpu_flags(arm) == ["asimd", "asimddp", "sve", "i8mm", "bf16"]
    assert cpu_flags("") == []
    hw = hardware_info()
    assert hw.cpu_flags == cpu_flags()
    other = type(hw)(**{**hw.model_dump(exclude={"fingerprint", "accelerator"}), "cpu_flags": cpu_flags(spr)})
    assert other.cpu_model == hw.cpu_model and (other.fingerprint != hw.fingerprint or hw.cpu_flags == other.cpu_flags)


def test_the_cpu_bandwidth_peak_is_the_best_of_this_machines_runs(tmp_path, monkeypatch):
    """One second's best read moves by a third between runs on a VM (docs/metrics.md): the roofline's CPU peak is
    the best of every run on this machine kind, kept in the cache; the cache's loss or corruption costs only that."""
    from smallbench.hardware import machine_bandwidth

    monkeypatch.setenv("SMALLBENCH_CACHE", str(tmp_path / "cache"))
    assert machine_bandwidth("abc", [30e9])[:2] == (30e9, 1)
    assert machine_bandwidth("abc", [45e9])[:2] == (45e9, 2)
    assert machine_bandwidth("abc", [33e9])[:2] == (45e9, 3)  # a slow run: the peak stays
    assert machine_bandwidth("other-kind", [20e9])[:2] == (20e9, 1)  # kept per machine kind
    assert machine_bandwidth("abc", [1e9], keep=2)[:2] == (33e9, 2)  # only the last ``keep`` runs count
    (tmp_path / "cache" / "bandwidth" / "abc.json").write_text("{not json")
    assert machine_bandwidth("abc", [31e9])[:2] == (31e9, 1)
    monkeypatch.setenv("SMALLBENCH_CACHE", str(tmp_path / "a-file" / "below"))
    (tmp_path / "a-file").write_text("")
    assert machine_bandwidth("abc", [29e9, 28e9])[:2] == (29e9, 2)  # no cache: this run's own


def _cgroup(tmp_path, proc: str, files: dict[str, str]):
    tmp_path.mkdir()
    (tmp_path / "proc").write_text(proc)
    for rel, text in files.items():
        (tmp_path / "fs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / rel).write_text(text)
    return cgroup_cpu_quota(tmp_path / "proc", tmp_path / "fs")


def test_a_cgroup_cpu_quota_is_the_tightest_on_the_way_up(tmp_path):
    # cgroup v2: the process's own group sets none, its parent 1.5 CPUs, the root 4
    assert _cgroup(tmp_path / "a", "0::/svc/job\n", {"cpu.max": "400000 100000\n", "svc/cpu.max": "150000 100000\n",
                                                     "svc/job/cpu.max": "max 100000\n"}) == 1.5
    # inside a container: /proc says the host's path, the mount starts at the container's own group
    assert _cgroup(tmp_path / "b", "0::/docker/abc\n", {"cpu.max": "200000 100000\n"}) == 2.0
    # cgroup v1: the cpu controller's hierarchy; -1 means no quota
    v1 = "4:memory:/x\n3:cpu,cpuacct:/x\n"
    assert _cgroup(tmp_path / "c", v1, {"cpu,cpuacct/x/cpu.cfs_quota_us": "250000\n",
                                        "cpu,cpuacct/x/cpu.cfs_period_us": "100000\n"}) == 2.5
    assert _cgroup(tmp_path / "d", v1, {"cpu,cpuacct/x/cpu.cfs_quota_us": "-1\n",
                                        "cpu,cpuacct/x/cpu.cfs_period_us": "100000\n"}) is None
    assert _cgroup(tmp_path / "e", "0::/\n", {"cpu.max": "max 100000\n"}) is None
    assert _cgroup(tmp_path / "f", "garbled\n0::/\n", {"cpu.max": "50000 100000\n"}) == 0.5
    assert cgroup_cpu_quota(tmp_path / "absent", tmp_path) is None


def test_a_process_pinned_to_one_cpu_gets_one_llama_cpp_thread(tmp_path):
    """The default thread count follows the CPUs the process may use (taskset, a container's cpuset): llama.cpp's
    threads spin while they wait, so one thread per physical core of the host on fewer CPUs would crawl."""
    import os
    import subprocess
    import sys

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs to pin a process to one of them")
    pytest.importorskip("llama_cpp", reason="the llama-cpp extra is not installed")
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "from smallbench import hardware, open_backend\n"
            "with open_backend('tiny-llama', 'llama-cpp') as m:\n"
            "    threads = m.backend.describe().flags['threads']\n"
            "print(hardware.usable_cpus(), threads, hardware.hardware_info().cpus_usable)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1", "1"]
