"""The leaderboard: its data layer (rules, Pareto, noise, filters, hostile files) and the app in a real browser."""

from __future__ import annotations

import io
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from smallbench import leaderboard as L
from smallbench import models, sizing
from smallbench.errors import SmallbenchError
from smallbench.metrics import MetricError, reference_markdown
from smallbench.results import scan_records
from smallbench.suites.base import SuiteResult
from tests.conftest import fetch, run_cli, serve_app
from tests.records import HOSTILE, hardware, record, write_hostile, write_synthetic

ROOT = Path(__file__).parents[1]


def test_every_metric_is_declared_once_and_docs_carry_the_reference():
    out = SuiteResult()
    m = out.add("tpot", [0.01, 0.02])
    assert (m.unit, m.higher_is_better) == ("s/token", False)
    with pytest.raises(MetricError, match="not declared"):
        out.add("made_up_metric", [1.0])
    assert reference_markdown() in (ROOT / "docs" / "metrics.md").read_text(), "docs/metrics.md: regenerate the table"
    for suite in ("latency", "throughput", "serving", "memory"):  # no suite types a unit or a direction any more
        src = (ROOT / "suites" / f"{suite}.py").read_text()
        assert "higher_is_better=" not in src and '"tok/s"' not in src, suite


def _rows(*recs):
    return L.build(recs).table


def test_one_row_per_weights_backend_hardware_and_the_rules_for_each_column():
    rng = random.Random(0)
    cpu, gpu = hardware(0), hardware(1)
    recs = [record(s, "minicpm5-1b", "llama-cpp", "Q4_K_M", cpu, rng, params=1_080_632_832)
            for s in ("latency", "throughput", "memory", "accuracy")]
    recs.append(record("latency", "minicpm5-1b", "llama-cpp", "Q4_K_M", gpu, rng))  # other hardware: other row
    recs.append(record("throughput", "minicpm5-1b", "vllm", "bfloat16", cpu, rng))  # no latency suite
    df = _rows(*recs)
    assert len(df) == 3
    row = df[(df.backend == "llama-cpp") & (df.hardware_id == cpu.fingerprint)].iloc[0]
    lat = recs[0]
    assert row[L.TTFT] == pytest.approx(lat.metric("ttft").stats.p50 * 1e3)  # seconds shown as ms
    assert row[L.TTFT99] == pytest.approx(lat.metric("ttft").stats.p99 * 1e3)
    assert row[L.DECODE] == pytest.approx(lat.metric("decode_tok_s").value)  # latency suite wins
    best = max((m for m in recs[1].metrics), key=lambda m: m.value)
    assert row[L.THROUGHPUT] == pytest.approx(best.value) and row["best at"] == f"batch {best.labels['batch_size']}"
    assert row[L.PEAK] == pytest.approx(recs[2].metric("peak_rss_bytes").value / 2**30)
    assert row["memory source"] == "RSS"
    assert (row[L.BOUND], row[L.BOUND_KIND]) == (pytest.approx(48.0), "CPU read, machine's best")
    gpu_row = df[df.hardware_id == gpu.fingerprint].iloc[0]
    assert (gpu_row[L.BOUND], gpu_row[L.BOUND_KIND]) == (pytest.approx(3350.0), "NVML clock × bus")
    accs = [m.value * 100 for m in recs[3].metrics]
    assert row[L.ACC_AVG] == pytest.approx(sum(accs) / len(accs))
    assert row["role"] == "sponsor" and row["params total (B)"] == pytest.approx(1.080632832)
    vllm = df[df.backend == "vllm"].iloc[0]  # decode from the throughput suite's batch 1; nothing else measured
    want = next(m.value for m in recs[5].metrics if m.name == "output_tok_s" and m.labels["batch_size"] == 1)
    assert vllm[L.THROUGHPUT] >= want
    for col in (L.TTFT, L.PEAK, L.ENERGY, L.ACC_AVG, L.BOUND):  # missing is missing, never 0
        assert math.isnan(vllm[col]), col
    assert vllm[L.BOUND_KIND] == ""


