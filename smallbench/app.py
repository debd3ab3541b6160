"""The leaderboard app (Gradio 6): what to run on the hardware you have.

``leaderboard_app.py`` (a Hugging Face Space's ``app_file``) and ``smallbench leaderboard`` both call :func:`main`.
Results come from a local folder or a Hub dataset repo (:func:`locate`). Every string from a record reaches the
page as text: table cells are ``str`` cells, chart labels are HTML-escaped, skipped-file notes sit in a textbox.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from smallbench import leaderboard as L
from smallbench import support
from smallbench.metrics import reference_markdown
from smallbench.publish import REPO_RE
from smallbench.results import scan_records
from smallbench.sizing import DEVICE_BANDWIDTH

#: Where the app reads records when neither an argument nor SMALLBENCH_RESULTS_REPO says otherwise.
DEFAULT_RESULTS = "results"
ALL = "(all hardware)"
ANY_ENGINE = "(weights + KV cache only)"
#: the "what fits" panel's engines: each adds what it holds besides (smallbench.backends.memory_allowances)
ENGINES = [ANY_ENGINE, *(f"{b} on {d}" for b in support.BACKENDS for d in ("GPU", "CPU"))]
#: the "what fits" panel without a decode bound (else a device of smallbench.sizing.DEVICE_BANDWIDTH)
NO_GPU = "(none)"
#: Rows the table sends to the browser at once (a visitor picks from PAGES), best first by the chosen column; the
#: CSV has every matching row.
PAGE = 50
PAGES = [25, 50, 100, 250]
TITLE = "smallbench — small open LLMs across Transformers, vLLM, llama.cpp and MLX"


def locate(source: str | None = None) -> tuple[Path, str]:
    """The local folder to read and where it came from: ``source`` (a folder, or ``hf://datasets/ORG/NAME``), else
    the Hub dataset in ``SMALLBENCH_RESULTS_REPO``, else ``SMALLBENCH_RESULTS``, else ``./results``."""
    source = source or (f"hf://datasets/{os.environ['SMALLBENCH_RESULTS_REPO']}"
                        if os.environ.get("SMALLBENCH_RESULTS_REPO") else None)
    source = source or os.environ.get("SMALLBENCH_RESULTS") or DEFAULT_RESULTS
    if source.startswith("hf://datasets/"):
        from huggingface_hub import HfApi, snapshot_download

        from smallbench.errors import SmallbenchError, one_line
        from smallbench.paths import cache_dir

        repo = source.removeprefix("hf://datasets/")
        if not REPO_RE.match(repo):
            raise SmallbenchError(f"'{source}' does not name a Hub dataset (hf://datasets/ORG/NAME)")
        # Real files in a folder per commit: the Hub cache's symlinks are refused by the scan (a link never leads a
        # scan out of its folder), and a record deleted from the dataset is gone from the next commit's folder.
        copies = cache_dir() / "results" / repo.replace("/", "--")
        try:
            sha = str(HfApi().dataset_info(repo).sha)
            folder = Path(snapshot_download(repo, repo_type="dataset", revision=sha, allow_patterns=["*.json"],
                                            local_dir=copies / sha))
            (folder / COMPLETE).touch()
            return folder, source
        except Exception as exc:  # offline, unknown repo, no access: the last whole copy, if any
            done = sorted((d for d in copies.glob("*") if (d / COMPLETE).is_file()),
                          key=lambda d: (d / COMPLETE).stat().st_mtime)
            if not done:
                raise SmallbenchError(f"cannot read the results dataset {repo}: {one_line(exc)}") from exc
            from smallbench.models import hub_reason

            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime((done[-1] / COMPLETE).stat().st_mtime))
            return done[-1], (f"{source} (not read from the Hub: {hub_reason(exc)}; its copy of commit "
                              f"{done[-1].name[:12]} from {when} UTC)")
    return Path(source), source


#: Marks a dataset copy that downloaded whole (a dotted name: never read as a record).
COMPLETE = ".smallbench-complete"


def load(source: str | None = None) -> tuple[L.Board, list[str], str]:
    """The board, the skipped-file notes, and where the records came from (the default ``./results`` absent: an
    empty board, as a new Space has; a folder that was named and is absent: an error, not an empty board)."""
    folder, where = locate(source)
    if not folder.exists() and where != DEFAULT_RESULTS:
        from smallbench.errors import SmallbenchError

        raise SmallbenchError(f"no results at '{where}'")
    records, skipped = scan_records(folder) if folder.exists() else ([], [])
    return L.build(records), skipped, where


def text(s: Any) -> str:
    """A record's string as chart text: escaped, so a model named ``<img onerror=...>`` is only characters."""
    return html.escape(str(s), quote=True)


def _label(row: pd.Series) -> str:
    parts = [row["backend"], row["quant"] or "—", row.get("config"), "dummy" if row["weights"] == "dummy" else ""]
    return " · ".join(str(p) for p in [*parts, row["hardware"]] if p)


#: The measured columns, the roofline's bound (value and kind) beside it.
MEASURED = [c for col in L.COLUMNS for c in ((col, L.BOUND, L.BOUND_KIND) if col == L.ROOFLINE else (col,))]
#: The columns the table shows until a visitor picks others (every column is in the picker and the CSV).
SHOWN = ["model", "params total (B)", "backend", "config", "quant", "weights", L.SHAPE, "hardware", L.ACC_AVG,
         *MEASURED]


def display_columns(df: pd.DataFrame) -> list[str]:
    """Every column in display order: identity first, accuracy, measured columns, bookkeeping last."""
    cols = [*L.IDENTITY, L.ACC_AVG, *L.accuracy_columns(df), *MEASURED, L.PARITY, "best at", "memory source",
            "cells", "failed", L.BUSY, "updated"]
    return [c for c in cols if c in df.columns or c in L.IDENTITY]


def display(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The table as shown (``columns``: a subset to keep, in display order), measured columns rounded."""
    cols = display_columns(df)
    out = df.reindex(columns=[c for c in cols if columns is None or c in columns])
    num = [c for c in out.select_dtypes("number").columns if c != L.PARITY]
    out[num] = out[num].round(3)
    if L.PARITY in out:  # tiny by nature: two significant digits, not three decimals
        out[L.PARITY] = out[L.PARITY].map(lambda v: float(f"{v:.2g}") if pd.notna(v) else v)
    return out


def datatypes(df: pd.DataFrame) -> list[str]:
    return ["number" if pd.api.types.is_numeric_dtype(df[c]) else "str" for c in df.columns]


def column_widths(df: pd.DataFrame) -> dict[str, str]:
    """A fixed width per column: its header or its longest value in the whole table (at most 40 characters of
    the table's monospace font). Given widths, the browser's table no longer measures every cell on each filter,
    about a quarter of a filter's redraw (benchmarks/README.md); they come from every row, so no filter moves
    them."""
    shown = display(df)
    longest = {c: shown[c].dropna().astype(str).str.len().max() for c in shown}  # NaN: no value at all
    return {c: f"{min(max(len(c), 0 if pd.isna(n) else int(n)), 40) * 9 + 24}px" for c, n in longest.items()}


def tradeoff_figure(df: pd.DataFrame, x: str, x_higher: bool, title: str):
    """Accuracy against ``x``, one point per row, the Pareto frontier drawn; dummy rows carry no accuracy."""
    import plotly.graph_objects as go

    pts = df.dropna(subset=[x, L.ACC_AVG])
    fig = go.Figure()
    for backend, group in pts.groupby("backend"):
        fig.add_trace(go.Scatter(
            x=group[x], y=group[L.ACC_AVG], mode="markers", name=text(backend),
            text=[text(f"{m} · {q}") for m, q in zip(group["model"], group["quant"], strict=True)],
            hovertemplate="%{text}<br>%{x:.3g}, %{y:.1f} %<extra>%{fullData.name}</extra>",
        ))
    if not pts.empty:
        front = pts[L.pareto(pts, x, L.ACC_AVG, x_higher, True)].sort_values(x)
        fig.add_trace(go.Scatter(x=front[x], y=front[L.ACC_AVG], mode="lines", name="Pareto frontier",
                                 line={"dash": "dash", "color": "black"}, hoverinfo="skip"))
    fig.update_layout(title=title if not pts.empty else f"{title}: no row has both values", xaxis_title=x,
                      yaxis_title=L.ACC_AVG, height=420, margin={"t": 50})
    return fig


def compare_figure(board: L.Board, rows: pd.DataFrame, col: str):
    """One model across backends: the median of ``col`` with its 95 % bootstrap interval; bars that
    ``smallbench compare`` finds no significant difference from the best bar are marked so."""
    import plotly.graph_objects as go

    stat = L.COLUMNS[col][1]
    higher = L.higher_is_better(col)
    bars = []
    for idx, row in rows.iterrows():
        hit = L.headline(board.records[idx])[col]
        if hit is None:
            continue
        m = hit[1]
        scale = row[col] / m.value if m.value else 1.0
        lo, hi = ((m.stats.ci95_low * scale, m.stats.ci95_high * scale) if m.stats and stat != "p99"
                  else (row[col], row[col]))
        bars.append((_label(row), row[col], lo, hi, hit[:2]))
    fig = go.Figure()
    if bars:
        best = (max if higher else min)(bars, key=lambda b: b[1])
        names = [text(b[0]) + ("  (no significant difference from best)" if b is not best and
                               L.no_significant_difference(b[4], best[4]) else "") for b in bars]
        fig.add_trace(go.Bar(x=names, y=[b[1] for b in bars],
                             error_y={"type": "data", "symmetric": False, "array": [b[3] - b[1] for b in bars],
                                      "arrayminus": [b[1] - b[2] for b in bars]}))
    fig.update_layout(title=f"{col} (median, 95 % CI)", yaxis_title=col, height=380, margin={"t": 50})
    return fig


def distribution_figure(board: L.Board, rows: pd.DataFrame):
    """TTFT and inter-token latency distributions from the latency suite's raw samples (ms)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("TTFT (ms)", "ITL (ms)"))
    for idx, row in rows.iterrows():
        for i, metric in enumerate(("ttft", "itl"), start=1):
            samples = board.samples(idx, metric, suite="latency")
            if samples:
                fig.add_trace(go.Box(y=[s * 1e3 for s in samples], name=text(_label(row)), boxpoints="all",
                                     showlegend=False), row=1, col=i)
    fig.update_layout(height=380, margin={"t": 50})
    return fig


def concurrency_figure(board: L.Board, rows: pd.DataFrame):
    """Output tok/s against batch size (throughput suite) and concurrency (serving suite), with 95 % CIs."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for idx, row in rows.iterrows():
        for sweep in ("batch_size", "concurrency"):
            pts = [p for p in board.curve(idx) if p[0] == sweep]
            if pts:
                fig.add_trace(go.Scatter(
                    x=[p[1] for p in pts], y=[p[2] for p in pts], mode="lines+markers",
                    name=text(f"{_label(row)} ({sweep.replace('_', ' ')})"),
                    error_y={"type": "data", "symmetric": False, "array": [p[4] - p[2] for p in pts],
                             "arrayminus": [p[2] - p[3] for p in pts]},
                ))
    fig.update_layout(title="throughput vs concurrency", xaxis_title="batch size / concurrent requests",
                      yaxis_title="output tok/s", xaxis_type="log", height=380, margin={"t": 50})
    return fig


def methodology_markdown() -> str:
    """The methodology tab: every metric's declaration and the rules that pick a row's numbers (our own text)."""
    rules = (L.headline.__doc__ or "").split("\n\n", 1)[-1]
    return "\n\n".join([
        "## Metrics\nEvery number comes from raw samples kept in the records: warm-up excluded, the median of the "
        "measured repeats, with a 95 % bootstrap interval. Units below are what records store; the table shows ms "
        "for seconds, GiB for bytes and % for fractions.",
        reference_markdown(),
        "## Which number a row shows\n" + "\n".join(line.strip() for line in rules.strip().splitlines()),
        f"## Roofline\n`{L.ROOFLINE}` is a share of the bandwidth in `{L.BOUND}`; `{L.BOUND_KIND}` says what that "
        "is: NVML's clock × bus width or a data sheet on a GPU, a measurement on a CPU (this machine's best read; "
        "records before 2026-12-01 measured one run's copy, which reads lower). Shares compare only between rows of "
        "one kind of bound.",
        f"## A busy machine\n`{L.BUSY}` counts a row's cells whose suite ran while other processes took a share "
        "of the machine's CPUs, or a hypervisor held them back (steal): their times can be slower than the "
        "machine is, with nothing in their spread to show it (docs/metrics.md).",
        "## Accuracy\nPer task: " + ", then ".join(L.PRIMARY_ACCURACY) + " (the first the task reports; the strict "
        "filter first for generation tasks). The average is over tasks scored as fractions. Rows with dummy "
        "(random) weights carry no accuracy.",
        "## Trade-off charts\nThe Pareto frontier joins the rows no other row beats on both axes. A bar is marked "
        "*no significant difference from best* when `smallbench compare` would say so: the 95 % bootstrap interval "
        "of the ratio of the two medians (from the raw samples) holds 1, or the ratio is within 5 %.",
    ])


def csv_file(df: pd.DataFrame) -> str:
    path = Path(tempfile.mkdtemp(prefix="smallbench-")) / "smallbench-leaderboard.csv"
    df.to_csv(path, index=False)
    return str(path)


def _choices(df: pd.DataFrame, col: str) -> list[str]:
    return sorted({str(v) for v in df[col].dropna() if str(v)})


def build_app(board: L.Board, skipped: list[str], where: str):
    import gradio as gr

    df = board.table
    sort_cols = [c for c in (L.ACC_AVG, L.DECODE, L.THROUGHPUT, L.TTFT, L.PEAK, L.ROOFLINE, L.ENERGY) if c in df]
    total = df["params total (B)"].dropna()
    pmax = float(math.ceil(total.max())) if not total.empty else 32.0
    hardware = _choices(df, "hardware")
    models = _choices(df, "model")

    def matching(sort, hw, be, role, quant, weights, shapes, lo, hi, search) -> pd.DataFrame:
        sub = L.filter_table(df, hw, be, role, quant, weights, (lo, hi) if (lo, hi) != (0, pmax) else None, search,
                             shapes)
        return L.rank(sub, sort)

    def view(*args) -> tuple[pd.DataFrame, str]:
        """The best ``rows`` matching rows in the chosen columns, and a note saying how many matched."""
        *filters, columns, rows = args
        sub, rows = matching(*filters), int(rows or PAGE)
        note = (f"{len(sub)} matching rows" if len(sub) <= rows else
                f"the best {rows} of {len(sub)} matching rows by {filters[0]}; narrow the filters, show more rows, "
                "or download them all")
        return display(sub.head(rows), columns), note

    def on_filter(*args):
        """The table and note; the CSV link is cleared: it is written, with every column, only when asked for."""
        return *view(*args), None

    def on_columns(*args):
        """As on_filter, with the table's column types sent again (they follow the chosen columns)."""
        shown, note = view(*args)
        return gr.Dataframe(shown, **column_props(shown)), note, None

    def on_csv(*args):
        return csv_file(display(matching(*args[:-2])))

    all_columns = display_columns(df)
    widths = column_widths(df)

    def column_props(shown: pd.DataFrame) -> dict[str, list[str]]:
        """The table's per-column settings, which follow the chosen columns: types and fixed widths."""
        return {"datatype": datatypes(shown), "column_widths": [widths[c] for c in shown]}

    first = view(sort_cols[0], *([None] * 5), None, 0, pmax, "", SHOWN, PAGE)

    def on_tradeoff(hw):
        sub = df[df["hardware"] == hw] if hw else df
        return (tradeoff_figure(sub, L.DECODE, True, f"accuracy vs decode speed · {text(hw or 'all hardware')}"),
                tradeoff_figure(sub, L.PEAK, False, f"accuracy vs peak memory · {text(hw or 'all hardware')}"))

    def on_compare(model, hw, col):
        rows = df[(df["model"] == model) & ((df["hardware"] == hw) if hw != ALL else True)]
        return compare_figure(board, rows, col), distribution_figure(board, rows), concurrency_figure(board, rows)

    def on_fit(memory, quant, context, engine, gpu):
        from smallbench.errors import SmallbenchError
        from smallbench.sizing import parse_bytes

        backend, _, device = engine.partition(" on ") if engine != ANY_ENGINE else (None, "", "cuda")
        try:
            size = parse_bytes(memory, "memory", positive=True)
            return L.fits(size, quant, int(context or 0), backend=backend, device=device.lower(),
                          gpu=None if gpu == NO_GPU else gpu), ""
        except (SmallbenchError, ValueError, KeyError) as exc:
            return pd.DataFrame(), f"error: {exc}"

    with gr.Blocks(title="smallbench leaderboard") as demo:
        gr.Markdown(f"# {TITLE}\nSpeed, memory and accuracy of the same weights on every backend, per hardware. "
                    "Missing values are blank, never 0. Rows marked `dummy` ran random weights: speed and memory "
                    "only.")
        gr.Textbox(value=f"{len(df)} rows from {board.read} records in {where}",
                   show_label=False, interactive=False, elem_id="source")
        gr.Textbox(value="\n".join(skipped), label=f"Skipped files ({len(skipped)})", visible=bool(skipped),
                   interactive=False, lines=min(6, max(1, len(skipped))), elem_id="skipped")
        with gr.Tab("Leaderboard", elem_id="tab-board"):
            with gr.Row():
                f_hw = gr.CheckboxGroup(hardware, label="hardware", elem_id="f-hardware")
                f_be = gr.CheckboxGroup(_choices(df, "backend"), label="backend", elem_id="f-backend")
                f_role = gr.CheckboxGroup(_choices(df, "role"), label="sponsor / reference", elem_id="f-role")
            with gr.Row():
                f_quant = gr.CheckboxGroup(_choices(df, "quant"), label="quantization", elem_id="f-quant")
                f_w = gr.CheckboxGroup(["real", "dummy"], label="weights", elem_id="f-weights")
                f_shape = gr.CheckboxGroup(_choices(df, L.SHAPE), label="shape (prompt→gen tokens)", elem_id="f-shape")
                f_lo = gr.Slider(0, pmax, 0, step=0.1, label="params total ≥ (B)")
                f_hi = gr.Slider(0, pmax, pmax, step=0.1, label="params total ≤ (B)")
                f_search = gr.Textbox(label="model contains", elem_id="f-search")
            with gr.Row():
                f_sort = gr.Dropdown(sort_cols, value=sort_cols[0], label="best first by", elem_id="f-sort")
                f_rows = gr.Dropdown(PAGES, value=PAGE, label="rows shown", elem_id="f-rows")
                shown = gr.Textbox(first[1], show_label=False, interactive=False, elem_id="shown")
            with gr.Accordion("columns", open=False):
                f_cols = gr.CheckboxGroup(all_columns, value=[c for c in SHOWN if c in all_columns],
                                          show_label=False, elem_id="f-columns")
            table = gr.Dataframe(first[0], **column_props(first[0]), interactive=False, pinned_columns=1,
                                 max_height=640, show_search="search", elem_id="board", wrap=False)
            with gr.Row():
                make_csv = gr.Button("CSV of all matching rows", size="sm", elem_id="make-csv")
                download = gr.File(label="CSV", interactive=False, elem_id="download")
            inputs = [f_sort, f_hw, f_be, f_role, f_quant, f_w, f_shape, f_lo, f_hi, f_search, f_cols, f_rows]
            for comp in inputs:
                # straight request/response (no queue, no spinner): the filter is a pandas mask, milliseconds
                event = comp.submit if comp is f_search else comp.change
                event(on_columns if comp is f_cols else on_filter, inputs, [table, shown, download], queue=False,
                      show_progress="hidden")
            make_csv.click(on_csv, inputs, download, queue=False)
        with gr.Tab("Trade-offs", elem_id="tab-tradeoffs"):
            t_hw = gr.Dropdown(hardware, value=hardware[0] if hardware else None, label="hardware")
            p1, p2 = gr.Plot(elem_id="plot-speed"), gr.Plot(elem_id="plot-memory")
            t_hw.change(on_tradeoff, t_hw, [p1, p2])
            demo.load(on_tradeoff, t_hw, [p1, p2])
        with gr.Tab("Compare backends", elem_id="tab-compare"):
            with gr.Row():
                top = df["model"].value_counts()  # the model measured on the most backends/quants comes first
                c_model = gr.Dropdown(models, value=top.index[0] if len(top) else None, label="model")
                c_hw = gr.Dropdown([ALL, *hardware], value=ALL, label="hardware")
                c_col = gr.Dropdown([L.DECODE, L.TTFT, L.TPOT, L.PEAK, L.ROOFLINE], value=L.DECODE, label="metric")
            c1, c2, c3 = gr.Plot(elem_id="plot-compare"), gr.Plot(elem_id="plot-dist"), gr.Plot(elem_id="plot-conc")
            for comp in (c_model, c_hw, c_col):
                comp.change(on_compare, [c_model, c_hw, c_col], [c1, c2, c3])
            demo.load(on_compare, [c_model, c_hw, c_col], [c1, c2, c3])
        with gr.Tab("What fits", elem_id="tab-fit"):
            with gr.Row():
                w_mem = gr.Textbox("16GB", label="memory (16GB, 24GiB, 80G…)")
                w_quant = gr.Dropdown(["bfloat16", "float16", "Q8_0", "Q6_K", "Q4_K_M", "8bit", "4bit"],
                                      value="Q4_K_M", label="weights type", elem_id="w-quant")
                w_ctx = gr.Number(4096, label="context (tokens)", precision=0)
                w_engine = gr.Dropdown(ENGINES, value=ANY_ENGINE, label="engine (adds what it holds besides)",
                                       elem_id="w-engine")
                w_gpu = gr.Dropdown([NO_GPU, *(name for name, _ in DEVICE_BANDWIDTH)], value=NO_GPU,
                                    label="GPU or Apple chip (decode bound: its bandwidth)", elem_id="w-gpu")
            w_err = gr.Textbox(show_label=False, interactive=False, elem_id="w-err")
            w_table = gr.Dataframe(interactive=False, elem_id="fits")
            w_inputs = [w_mem, w_quant, w_ctx, w_engine, w_gpu]
            for comp in w_inputs:
                comp.change(on_fit, w_inputs, [w_table, w_err])
            demo.load(on_fit, w_inputs, [w_table, w_err])
        with gr.Tab("Methodology", elem_id="tab-method"):
            gr.Markdown(methodology_markdown())
    return demo


def main(source: str | None = None, host: str | None = None, port: int | None = None, **launch: Any) -> None:
    """Serve the leaderboard. Binds 127.0.0.1 unless ``host`` or GRADIO_SERVER_NAME says otherwise (a Space sets
    it to 0.0.0.0 inside its container)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    _check_address(host, port)
    board, skipped, where = load(source)
    demo = build_app(board, skipped, where)
    demo.launch(server_name=host, server_port=port, ssr_mode=False, **launch)


def _check_address(host: str, port: int | None) -> None:
    """One line before any work where the server could not listen: a port out of range, a host this machine cannot
    bind, a port already taken (Gradio would say so after loading, naming its own parameters)."""
    import socket

    from smallbench.errors import SmallbenchError

    if port is not None and not 1 <= port <= 65535:
        raise SmallbenchError(f"--port needs a port number from 1 to 65535, got {port}")
    try:
        family = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port or 0))
    except OSError as exc:
        raise SmallbenchError(f"cannot serve on {host}:{port or 'any port'}: {exc.strerror or exc}") from None

