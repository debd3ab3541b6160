"""How fast the leaderboard is with 10,000 records, in a real headless Chromium (Debian's, via its chromedriver).

Targets (issue 15): first render < 3 s, a filter < 300 ms. Measured, per repeat:
- startup (not seen by a visitor, once per Space boot): reading + validating every record, building the table;
- first render: page requested → the table's grid in the DOM with its rows counted (aria-rowcount; the table
  sends the best PAGE rows, the download has every row);
- filter: a backend checkbox clicked (checked, then unchecked: two filters per page load) → the table's last
  change in the DOM, timed inside the page: the click event's timestamp to the last mutation of the table,
  observed until it has been quiet for a second (the WebDriver commands' own latency is not part of it); then
  the table is checked to show the filtered rows;
- the same filter in Python alone (filter, rank, display), to show where the time goes; the CSV of all matching
  rows is written only when its button is pressed, timed apart.
Run: python benchmarks/leaderboard_render.py [--records 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from smallbench import leaderboard as L  # noqa: E402
from smallbench.app import PAGE, csv_file, display  # noqa: E402
from smallbench.results import scan_records  # noqa: E402
from tests.conftest import serve_app  # noqa: E402
from tests.records import write_synthetic  # noqa: E402


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1200"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def rowcount(drv) -> int:
    from selenium.webdriver.common.by import By

    grids = drv.find_elements(By.CSS_SELECTOR, "#board [role=grid]")
    return int(grids[0].get_attribute("aria-rowcount")) - 1 if grids else -1


#: Timestamps inside the page: the click (capture phase, before any handler) and the table's last DOM change.
OBSERVE = """
window.__click = undefined; window.__last = undefined;
document.addEventListener('click', () => { window.__click = performance.now(); }, {capture: true, once: true});
new MutationObserver(() => { if (window.__click !== undefined) window.__last = performance.now(); })
  .observe(document.querySelector('#board'), {subtree: true, childList: true, characterData: true, attributes: true});
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "results"
        write_synthetic(folder, args.records)
        t = time.perf_counter()
        records, _ = scan_records(folder)
        t_scan = time.perf_counter() - t
        t = time.perf_counter()
        board = L.build(records)
        t_build = time.perf_counter() - t
        rows = len(board.table)
        shown = min(rows, PAGE)  # the table sends the best PAGE rows; the CSV has them all
        n_vllm = len(L.filter_table(board.table, backends=["vllm"]))
        py, csv = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            sub = display(L.rank(L.filter_table(board.table, backends=["vllm"]), L.ACC_AVG))
            py.append(time.perf_counter() - t)
            t = time.perf_counter()
            csv_file(sub)
            csv.append(time.perf_counter() - t)
        first, filt = [], []
        with serve_app([str(ROOT / "leaderboard_app.py"), str(folder)], cwd=Path(tmp), timeout=300) as url:
            drv = browser()
            try:
                drv.get(url)  # warm-up: the browser's own caches, the server's first request
                WebDriverWait(drv, 120, poll_frequency=0.01).until(lambda d: rowcount(d) == shown)
                for _ in range(args.repeats):
                    drv.get("about:blank")
                    t = time.perf_counter()
                    drv.get(url)
                    WebDriverWait(drv, 120, poll_frequency=0.01).until(lambda d: rowcount(d) == shown)
                    first.append(time.perf_counter() - t)
                    time.sleep(3.0)  # the page's own start-up work (the charts of the other tabs) is done
                    for expect in (n_vllm, rows):  # the vLLM box checked, then unchecked: two filters
                        drv.execute_script(OBSERVE)
                        drv.find_element(By.XPATH, "//*[@id='f-backend']//label[.//span[text()='vllm']]").click()
                        WebDriverWait(drv, 60, poll_frequency=0.05).until(
                            lambda d: d.execute_script("return performance.now() - (window.__last || 1e12) > 1000"))
                        filt.append(drv.execute_script("return (window.__last - window.__click) / 1e3"))
                        note = drv.find_element(By.CSS_SELECTOR, "#shown textarea, #shown input").get_attribute("value")
                        assert rowcount(drv) == min(expect, PAGE) and f"of {expect} matching" in note, note
            finally:
                drv.quit()

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1e3:,.0f} ms (min {min(xs) * 1e3:,.0f}, max {max(xs) * 1e3:,.0f})"

    print(f"{args.records:,} records → {rows:,} rows ({shown} sent to the browser); {args.repeats} repeats after one "
          "warm-up, medians")
    print("| step | time | target | share of target |")
    print("|---|---|---|---|")
    print(f"| startup: read + validate records | {t_scan * 1e3:,.0f} ms | — | — |")
    print(f"| startup: build the table | {t_build * 1e3:,.0f} ms | — | — |")
    print(f"| first render (browser) | {fmt(first)} | 3,000 ms | {statistics.median(first) / 3:.0%} |")
    print(f"| filter (click → table redrawn) | {fmt(filt)} | 300 ms | {statistics.median(filt) / 0.3:.0%} |")
    print(f"| filter (Python only) | {fmt(py)} | — | — |")
    print(f"| CSV of the matching rows (on its button) | {fmt(csv)} | — | — |")


if __name__ == "__main__":
    main()