def test_workload_shapes_never_share_a_row_and_accuracy_joins_each():
    rng = random.Random(3)
    cpu = hardware(0)
    short, long = (record("latency", "minicpm5-1b", "llama-cpp", "Q4_K_M", cpu, rng, prompt=p) for p in (64, 512))
    acc = record("accuracy", "minicpm5-1b", "llama-cpp", "Q4_K_M", cpu, rng)
    other = record("accuracy", "qwen3-4b", "llama-cpp", "Q4_K_M", cpu, rng)  # accuracy only: a row of its own
    df = _rows(short, long, acc, other).set_index(["model", L.SHAPE])
    assert sorted(df.index) == [("minicpm5-1b", "512→32"), ("minicpm5-1b", "64→32"), ("qwen3-4b", "")]
    assert df.loc[("minicpm5-1b", "64→32"), L.TTFT] == pytest.approx(short.metric("ttft").value * 1e3)
    assert df.loc[("minicpm5-1b", "512→32"), L.TTFT] == pytest.approx(long.metric("ttft").value * 1e3)
    for sh in ("64→32", "512→32"):
        assert df.loc[("minicpm5-1b", sh), L.ACC_AVG] == pytest.approx(100 * sum(m.value for m in acc.metrics) / 2)
    assert math.isnan(df.loc[("qwen3-4b", ""), L.TTFT]) and not math.isnan(df.loc[("qwen3-4b", ""), L.ACC_AVG])
    assert len(L.filter_table(df.reset_index(), shapes=["64→32"])) == 1
    assert L.build([short, long, acc, other]).read == 4  # the app's count: acc joins two rows, it is one record


def test_engine_settings_and_devices_never_share_a_row_and_accuracy_joins_each():
    rng = random.Random(5)
    cpu = hardware(0)
    eager, compiled, acc = (record(s, "minicpm5-1b", "vllm", "float32", cpu, rng)
                            for s in ("latency", "latency", "accuracy"))
    eager.backend.flags = {"enforce_eager": True, "prefix_caching": False, "mode": "engine"}
    compiled.backend.flags = {"prefix_caching": False, "mode": "engine"}  # vLLM's defaults: no label
    one_thread, on_gpu = (record("latency", "minicpm5-1b", "transformers", "float32", cpu, rng) for _ in range(2))
    one_thread.backend.flags = {"threads": 1}  # the machine has 2 physical cores, every backend's default
    on_gpu.backend.device, on_gpu.backend.flags = "cuda", {"threads": 1}  # threads mean nothing off the CPU
    odd = record("latency", "m", "no-such-backend", "", cpu, rng)
    odd.backend.flags = {"enforce_eager": True}
    # llama.cpp offloads every layer to a GPU by default and none on a CPU: a partial offload is a config of its own
    offload = [record("latency", "minicpm5-1b", "llama-cpp", "Q4_K_M", cpu, rng) for _ in range(3)]
    for rec, device, layers in zip(offload, ("cuda", "cuda", "cpu"), (999, 20, 0), strict=True):
        rec.backend.device, rec.backend.flags = device, {"n_gpu_layers": layers}
    df = _rows(eager, compiled, acc, one_thread, on_gpu, odd, *offload).set_index(["backend", "device", "config"])
    assert sorted(df.index) == [("llama-cpp", "cpu", ""), ("llama-cpp", "cuda", ""),
                                ("llama-cpp", "cuda", "n_gpu_layers=20"),
                                ("no-such-backend", "cpu", ""), ("transformers", "cpu", "threads=1"),
                                ("transformers", "cuda", ""), ("vllm", "cpu", ""),
                                ("vllm", "cpu", "enforce_eager")]
    for config, rec in (("", compiled), ("enforce_eager", eager)):
        row = df.loc[("vllm", "cpu", config)]
        assert row[L.TTFT] == pytest.approx(rec.metric("ttft").stats.p50 * 1e3)
        assert row[L.ACC_AVG] == pytest.approx(100 * sum(m.value for m in acc.metrics) / 2)  # the weights'


