"""Energy counters and the decode roofline: the arithmetic on real counter layouts, and what records carry."""

from __future__ import annotations

from smallbench import energy, models, sizing


def _rapl(root, packages: dict[str, tuple[int, int]]) -> None:
    for name, (now, span) in packages.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "energy_uj").write_text(f"{now}\n")
        (d / "max_energy_range_uj").write_text(f"{span}\n")


def test_rapl_sums_packages_and_unwraps(tmp_path):
    """Linux's powercap layout (intel-rapl:N packages, their intel-rapl:N:M sub-domains left out), counters
    that wrap at max_energy_range_uj."""
    _rapl(tmp_path, {"intel-rapl:0": (999_000_000, 1_000_000_000), "intel-rapl:1": (5_000_000, 1_000_000_000),
                     "intel-rapl:0:0": (1, 1_000_000_000)})
    meter = energy.rapl_meter(tmp_path)
    assert meter is not None and "2 packages" in meter.source
    e0 = meter.read()
    _rapl(tmp_path, {"intel-rapl:0": (2_000_000, 1_000_000_000), "intel-rapl:1": (8_000_000, 1_000_000_000)})
    assert meter.read() - e0 == 3.0 + 3.0  # package 0 wrapped: 1 J to the top, 2 J after; package 1: 3 J


def test_no_counter_means_no_meter(tmp_path):
    assert energy.rapl_meter(tmp_path / "absent") is None
    (tmp_path / "intel-rapl:0").mkdir()  # present but unreadable (no energy_uj): as for non-root users
    assert energy.rapl_meter(tmp_path) is None


def test_decode_bytes_per_token():
    cfg = models.entry("mellum2-12b-a2.5b").config
    n = sizing.count_params(cfg)
    w = sizing.weights_bytes(n.total, "bfloat16")
    per_token = sizing.decode_bytes_per_token(cfg, w, context=1000)
    # the active experts only, no input embedding (untied), plus one sequence's KV at 1,000 tokens
    a = sizing.arch(cfg)
    expected = w * (n.active - a.vocab * a.hidden) / n.total + sizing.kv_size(cfg, "float16").bytes(1000)
    assert per_token == expected and per_token < 0.25 * w
    batch8 = sizing.decode_bytes_per_token(cfg, w, context=1000, batch=8)
    assert batch8 < per_token  # weights shared by the batch, KV is not


def test_bandwidth_table():
    assert sizing.table_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert sizing.table_bandwidth("NVIDIA H100 PCIe") == 2.0e12
    assert sizing.table_bandwidth("NVIDIA GeForce RTX 4090") == 1008e9
    assert sizing.table_bandwidth("Apple M4 Max", gpu_cores=32) == 410e9
    assert sizing.table_bandwidth("Apple M4 Max", gpu_cores=40) == 546e9
    assert sizing.table_bandwidth("Some Other Accelerator") is None
    assert sizing.table_bandwidth("NVIDIA A100-SXM4-80GB") == 2.039e12 and sizing.table_bandwidth("Apple M3") == 100e9
    # other products whose names hold a listed one: no figure rather than the wrong one
    for name in ("NVIDIA L40", "NVIDIA GH200 480GB", "NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA GeForce RTX 3090 Ti",
                 "NVIDIA GeForce RTX 5080 SUPER"):
        assert sizing.table_bandwidth(name) is None, name