def test_a_load_that_failed_is_counted_against_the_engine_config_it_asked_for():
    from smallbench.cell import CellSpec, failed_record

    ok = record("latency", "minicpm5-1b", "vllm", "float32", hardware(0), random.Random(6))
    spec = CellSpec(run_id="r", cell_id="c", model=ok.model, backend="vllm", suite="latency", settings=ok.settings,
                    load={"options": {"enforce_eager": True, "threads": 2, "n_gpu_layers": 0}})
    failed = failed_record(spec, "RuntimeError: out of memory", ok.hardware, {})
    assert failed.backend.flags == {"enforce_eager": True, "threads": 2, "n_gpu_layers": 0}  # what was asked
    df = _rows(ok, failed)
    assert sorted(zip(df.config, df.failed, strict=True)) == [("", 0), ("enforce_eager", 1)]


def test_a_row_counts_its_cells_measured_on_a_busy_machine():
    from smallbench.app import display_columns
    from smallbench.telemetry import Contention

    rng = random.Random(7)
    recs = [record(s, "minicpm5-1b", "llama-cpp", "Q4_K_M", hardware(0), rng) for s in ("latency", "memory")]
    assert math.isnan(_rows(*recs)[L.BUSY].iloc[0])  # records from before the watch: unknown, not 0
    recs[0].contention = Contention(seconds=9, cpus=2, own_cpus=1.9, others_cpus=0.9, steal=0.0, busy=True)
    assert _rows(*recs)[L.BUSY].tolist() == [1]
    recs[0].contention = recs[0].contention.model_copy(update={"busy": False})
    board = _rows(*recs)
    assert board[L.BUSY].tolist() == [0] and L.BUSY in display_columns(board)


def test_peak_memory_prefers_nvml_and_dummy_rows_carry_no_accuracy():
    rng = random.Random(1)
    mem = record("memory", "qwen3-0.6b", "vllm", "bfloat16", hardware(1), rng, dummy=True)
    extra = SuiteResult()
    extra.add("nvml_process_peak_bytes", [3 * 2**30])
    mem.metrics += extra.metrics
    acc = record("accuracy", "qwen3-0.6b", "vllm", "bfloat16", hardware(1), rng, dummy=True)
    row = _rows(mem, acc).iloc[0]
    assert row[L.PEAK] == pytest.approx(3.0) and row["memory source"] == "NVML"
    assert row["weights"] == "dummy" and math.isnan(row[L.ACC_AVG])


def test_pareto_frontier_and_noise():
    df = pd.DataFrame({"x": [1, 2, 3, 2, 3, math.nan], "y": [9, 8, 5, 7, 5, 10]})
    # higher x and higher y are better: (1,9), (2,8), (3,5) twice are on it; (2,7) is beaten by (2,8)
    assert L.pareto(df, "x", "y", True, True).tolist() == [True, True, True, False, True, False]
    # lower x better (memory): (1,9) beats everything but nothing beats it
    assert L.pareto(df, "x", "y", False, True).tolist() == [True, False, False, False, False, False]


def test_bars_are_compared_as_smallbench_compare_compares_them():
    import random

    from tests.records import hardware, record

    a = record("latency", "m", "vllm", "", hardware(0), random.Random(3))
    same, slower = a.model_copy(deep=True), a.model_copy(deep=True)
    slower.samples = {k: [x * 1.3 for x in v] for k, v in a.samples.items()}
    hit = (a, a.metric("tpot"))
    assert L.no_significant_difference(hit, (same, same.metric("tpot")))
    assert not L.no_significant_difference(hit, (slower, slower.metric("tpot")))


def test_rank_best_first_in_each_columns_direction_missing_last():
    df = pd.DataFrame({L.DECODE: [5.0, math.nan, 9.0], L.TTFT: [30.0, 10.0, math.nan], L.ACC_AVG: [40, 60, 50]})
    assert L.rank(df, L.DECODE)[L.DECODE].tolist()[:2] == [9.0, 5.0]  # higher is better
    assert L.rank(df, L.TTFT).index.tolist() == [1, 0, 2]  # lower is better, NaN last
    assert L.rank(df, L.ACC_AVG).index.tolist() == [1, 2, 0]


def test_filters():
    rng = random.Random(2)
    recs = [record("latency", m, b, q, hardware(h), rng, dummy=d)
            for m, b, q, h, d in [("minicpm5-1b", "vllm", "bfloat16", 1, False), ("qwen3-4b", "mlx", "4bit", 0, True),
                                  ("tiny-aya-global", "llama-cpp", "Q4_K_M", 0, False)]]
    df = _rows(*recs)
    assert L.filter_table(df, backends=["mlx"]).model.tolist() == ["qwen3-4b"]
    assert L.filter_table(df, weights=["real"], quants=["Q4_K_M"]).model.tolist() == ["tiny-aya-global"]
    assert set(L.filter_table(df, params=(1.0, 3.5)).model) == {"minicpm5-1b", "tiny-aya-global"}
    assert L.filter_table(df, roles=["reference"], search="QWEN").model.tolist() == ["qwen3-4b"]
    assert L.filter_table(df, hardware=[hardware(1).accelerator]).model.tolist() == ["minicpm5-1b"]


def test_column_widths_come_from_the_whole_table_so_no_filter_moves_them():
    from smallbench.app import column_widths, display

    rng = random.Random(3)
    recs = [record("latency", m, "vllm", "bfloat16", hardware(0), rng) for m in ("qwen3-4b", "m" * 80)]
    df = _rows(*recs)
    widths = column_widths(df)
    assert list(widths) == list(display(df).columns)
    assert widths["model"] == f"{40 * 9 + 24}px"  # the 80-character name is capped at 40 characters
    assert widths["backend"] == f"{len('backend') * 9 + 24}px"  # the header is wider than "vllm"
    assert widths[L.ENERGY] == f"{len(L.ENERGY) * 9 + 24}px"  # no value at all: the header's width
    assert column_widths(L.filter_table(df, search="qwen"))["model"] != widths["model"]  # hence: the whole table


def test_hostile_files_are_skipped_with_a_note_and_markup_stays_a_string(tmp_path):
    bad = write_hostile(tmp_path)
    records, skipped = scan_records(tmp_path)
    assert [r.model.id for r in records] == [HOSTILE]
    assert sorted(Path(line.split(":")[0]).name for line in skipped) == sorted(bad)
    assert any("schema version 99" in s for s in skipped) and any("not UTF-8" in s for s in skipped)
    assert any("impossible value" in s and "-5.0" in s for s in skipped)
    from smallbench.app import text

    assert "<" not in text(HOSTILE) and "onerror" in text(HOSTILE)


def test_what_fits_panel():
    df = L.fits(16 * 2**30, "Q4_K_M", 4096)
    row = df.set_index("model")
    assert row.loc["nemotron-3-nano-30b-a3b", "fits"] == "no"  # 31.6B in Q4_K_M is ~18 GiB
    assert row.loc["minicpm5-1b", "fits"] == "yes" and row.loc["minicpm5-1b", "sequences at this context"] > 1
    assert row.loc["minicpm4.1-8b", "params total (B)"] == 8.185  # no published count: counted, as list models does
    assert not row["params total (B)"].isna().any()
    with pytest.raises(SmallbenchError, match="context needs a positive"):  # the panel's number box, cleared or < 1
        L.fits(16 * 2**30, "Q4_K_M", 0)
    # a context beyond a model's maximum is no, whatever the memory (it was capped to the maximum and said yes)
    long = L.fits(2**40, "Q4_K_M", 65536).set_index("model")
    assert long.loc["gemma-3-1b", "fits"] == "no: longer than its 32,768-token maximum"
    assert long.loc["gemma-3-1b", "sequences at this context"] == 0 and long.loc["minicpm5-1b", "fits"] == "yes"
    # Gemma 3: per token counts its full-attention layers; a sequence also holds its sliding layers' 512-token window
    kv = sizing.kv_size(models.entry("gemma-3-1b").config, "float16")
    assert kv.window == 512 and kv.sliding_per_token > 0
    want = (kv.per_token * 4096 + kv.sliding_per_token * 512) / 2**20
    assert row.loc["gemma-3-1b", "KV per sequence at this context (MiB)"] == pytest.approx(want, abs=0.05)
    on_vllm = L.fits(16 * 2**30, "bfloat16", 4096, backend="vllm", device="cpu").set_index("model")  # + embeddings
    plain = L.fits(16 * 2**30, "bfloat16", 4096).set_index("model")
    seqs = "sequences at this context"
    assert (on_vllm[seqs] <= plain[seqs]).all()
    assert on_vllm.loc["tiny-aya-global", seqs] < plain.loc["tiny-aya-global", seqs]
    assert on_vllm.loc["tiny-aya-global", "vllm holds besides (GiB)"] == 1.0  # its tied embedding, packed once more
    offload = L.fits(8 * 10**9, "Q4_K_M", 4096, backend="llama-cpp", device="cuda").set_index("model")
    k = sizing.offload_layers(models.entry("mellum2-12b-a2.5b").config, 8 * 10**9, "Q4_K_M", 4096, overhead=2**30)
    assert f"--n-gpu-layers {k} " in offload.loc["mellum2-12b-a2.5b", "llama-cpp when it does not fit"]
    assert offload.loc["minicpm5-1b", "llama-cpp when it does not fit"] == ""  # it fits: nothing to say
    with pytest.raises(SmallbenchError, match="vllm"):  # vLLM takes no GGUF type
        L.fits(16 * 2**30, "Q4_K_M", 4096, backend="vllm")
    # on a named GPU: the decode bound `fit --gpu` gives (the table's bandwidth over the bytes a token reads)
    bound = "decode bound on RTX 4090 (tok/s)"
    assert bound not in df
    on_4090 = L.fits(16 * 2**30, "Q4_K_M", 4096, gpu="RTX 4090").set_index("model")
    aya = models.entry("tiny-aya-global")
    read = sizing.decode_bytes_per_token(aya.config, sizing.weights_bytes(aya.params_total, "Q4_K_M"), 4096)
    assert on_4090.loc["tiny-aya-global", bound] == round(1008e9 / read)
    assert on_4090.loc["mellum2-12b-a2.5b", bound] > on_4090.loc["minicpm4.1-8b", bound]  # 2.4B active of 12B
    assert math.isnan(L.fits(2**40, "Q4_K_M", 65536, gpu="RTX 4090").set_index("model").loc["gemma-3-1b", bound])
    with pytest.raises(SmallbenchError, match="bandwidth table"):
        L.fits(16 * 2**30, "Q4_K_M", 4096, gpu="Voodoo 2")


# --- the app, served on 127.0.0.1 and driven by Debian's chromium + chromedriver ---------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _need_browser():
    if os.path.exists(CHROMIUM) and os.path.exists(DRIVER):
        return
    if os.environ.get("CI"):
        pytest.fail("CI must test the leaderboard in a real browser: scripts/install-browser.sh installs it")
    pytest.skip("no chromium/chromedriver here (scripts/install-browser.sh installs Debian's)")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    _need_browser()
    folder = tmp_path_factory.mktemp("results")
    write_synthetic(folder, 40)
    write_hostile(folder / "hostile")
    with serve_app([str(ROOT / "leaderboard_app.py"), str(folder)], cwd=folder.parent) as url:
        yield url, folder


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1200"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)  # Debian's driver: nothing is downloaded
    yield drv
    drv.quit()


def _rowcount(drv) -> int:
    from selenium.webdriver.common.by import By

    grid = drv.find_element(By.CSS_SELECTOR, "#board [role=grid]")
    return int(grid.get_attribute("aria-rowcount")) - 1  # minus the header row


def test_app_in_a_real_browser(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, folder = served
    out = Path(os.environ.get("SMALLBENCH_TEST_OUT", tmp_path))  # the screenshots
    out.mkdir(parents=True, exist_ok=True)
    records, skipped = scan_records(folder)
    want = len(L.build(records).table)
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#board [role=grid]") and _rowcount(d) == want)
    board = browser.find_element(By.ID, "board")
    assert "minicpm5-1b" in board.text and "decode (tok/s)" in board.text
    # the hostile record (found with the model search): its name is on the page as characters, and nothing ran
    search = browser.find_element(By.CSS_SELECTOR, "#f-search textarea, #f-search input")
    search.send_keys("onerror", Keys.ENTER)
    wait.until(lambda d: _rowcount(d) == 1 and HOSTILE[:20] in d.find_element(By.ID, "board").text)
    assert browser.execute_script("return window.__pwned") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#board img")
    note = browser.find_element(By.CSS_SELECTOR, "#skipped textarea").get_attribute("value")
    assert "not-utf8.json" in note and "future-schema.json" in note
    browser.save_screenshot(str(out / "leaderboard-hostile.png"))
    search.send_keys(Keys.CONTROL, "a")
    search.send_keys(Keys.BACKSPACE, Keys.ENTER)
    wait.until(lambda d: _rowcount(d) == want)
    browser.save_screenshot(str(out / "leaderboard-table.png"))

    # a filter: only the vLLM rows stay
    vllm = len(L.filter_table(L.build(records).table, backends=["vllm"]))
    label = browser.find_element(By.XPATH, "//*[@id='f-backend']//label[.//span[text()='vllm']]")
    label.click()
    wait.until(lambda d: _rowcount(d) == vllm)
    assert "llama-cpp" not in browser.find_element(By.CSS_SELECTOR, "#board [role=grid]").text
    browser.save_screenshot(str(out / "leaderboard-filtered.png"))
    # the CSV of the filtered rows, written when its button is pressed
    browser.find_element(By.ID, "make-csv").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#download a[href*='.csv']"))
    href = browser.find_element(By.CSS_SELECTOR, "#download a[href*='.csv']").get_attribute("href")
    csv = pd.read_csv(io.StringIO(fetch(href)))
    assert len(csv) == vllm and set(csv["backend"]) == {"vllm"}

    # the column picker: a column added to the table, still showing the filtered rows
    browser.find_element(By.XPATH, "//button[contains(., 'columns')] | //*[contains(@class, 'label-wrap')]"
                                   "[.//*[text()='columns']]").click()
    wait.until(lambda d: d.find_elements(By.XPATH, "//*[@id='f-columns']//label[.//span[text()='updated']]"))
    browser.find_element(By.XPATH, "//*[@id='f-columns']//label[.//span[text()='updated']]").click()
    wait.until(lambda d: "updated" in d.find_element(By.CSS_SELECTOR, "#board thead").text)
    assert _rowcount(browser) == vllm

    # a chart: the trade-off tab draws plotly figures with the Pareto frontier
    browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Trade-offs')]").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot-speed .js-plotly-plot .scatterlayer .trace"))
    assert "Pareto frontier" in browser.find_element(By.ID, "plot-speed").text
    browser.save_screenshot(str(out / "leaderboard-tradeoffs.png"))

    # what fits: every catalogued model at the default budget (Q4_K_M); an engine that takes no GGUF type says so
    # in one line, and answers once the weights type is one it loads
    browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'What fits')]").click()
    wait.until(lambda d: "tiny-aya-global" in d.find_element(By.ID, "fits").text)

    def pick(elem_id: str, option: str) -> None:
        browser.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
        wait.until(lambda d: d.find_elements(By.XPATH, f"//ul[@role='listbox']/li[contains(., '{option}')]"))
        browser.find_element(By.XPATH, f"//ul[@role='listbox']/li[contains(., '{option}')]").click()

    def error() -> str:
        return browser.find_element(By.CSS_SELECTOR, "#w-err textarea").get_attribute("value")

    pick("w-engine", "vllm on CPU")
    wait.until(lambda d: "Q4_K_M" in error() and "vllm" in error())
    pick("w-quant", "bfloat16")
    wait.until(lambda d: error() == "" and "tiny-aya-global" in d.find_element(By.ID, "fits").text)
    pick("w-gpu", "H200")
    wait.until(lambda d: "decode bound on H200" in d.find_element(By.ID, "fits").text)
    browser.save_screenshot(str(out / "leaderboard-fits.png"))
    assert browser.execute_script("return window.__pwned") is None


def test_space_folder_runs_on_its_own_copy_of_smallbench(tmp_path):
    write_synthetic(tmp_path / "results", 8)
    write_hostile(tmp_path / "results" / "hostile")
    res = run_cli("space", "space", "--results", "results", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "skipped:" in res.stderr and "9 records" in res.stdout  # 8 + the markup-named record, a valid one
    space = tmp_path / "space"
    readme = (space / "README.md").read_text()
    front = readme.split("---")[1]
    for key in ("sdk: gradio", "app_file: leaderboard_app.py", "sdk_version: 6."):
        assert key in front
    reqs = (space / "requirements.txt").read_text().split()
    assert reqs and all("==" in r for r in reqs) and any(r.startswith("gradio==6.") for r in reqs)
    assert len(list((space / "results").rglob("*.json"))) == 9  # only valid records ship
    where = subprocess.run([sys.executable, "-c", "import smallbench.app as a; print(a.__file__)"], cwd=space,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(space)), where  # the Space imports the vendored package, not this checkout
    with serve_app(["leaderboard_app.py"], cwd=space) as url:
        config = fetch(url + "config")
    assert "minicpm5-1b" in config and "9 records in results" in config
    again = run_cli("space", "space", cwd=tmp_path)
    assert again.returncode != 0 and "not empty" in again.stderr and "Traceback" not in again.stderr


def test_publish_goes_as_far_as_the_upload_and_fails_in_one_line_offline(tmp_path):
    from smallbench.publish import valid_records

    write_synthetic(tmp_path / "r", 4)
    write_hostile(tmp_path / "r" / "hostile")
    files, skipped = valid_records(tmp_path / "r")
    assert len(files) == 5 and len(skipped) == 6  # 4 synthetic + the markup-named one, which is a valid record
    res = run_cli("publish", "r", "--repo", "someone/smallbench-results", cwd=tmp_path,
                  env={"HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_" + "x" * 30})
    lines = [line for line in res.stderr.splitlines() if not line.startswith("skipped:")]
    assert res.returncode != 0 and len(lines) == 1, res.stderr
    assert "cannot publish to the Hub dataset someone/smallbench-results" in lines[0]
    assert "hf_xxx" not in res.stderr + res.stdout
    bad = run_cli("publish", "r", "--repo", "../../etc", cwd=tmp_path)
    assert bad.returncode != 0 and "not a Hub repo id" in bad.stderr and "Traceback" not in bad.stderr
    hub = run_cli("leaderboard", "hf://datasets/someone/x", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert hub.returncode != 0 and "cannot read the results dataset someone/x" in hub.stderr
    assert "Traceback" not in hub.stderr


def test_app_builds_with_no_records_at_all():
    from smallbench.app import build_app

    assert build_app(L.build([]), [], "an empty folder") is not None


def test_piped_summary_keeps_whole_rows(capsys):
    from smallbench.cli import print_tables

    rng = random.Random(8)
    recs = [record("latency", "minicpm5-1b", b, q, hardware(0), rng)
            for b, q in (("vllm", ""), ("llama-cpp", "Q4_K_M"), ("transformers", ""))]
    recs[0].backend.flags = {"enforce_eager": True}
    print_tables(recs)
    out = capsys.readouterr().out
    assert "vllm (enforce_eager)" in out and "minicpm5-1b [Q4_K_M]" in out
    assert L.ROOFLINE in out  # the last column, whole
    for rec in recs:  # and each row's number in it, not cut off at 80 columns
        assert f"{rec.metric('decode_bandwidth_pct').stats.p50:.1f}" in out, out


def test_a_narrow_terminal_gets_the_summary_in_parts_with_every_number_whole():
    """As pandas prints a wide frame: the row names repeated, as many measured columns per table as fit."""
    from rich.console import Console

    from smallbench.cli import summary_tables

    rng = random.Random(9)
    recs = [record(suite, "minicpm5-1b", b, q, hardware(0), rng) for suite in ("latency", "throughput", "memory")
            for b, q in (("vllm", ""), ("llama-cpp", "Q4_K_M"), ("transformers", ""), ("mlx", "4bit"))]
    (wide,) = summary_tables(recs, Console(width=300))
    assert [c.header for c in wide.columns][:3] == ["model", "backend", L.TTFT]
    cells = {c for col in wide.columns[2:] for c in col.cells}  # the numbers
    assert len(cells) > 12 and "—" not in cells
    buf = io.StringIO()
    term = Console(width=80, file=buf, force_terminal=True, color_system=None)
    parts = summary_tables(recs, term)
    assert len(parts) > 1 and parts[0].title.endswith(f"1 of {len(parts)}")
    for t in parts:
        term.print(t)
    out = buf.getvalue()
    assert max(map(len, out.splitlines())) <= 80 and "…" not in out
    assert all(c in out for c in cells), sorted(c for c in cells if c not in out)


def test_report_summary_names_shape_and_hardware_where_rows_differ_in_them():
    from rich.console import Console

    from smallbench.cli import summary_tables

    def summary_table(recs):
        return summary_tables(recs, Console(width=300))[0]

    rng = random.Random(7)
    one = [record("latency", "minicpm5-1b", b, "", hardware(0), rng) for b in ("vllm", "llama-cpp")]
    table = summary_table(one)  # what its rows share is in the title; no status column while nothing failed
    assert [c.header for c in table.columns][:3] == ["model", "backend", L.TTFT] and "cpu, 128→32" in table.title
    two = [*one, record("latency", "minicpm5-1b", "vllm", "", hardware(1), rng, prompt=512)]
    two[1].status, two[1].error = "failed", "RuntimeError: out of memory"
    table = summary_table(two)
    assert [c.header for c in table.columns][:5] == ["model", "backend", "shape", "hardware", "status"]
    assert sorted(table.columns[2].cells) == ["128→32", "128→32", "512→32"]
    assert sorted(table.columns[4].cells) == ["1 failed", "ok", "ok"]


def test_serving_where_it_cannot_is_one_line_before_any_work(tmp_path):
    """A folder named and absent is an error, not an empty board (the default ./results absent is a new Space's
    empty board); a port out of range, taken, or a host this machine cannot bind: one line, exit 2, from
    ``smallbench leaderboard`` and from ``python leaderboard_app.py`` alike (it was a traceback there)."""
    import socket

    app_file = [sys.executable, str(ROOT / "leaderboard_app.py")]
    for cmd in (app_file + [str(tmp_path / "missing")], app_file + ["hf://datasets/not-a-repo-id"]):
        r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr and r.stderr.startswith("error: ")
    write_synthetic(tmp_path / "results", 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, says in ((["--port", "0"], "from 1 to 65535"), (["--port", str(port)], "Address already in use"),
                           (["--host", "256.0.0.1"], "cannot serve on 256.0.0.1"),
                           ([str(tmp_path / "missing")], "no results at")):
            r = run_cli("leaderboard", *args, cwd=tmp_path, timeout=120)
            assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
