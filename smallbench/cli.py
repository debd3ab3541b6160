"""Command line: ``smallbench run | list | env | report``."""

from __future__ import annotations

import functools
import inspect
import json
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from smallbench.errors import SmallbenchError, Stopped, one_line

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Benchmark small open LLMs across inference backends.")
#: User text (model ids, paths, errors) is printed as text: no rich markup, no highlighting ("[/x]" is characters).
console = Console(markup=False, highlight=False, emoji=False)
err_console = Console(stderr=True, markup=False, highlight=False, emoji=False)


def wide_console() -> Console:
    """stdout for a wide table: the terminal, or, piped, 200 columns (whole lines, not cut at 80)."""
    return console if console.is_terminal else Console(width=200, markup=False, highlight=False, emoji=False)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _ints(value: str | None, option: str) -> list[int] | None:
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",")]  # an empty item ("1,,2", "1,") is an error, not nothing
    except ValueError:
        raise SmallbenchError(f"{option} takes comma-separated integers, got '{value}'") from None
    if not out or min(out) < 1:
        raise SmallbenchError(f"{option} needs positive integers, got '{value}'")
    return out


@app.command()
def run(
    model: Annotated[str, typer.Option("--model", "-m", help="Name, local path or Hub id; comma list.")] = "tiny-llama",
    backend: Annotated[str, typer.Option("--backend", "-b", help="Backend(s), comma list.")] = "transformers",
    suite: Annotated[str, typer.Option("--suite", "-s", help="Suite(s), comma list.")] = "latency,throughput,memory",
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for result records.")] = Path("results"),
    force: Annotated[bool, typer.Option(help="Re-run cells that already have a successful record.")] = False,
    rerun_busy: Annotated[bool, typer.Option(help="Re-run the cells whose record says the machine was busy while "
                                                  "they ran (the others are reused).")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds a suite may take (the first of a group: with the load) "
                                                "before its process is killed.")] = 1800.0,
    executor: Annotated[str, typer.Option(help="local: a child process per group, with --timeout | inline: in this "
                                               "process (no isolation, no timeout) | ray: a task per group on a Ray "
                                               "cluster")] = "local",
    address: Annotated[str | None, typer.Option(help="ray: the cluster, auto | HOST:PORT | ray://HOST:PORT")] = None,
    retries: Annotated[int, typer.Option(help="ray: re-runs of a group whose node died or worker crashed")] = 1,
    ray_resources: Annotated[str | None, typer.Option(
        help="ray: what each group asks of a node, JSON, e.g. '{\"H100\": 1}' (GPU: 1 with --device cuda)")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show the cells (with ray: where they can run); run none.")] = False,
    isolate: Annotated[str, typer.Option(help="group: a model's suites share one load | suite: one load (and "
                                              "process) per suite")] = "group",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto | float32 | float16 | bfloat16")] = "auto",
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")] = None,
    dummy: Annotated[bool, typer.Option(help="Random weights from the model's config: speed/memory only.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model repo's own Python code to run.")] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the backend.")] = None,
    preset: Annotated[str | None, typer.Option(help="A standard shape: pp512/tg128 | b1/256in/64out | "
                                                    "b1,10/1024in/1024out (prompt and generated tokens for every "
                                                    "suite; batch sizes for throughput, concurrency for serving)."
                                               )] = None,
    prompt_tokens: Annotated[int | None, typer.Option(help="Prompt length in tokens.")] = None,
    gen_tokens: Annotated[int | None, typer.Option(help="Generated tokens per request.")] = None,
    batch_sizes: Annotated[str | None, typer.Option(help="Throughput batch sizes, comma list.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Measured repetitions per suite.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up repetitions (excluded).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for prompts / few-shot sampling.")] = None,
    cooldown: Annotated[float | None, typer.Option(help="Seconds of idle between trials (laptops: heat).")] = None,
    tasks: Annotated[str | None, typer.Option(help="Accuracy tasks, comma list (smallbench list tasks).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Accuracy data: local HF-format files, no Hub.")] = None,
    limit: Annotated[int | None, typer.Option(help="Accuracy: documents per task.")] = None,
    num_fewshot: Annotated[int | None, typer.Option(help="Accuracy: few-shot examples (default: the task's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Backend batch size for scoring / generation.")] = None,
    quant: Annotated[str | None, typer.Option(help="Weights variants, comma list: Q4_K_M (GGUF), 4bit (MLX)")] = None,
    ctx_size: Annotated[int | None, typer.Option(help="llama-cpp, vllm: context tokens (default ≤ 4096).")] = None,
    n_gpu_layers: Annotated[int | None, typer.Option(help="llama-cpp: layers on the GPU (default all).")] = None,
    extra_bufts: Annotated[str | None, typer.Option(
        help="llama-cpp: AMX / repacked weight buffers: auto | on | off (auto: off on AMX CPUs).")] = None,
    prefix_caching: Annotated[bool, typer.Option(help="vllm: keep prefix caching on (off by default).")] = False,
    enforce_eager: Annotated[bool, typer.Option(help="vllm: no torch.compile / CUDA graphs (faster start, slower "
                                                     "steps).")] = False,
    concurrency: Annotated[str | None, typer.Option(help="Serving: requests in flight, comma list.")] = None,
    request_rate: Annotated[float | None, typer.Option(help="Serving: Poisson arrivals per second.")] = None,
    ttft_slo_ms: Annotated[float | None, typer.Option(help="Serving: TTFT SLO for goodput (ms).")] = None,
    tpot_slo_ms: Annotated[float | None, typer.Option(help="Serving: TPOT SLO for goodput (ms).")] = None,
) -> None:
    """Run every (model × backend × quant × suite) cell and print a summary. The suites of one model on one backend
    share one load, in a child process of their own (--isolate suite: one per suite)."""
    from smallbench import models as model_registry
    from smallbench import runner, validate
    from smallbench.backends import get_backend_class
    from smallbench.backends.llama_cpp import EXTRA_BUFTS
    from smallbench.executors import NAMES, get_executor
    from smallbench.hardware import hardware_info, software_versions
    from smallbench.ray_executor import parse_resources
    from smallbench.results import redact
    from smallbench.suites import get_suite

    backends, suites, model_ids = _split(backend), _split(suite), _split(model)
    if not backends or not suites or not model_ids:
        raise SmallbenchError("--model, --backend and --suite each need at least one value")
    for b in backends:
        cls = get_backend_class(b)
        if (why := cls.missing()) is not None:
            raise SmallbenchError(why)
        if "serving" in suites and not cls.capabilities.server_mode:
            raise SmallbenchError(f"the serving suite needs a server backend (e.g. vllm-server); '{b}' has none")
    settings = {k: v for k, v in {
        "preset": preset, "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
        "batch_sizes": _ints(batch_sizes, "--batch-sizes"), "repeats": repeats, "warmup": warmup, "seed": seed,
        "cooldown_s": cooldown,
        "tasks": _split(tasks) if tasks is not None else None, "data_dir": str(data_dir) if data_dir else None,
        "limit": limit, "num_fewshot": num_fewshot, "concurrency": _ints(concurrency, "--concurrency"),
        "request_rate": request_rate, "ttft_slo_ms": ttft_slo_ms, "tpot_slo_ms": tpot_slo_ms,
    }.items() if v is not None}
    # every setting checked here, in one pass, before any cell starts (smallbench/validate.py)
    validate.check_choice("--device", device, validate.DEVICE)
    validate.check_choice("--dtype", dtype, validate.DTYPES)
    validate.check_number("--timeout", timeout, 0, strict=True)
    validate.check_choice("--executor", executor, NAMES)
    validate.check_number("--retries", retries, 0)
    if (address is not None or ray_resources is not None) and executor != "ray":
        raise SmallbenchError("--address and --ray-resources apply to --executor ray")
    ray_options = {"address": address or "auto", "retries": retries, "resources": parse_resources(ray_resources)}
    validate.check_choice("--isolate", isolate, ("group", "suite"))
    for name, value in (("--batch-size", batch_size), ("--ctx-size", ctx_size), ("--threads", threads)):
        validate.check_number(name, value, 1)
    validate.check_number("--n-gpu-layers", n_gpu_layers, 0)
    if extra_bufts is not None:
        validate.check_choice("--extra-bufts", extra_bufts, tuple(EXTRA_BUFTS))
    validate.check_quants(backends, _split(quant))
    validate.check_output(output)
    suite_settings = {}
    for s in suites:
        suite_obj = get_suite(s)
        try:
            suite_settings[s] = suite_obj.settings(settings)
        except ValueError as exc:
            err = exc.errors()[0] if hasattr(exc, "errors") else None
            where = f"--{str(err['loc'][0]).replace('_', '-')}: " if err and err.get("loc") else ""
            msg = err["msg"] if err else str(exc)
            raise SmallbenchError(f"invalid settings for suite '{s}': {where}{msg}") from None
        if dummy and suite_obj.needs_real_weights:
            raise SmallbenchError(f"--dummy runs random weights: the {s} suite means nothing on them (speed and "
                                  "memory only)")
        suite_obj.preflight(suite_settings[s])
    load = {"device": device, "dtype": dtype, "dummy": dummy, "trust_remote_code": trust_remote_code}
    options = {k: v for k, v in {"threads": threads, "batch_size": batch_size, "n_ctx": ctx_size,
                                 "n_gpu_layers": n_gpu_layers, "extra_bufts": extra_bufts}.items()
               if v is not None}
    if prefix_caching:
        options["prefix_caching"] = True
    if enforce_eager:
        options["enforce_eager"] = True
    if options:
        load["options"] = options
    resolved = [model_registry.resolve(m, revision, dummy, trust_remote_code) for m in model_ids]
    at_hand = [(m.id, m.source, m.revision) for m in resolved]
    validate.check_context(at_hand, suite_settings, ctx_size)
    validate.check_backends(at_hand, backends, device)
    for m in model_ids:
        model_registry.check_versions(m, backends)
    hardware, software = hardware_info(), software_versions()
    run_id = runner.new_run_id()
    cells = runner.plan(resolved, backends, suites, settings, load, hardware, output, run_id, _split(quant) or None)
    runner_executor = get_executor(executor, hardware, software, **(ray_options if executor == "ray" else {}))
    if executor == "ray":
        runner_executor.connect()  # a cluster that cannot be reached is one line, before any progress bar
    if dry_run:
        wide_console().print(plan_table(cells, runner_executor, isolate, force, rerun_busy))
        return

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=False) as progress:
        task = progress.add_task("starting", total=len(cells))

        def on_start(cell: runner.Cell) -> None:
            progress.update(task, description=f"running {cell.label}")

        def on_done(cell: runner.Cell, rec, reused: bool) -> None:
            state = "reused" if reused else rec.status
            colour = {"ok": "green", "reused": "cyan"}.get(state, "red")
            line = cell.label + (f": {rec.error}" if rec.error else "")
            progress.console.print(Text(f"{state:>6}", style=colour), redact(line))  # the error too
            progress.advance(task)

        try:
            records = runner.execute(cells, timeout, force, hardware, software, on_start, on_done,
                                     executor=runner_executor, isolate=isolate, rerun_busy=rerun_busy)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (runner.Interrupted): the cell was stopped and recorded
            sig = exc.signal if isinstance(exc, runner.Interrupted) else signal.SIGINT
            raise Stopped(sig.name, sig.value) from None
        progress.update(task, description="done")
    print_tables(records)
    console.print(f"results: {output}/  (load with smallbench.load_results('{output}'))")
    if any(r.status != "ok" for r in records):
        raise typer.Exit(1)


def plan(**kwargs) -> None:
    """Dry run: the cells `smallbench run` would run with these options, their groups, which are already done, and
    (--executor ray) whether the cluster can place them."""
    run(**{**kwargs, "dry_run": True})


_run_signature = inspect.signature(run, eval_str=True)
plan.__signature__ = _run_signature.replace(  # run's options, less --dry-run
    parameters=[p for n, p in _run_signature.parameters.items() if n != "dry_run"])
app.command("plan")(plan)


def plan_table(cells, executor, isolate: str, force: bool, rerun_busy: bool = False) -> Table:
    """The dry run: every cell, its group, whether it would run or be reused, and (ray) whether the cluster can
    place it."""
    from smallbench import runner
    from smallbench.cell import GroupSpec

    nodes = executor.nodes() if executor.name == "ray" else None
    table = Table(title=f"smallbench plan ({executor.name} executor, one load per {isolate})", box=box.SIMPLE_HEAD)
    for col in ("group", "model", "backend", "suite", "cell", "state", "placement"):
        table.add_column(col, no_wrap=col != "placement")
    for n, idx in enumerate(runner.groups(cells, isolate), 1):
        where = "here" if nodes is None else (executor.unplaceable(GroupSpec(cells=[cells[i].spec for i in idx]),
                                                                   nodes) or "placeable")
        for i in idx:
            c = cells[i]
            state = "reuse" if not force and runner.finished(c, rerun_busy) is not None else "run"
            model = c.spec.model.id + (f" [{c.spec.model.quant}]" if c.spec.model.quant else "")
            table.add_row(str(n), Text(model), c.spec.backend, c.spec.suite, c.spec.cell_id, state, Text(where))
    return table


def print_tables(records) -> None:
    """The speed/memory summary (if any such cell ran), one accuracy table per model × backend, the parity table."""
    speed = [r for r in records if r.suite not in ("accuracy", "parity") or r.status != "ok"]  # failed cells here
    out = wide_console()  # piped: whole rows, where 80 columns would cut the summary's last numbers off
    if speed:
        for table in summary_tables(speed, out):
            out.print(table)
    for table in accuracy_tables(records):
        out.print(table)
    if any(r.suite == "parity" and r.status == "ok" for r in records):
        for table in parity_tables(records, out):
            out.print(table)
    warn(slowdown_warnings(records) + busy_warnings(records))


def warn(lines: list[str]) -> None:
    for line in lines:
        err_console.print(Text("warning:", style="yellow"), Text(line))


def slowdown_warnings(records) -> list[str]:
    """One line per cell whose trials got steadily slower (the drift flag; see docs/metrics.md)."""
    out = []
    for r in records:
        flagged = [m for m in r.metrics if m.drift and m.drift.flag]
        if flagged:
            worst = max(flagged, key=lambda m: m.drift.slowdown)
            where = "".join(f" {k}={v}" for k, v in worst.labels.items())
            out.append(f"{r.model.id} · {r.backend.name} · {r.suite}: {worst.name}{where} got steadily slower over "
                       f"{worst.drift.n} trials (last third {worst.drift.slowdown:+.0%} vs first, rank correlation "
                       f"{worst.drift.spearman:.2f}); thermal throttling? try --cooldown SECONDS")
    return out


def busy_warnings(records) -> list[str]:
    """One line per cell that ran while the machine was busy (the busy flag; see docs/metrics.md)."""
    out = []
    for r in records:
        c = r.contention
        if c is not None and c.busy:
            steal = (f", the hypervisor held back {c.steal:.0%} of the CPU time asked for (steal)"
                     if (c.steal or 0) >= 0.005 else "")
            out.append(f"{r.model.id} · {r.backend.name} · {r.suite}: the machine was busy while it ran (other "
                       f"processes took {c.others_cpus:.2f} of {c.cpus} CPUs{steal}); its times may be slower than "
                       f"this machine's: run it again when the machine is quiet (--rerun-busy)")
    return out


def parity_tables(records, console: Console, reference: str | None = None) -> list[Table]:
    """Every backend and quantization against the reference backend for the same weights (smallbench.parity)."""
    from smallbench import parity

    backends = [r.backend.name for r in records if r.suite == "parity" and r.status == "ok"]
    reference = reference or ("transformers" if "transformers" in backends else backends[0])
    df = parity.table(records, reference)
    names = ["model", "backend", "device", "quant", "reference"]
    cols = {"max |Δ loglik|": {}, "mean |Δ loglik|": {}, "greedy prefix": {}, "tokenizer": {},
            "within tolerance": {}, "accuracy Δ": {"no_wrap": False}}
    rows = []
    for _, row in df.iterrows():
        ok = row["within tolerance"]
        verdict = Text("yes" if ok else f"no (≥ {parity.TOLERANCE:g}: drift)", style="green" if ok else "yellow")
        cells = {c: Text(f"{row[c]:.2e}" if "Δ loglik" in c else str(row[c])) for c in [*names, *cols]}
        rows.append(list({**cells, "within tolerance": verdict}.values()))
    caption = f"no parity record to compare with a {reference} one of the same weights and settings"
    return split_tables(console, f"parity against {reference} (same weights, probe set {parity.PROBE_HASH})",
                        names, cols, rows, caption=None if rows else caption)


def summary_tables(records, console: Console) -> list[Table]:
    """The leaderboard's rows (model, weights, quant, backend, device, engine config, hardware, shape), columns and
    rules (smallbench.leaderboard): medians, missing shown as —."""
    from smallbench import leaderboard as L

    df = L.build(records).table
    cols = [L.TTFT, L.TPOT, L.DECODE, L.THROUGHPUT, L.PEAK, L.ROOFLINE]
    # device, shape and hardware are columns only where rows differ in them (a folder of several runs), status only
    # where a cell failed: one run's table stays narrow, and the title says the device and shape its rows share
    labels = {"device": "device", L.SHAPE: "shape", "hardware": "hardware"}
    varying = [c for c in labels if not df.empty and df[c].nunique() > 1]
    shared = [str(df[c].iloc[0]) for c in ("device", L.SHAPE) if c not in varying and not df.empty and df[c].iloc[0]]
    failed = bool(not df.empty and df["failed"].astype(bool).any())
    names = ["model", "backend", *(labels[c] for c in varying), *(["status"] if failed else [])]
    rows = []
    for _, row in df.iterrows():
        model = f"{row['model']} [{row['quant']}]" if row["quant"] else row["model"]
        status = ["ok" if not row["failed"] else f"{row['failed']} failed"] if failed else []
        backend = f"{row['backend']} ({row['config']})" if row["config"] else row["backend"]
        rows.append([model, backend, *(row[c] or "—" for c in varying), *status,
                     *("—" if math.isnan(row[c]) else f"{row[c]:,.{_digits(row[c])}f}" for c in cols)])
    title = f"smallbench summary (medians{''.join(f', {x}' for x in shared)})"
    return split_tables(console, title, names, dict.fromkeys(cols, {"justify": "right"}), rows)


def split_tables(console: Console, title: str, names: list[str], cols: dict[str, dict], rows: list[list],
                 caption: str | None = None) -> list[Table]:
    """One table of ``rows`` (cells of the ``names`` columns, then of ``cols``: header → rich column options) where
    it fits ``console``, else the unit under each header; narrower still, as pandas prints a wide frame, several
    tables, each with the ``names`` columns and as many of ``cols`` as fit, headers a word per line. A cell of
    ``cols`` is never cut."""

    keys = list(cols)

    def table(chosen: list[int], headers: str, wrap_names: bool = False) -> Table:
        t = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, collapse_padding=headers == "words")
        for name in names:
            t.add_column(name, no_wrap=not wrap_names, overflow="fold")
        for j in chosen:
            col = keys[j]
            head = {"line": col, "unit": col.replace(" (", "\n("), "words": col.replace(" ", "\n")}[headers]
            t.add_column(head, **{"no_wrap": True, **cols[col]})
        for r in rows:
            t.add_row(*r[: len(names)], *(r[len(names) + j] for j in chosen))
        return t

    unclamped = console.options.update_width(10**4)  # rich clamps a measurement to the width it is given

    def fits(t: Table) -> bool:  # at its natural width: nothing wraps
        return console.measure(t, options=unclamped).maximum <= console.width

    left = list(range(len(keys)))
    for headers in ("line", "unit"):
        if fits(whole := table(left, headers)):
            return [whole]
    tables = []
    while left:
        n = len(left)
        while n > 1 and not fits(table(left[:n], "words")):
            n -= 1
        t = table(left[:n], "words")
        tables.append(t if fits(t) else table(left[:n], "words", wrap_names=True))
        left = left[n:]
    for i, t in enumerate(tables, 1):
        t.title = f"{title} · {i} of {len(tables)}"
    return tables


def _digits(v: float) -> int:
    return 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2


def accuracy_tables(records) -> list[Table]:
    """Per (model, backend): one row per task metric, value ± stderr over n documents."""
    tables = []
    for r in records:
        rows = [m for m in r.metrics if r.suite == "accuracy" and m.labels.get("subtask") is None]
        if not rows:
            continue
        table = Table(title=f"accuracy · {r.model.id} · {r.backend.name}", box=box.SIMPLE_HEAD)
        for col in ("task", "metric"):
            table.add_column(col, no_wrap=True)
        for col in ("value", "± stderr", "n", "shots"):
            table.add_column(col, justify="right", no_wrap=True)
        for m in rows:
            name = m.name if m.labels.get("filter") in (None, "none") else f"{m.name} ({m.labels['filter']})"
            se = "—" if m.stderr is None else f"{m.stderr:.4f}"
            table.add_row(m.labels.get("task"), name, f"{m.value:.4f}", se, str(m.labels.get("n")),
                          str(m.labels.get("num_fewshot")))
        tables.append(table)
    return tables


@app.command("list")
def list_(what: Annotated[str, typer.Argument(help="models | backends | suites | tasks")]) -> None:
    """List registered models, backends (with availability) or suites."""
    if what == "models":
        from smallbench import sizing, support
        from smallbench.models import catalogue

        t = Table("name", "repo", "arch", "params total", "active", "licence", "gated", "remote code", "backends",
                  caption="backends: where the tests prove the architecture runs (README: Architecture × backend); "
                          "name*: with a difference from Transformers that the matrix names")
        order = {"builtin": 0, "sponsor": 1, "reference": 2}
        for m in sorted(catalogue().values(), key=lambda m: (order[m.role], m.name)):
            n = sizing.count_params(m.config)
            t.add_row(m.name, m.repo, m.architecture, _params(m.params_total or n.total),
                      _params(m.params_active or n.active) if n.is_moe else "=", m.license, "yes" if m.gated else "no",
                      "needs flag" if m.trust_remote_code else "no", ", ".join(support.backends_for(m.config)))
        wide_console().print(t)
        return
    elif what == "backends":
        from smallbench.backends import backend_names, get_backend_class

        t = Table("name", "available", "capabilities", "--quant")
        for n in backend_names():
            cls = get_backend_class(n)
            caps = ", ".join(k for k, v in cls.capabilities.model_dump().items() if v is True)
            t.add_row(n, "yes" if cls.missing() is None else f"no: {cls.install_hint}", caps, cls.quant_choices or "—")
    elif what == "suites":
        from smallbench.suites import get_suite, suite_names

        t = Table("name", "settings (defaults)")
        for n in suite_names():
            t.add_row(n, ", ".join(f"{k}={v}" for k, v in get_suite(n).settings({}).model_dump().items()))
    elif what == "tasks":
        from smallbench.tasks import TASKS

        t = Table("name", "lm-eval task", "--data-dir folder", "fields")
        for spec in TASKS.values():
            t.add_row(spec.name, spec.lm_eval, spec.folder + "/", ", ".join(spec.fields))
    else:
        raise SmallbenchError(f"cannot list '{what}'; choose from: models, backends, suites, tasks")
    console.print(t)


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


models_app = typer.Typer(no_args_is_help=True, help="Check models against the Build Small rules; pin the catalogue.")
app.add_typer(models_app, name="models")


@models_app.command("check")
def models_check(
    model: Annotated[str, typer.Argument(help="Catalogued name, local folder or config.json, or Hub id.")],
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
) -> None:
    """Build Small compliance from the config alone: under 32B parameters in total, every expert counted."""
    from smallbench import models, sizing

    config = models.model_config(model, revision)
    known = models.entry(model)
    counted, how = models.param_count(config)
    c = sizing.compliance(config, known.params_total if known else None, counted)
    p = c.params
    moe = f", {_params(p.active)} active per token" if p.is_moe else ""
    console.print(f"{model}: {sizing.arch(config).model_type}, {p.total:,} parameters ({_params(p.total)}){moe}; "
                  f"counted by {how}", highlight=False, soft_wrap=True)
    if c.published:
        verdict = "matches" if c.matches_catalogue else "DOES NOT match"
        console.print(f"  {verdict} the catalogue's {_params(c.published)} ({c.deviation:+.2%}; tolerance "
                      f"{sizing.CATALOGUE_TOLERANCE:.1%})", highlight=False)
    cap = _params(sizing.BUILD_SMALL_CAP)
    console.print(f"  Build Small: {'PASS' if c.under_cap else 'FAIL'} ({_params(p.total)} total "
                  f"{'<' if c.under_cap else '≥'} {cap})", highlight=False)
    if not c.ok:
        raise typer.Exit(1)


@models_app.command("pin")
def models_pin(
    names: Annotated[list[str] | None, typer.Argument(help="Catalogued names (default: every one).")] = None,
    write: Annotated[bool, typer.Option("--write", help="Write the commit and the Hub's config.json into each "
                                                        "catalogue file (default: only report).")] = False,
    catalogue: Annotated[Path | None, typer.Option(help="Catalogue folder (default: smallbench's own).")] = None,
) -> None:
    """For maintainers, with Hub access: pin catalogue entries to their repo's current commit and compare the
    embedded config with that commit's config.json (gated repos need a token that accepted the licence)."""
    from smallbench import models, sizing

    def show(value: object) -> str:
        return str(value) if value is models.ABSENT else json.dumps(value)

    folder = catalogue or models.CATALOGUE_DIR
    files = {f.stem: f for f in sorted(folder.glob("*.json"))}
    for name in names or []:
        if name not in files:
            raise SmallbenchError(f"no catalogue entry '{name}' in {folder}")
    failed = 0
    for name in names or list(files):
        try:
            known = models.read_entry(files[name])
            pin = models.hub_pin(known)
            try:
                c = sizing.compliance(pin.config, known.params_total, models.param_count(pin.config)[0])
            except Exception as exc:  # noqa: BLE001 - a config the arithmetic cannot read: this entry's line only
                raise SmallbenchError(f"{name}: cannot count the parameters of {pin.repo}'s config.json at "
                                      f"{pin.sha}: {one_line(exc)}; not pinned") from None
            if c.published and not c.matches_catalogue:
                raise SmallbenchError(f"{name}: the config.json of {pin.repo} at {pin.sha} counts "
                                      f"{c.params.total:,} parameters, {c.deviation:+.2%} from the catalogue's "
                                      f"{c.published:,}; not pinned: check params_total against the model card")
            if write:
                models.write_pin(files[name], pin)
        except SmallbenchError as exc:
            err_console.print(f"error: {exc}", soft_wrap=True)
            failed += 1
            continue
        same = "the same as the catalogue's" if not pin.differs else f"{len(pin.differs)} keys differ: " + "; ".join(
            f"{k} {show(ours)} → {show(hub)}" for k, ours, hub in pin.differs)
        params = (f"{_params(c.params.total)} counted, {c.deviation:+.2%} from the catalogue's {_params(c.published)}"
                  if c.published else f"{_params(c.params.total)} counted")
        done = "written" if write else "not written (--write)"
        console.print(f"{name}: {pin.repo} at {pin.sha}; config.json {same}; {params}; {done}", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def fit(
    model: Annotated[str, typer.Argument(help="Catalogued name, local folder or config.json, or Hub id.")],
    memory: Annotated[str | None, typer.Option(help="Memory to fit in: 16GB, 24GiB... (default: this machine's "
                                                    "GPU memory, else its available RAM)")] = None,
    quant: Annotated[str, typer.Option(help="Weights type: bfloat16, float32, Q4_K_M, Q8_0, 4bit...")] = "bfloat16",
    context: Annotated[int | None, typer.Option(help="Tokens per sequence (default: the model's maximum).")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="KV-cache type (default: the weights' float type, else "
                                                      "float16).")] = None,
    overhead: Annotated[str, typer.Option(help="Memory the runtime needs besides weights and KV cache (Python, "
                                               "the engine, activations).")] = "1GiB",
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
    backend: Annotated[str | None, typer.Option(help="Add what this engine holds besides (vLLM: its share of a "
                                                     "GPU, or its embedding copies on a CPU).")] = None,
    device: Annotated[str, typer.Option(help="auto (a GPU if this machine has one), cpu, cuda or cuda:N.")] = "auto",
    gpu: Annotated[str | None, typer.Option(help="A GPU or Apple chip by name ('RTX 4090', 'H100 PCIe', 'M3 Max') for "
                                                 "the decode bound: its memory bandwidth from smallbench's table "
                                                 "(default: this machine's GPU).")] = None,
) -> None:
    """What fits in memory: weights, KV cache per token, the longest context and how many sequences at once; and
    the fastest a batch-1 decode can be on a GPU (its memory bandwidth over the bytes each token reads)."""
    from smallbench import models, sizing, validate
    from smallbench.backends import get_backend_class, memory_allowances
    from smallbench.hardware import hardware_info

    config = models.model_config(model, revision)
    if context is not None and context < 1:
        raise SmallbenchError(f"--context needs a positive integer, got {context}")
    validate.check_choice("--device", device, validate.DEVICE)
    if kv_dtype is not None:
        validate.check_choice("--kv-dtype", kv_dtype, tuple(sizing.DTYPE_BYTES))
    gpus = hardware_info().gpus if device != "cpu" else []
    on_gpu = device not in ("auto", "cpu") or bool(gpus)
    n = device.partition(":")[2]
    index = int(n) if n.isdigit() else 0  # cuda:N
    if gpu is not None and sizing.table_bandwidth(gpu) is None:
        raise SmallbenchError(f"--gpu '{gpu}' is not in smallbench's bandwidth table; choose from: "
                              f"{', '.join(name for name, _ in sizing.DEVICE_BANDWIDTH)}")
    if memory is not None:
        total, where = sizing.parse_bytes(memory, "--memory", positive=True), memory
    elif on_gpu and index < len(gpus):
        total, where = gpus[index].memory_total_bytes, gpus[index].name
    elif on_gpu:
        raise SmallbenchError(f"--device {device}: this machine has no such GPU to read its memory from; give "
                              "--memory")
    else:
        import psutil

        total, where = psutil.virtual_memory().available, "this machine's available RAM"
    runtime = sizing.parse_bytes(overhead, "--overhead")
    where_run = "cuda" if on_gpu else "cpu"
    allowances = memory_allowances(backend, config, quant, where_run, total)
    f = sizing.fit(config, total, quant, context, runtime + sum(allowances.values()), kv_dtype,
                   models.param_count(config)[0].total)
    if context is not None and context > f.max_context:
        raise SmallbenchError(f"--context {context:,} is longer than {model}'s maximum of {f.max_context:,} tokens "
                              "(max_position_embeddings)")
    gib = 2**30
    out = functools.partial(console.print, highlight=False, soft_wrap=True)
    on = f" on {backend} ({'GPU' if on_gpu else 'CPU'})" if backend else ""
    out(f"{model} as {quant}{on} in {total / gib:.1f} GiB ({where}):")
    out(f"  weights       {f.weights / gib:8.2f} GiB")
    out(f"  runtime       {runtime / gib:8.2f} GiB (--overhead)")
    for why, size in allowances.items():
        out(f"  {backend:<13} {size / gib:8.2f} GiB ({why})")
    kv = f.kv
    parts = [f"{kv.per_token / 1024:.1f} KiB per token"]
    if kv.sliding_per_token:
        parts.append(f"+ {kv.sliding_per_token / 1024:.1f} KiB per token up to the {kv.window}-token window")
    if kv.state_per_sequence:
        parts.append(f"+ {kv.state_per_sequence / 2**20:.1f} MiB SSM state per sequence")
    out(f"  KV cache      {' '.join(parts)}")
    if gpu is not None:
        bandwidth, named = sizing.table_bandwidth(gpu), gpu
    elif on_gpu and index < len(gpus):  # this machine's
        bandwidth, named = gpus[index].bandwidth()[0], gpus[index].name
    else:
        bandwidth = named = None
    if bandwidth:
        at = min(context or 4096, f.max_context)
        tok_s, read = sizing.decode_bound(config, f, bandwidth, at)
        out(f"  decode bound  {tok_s:8,.0f} tok/s at most, one sequence at {at:,} tokens: "
            f"{read / 1e9:.2f} GB read per token ÷ {bandwidth / 1e9:,.0f} GB/s ({named})")
    partial = get_backend_class(backend).partial_fit if backend else None  # e.g. llama.cpp's layer offload
    if f.longest_context == 0:
        need = f.weights + f.overhead + f.kv.bytes(1)
        smaller = " (e.g. Q4_K_M)" if sizing.bits_per_weight(quant) > sizing.QUANT_BITS["Q4_K_M"] else ""
        out(f"  does NOT fit: weights + runtime need {need / gib:.2f} GiB, {(need - total) / gib:.2f} GiB more than "
            f"{total / gib:.1f} GiB; try a smaller --quant{smaller} or more memory")
    else:
        out(f"  longest single sequence         {f.longest_context:,} tokens (model maximum {f.max_context:,})")
    if not f.fits:
        if f.longest_context:
            out(f"  does NOT fit one sequence of {f.context:,} tokens (--context); the longest that fits is "
                f"{f.longest_context:,}")
        if partial and (line := partial(config, quant, where_run, total, f.context, f.overhead)):
            out(f"  {line}")
        raise typer.Exit(1)
    out(f"  sequences of {f.context:,} tokens at once  {f.sequences_at_context:,}")


setup_app = typer.Typer(no_args_is_help=True, help="One-time setup steps that need the network.")
app.add_typer(setup_app, name="setup")


@setup_app.command("llama-converter")
def setup_llama_converter() -> None:
    """Fetch llama.cpp's converter (convert_hf_to_gguf.py) matching the installed llama-cpp-python from PyPI."""
    from smallbench import llama_convert

    console.print(f"llama.cpp converter: {llama_convert.fetch()}", highlight=False)


@app.command()
def env() -> None:
    """Show the hardware and software fingerprint that result records carry."""
    from smallbench.hardware import hardware_info, software_versions

    hw = hardware_info()
    console.print_json(hw.model_dump_json())
    console.print_json(data=software_versions())


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="Results folder or one record file.")] = Path("results"),
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | csv | parquet | markdown")] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="File to write (csv/parquet/markdown).")] = None,
    wide: Annotated[bool, typer.Option(help="Export the leaderboard's table (one row per model × weights × quant × "
                                            "backend × device × engine config × hardware × shape) instead of one "
                                            "row per metric.")] = False,
    parity: Annotated[bool, typer.Option(help="The parity view: every backend and quant against --reference.")] = False,
    reference: Annotated[str | None, typer.Option(help="Parity: the reference backend (transformers).")] = None,
) -> None:
    """Summarise result records, or export them as CSV / Parquet / Markdown."""
    from smallbench.leaderboard import build
    from smallbench.results import export, records_to_frame

    records = read_results(path)
    if parity and not any(r.suite == "parity" and r.status == "ok" for r in records):
        raise SmallbenchError(f"no parity records under '{path}': run smallbench run --suite parity first")
    if fmt == "table":
        if parity:
            out = wide_console()
            for table in parity_tables(records, out, reference):
                out.print(table)
        else:
            print_tables(records)
        return
    if parity:
        from smallbench import parity as P

        names = {r.backend.name for r in records if r.suite == "parity"}
        df = P.table(records, reference or ("transformers" if "transformers" in names else sorted(names)[0]))
        df = df.drop(columns=["key"], errors="ignore")
    else:
        df = build(records).table if wide else records_to_frame(records)
    try:
        if fmt in ("csv", "parquet"):
            if out is None:
                raise SmallbenchError(f"--format {fmt} needs --out FILE.{fmt}")
            written = export(df, out.with_suffix(f".{fmt}") if out.suffix != f".{fmt}" else out)
            console.print(f"wrote {len(df)} rows to {written}")
        elif fmt == "markdown":
            cols = ["model", "backend", "device", "suite", "metric", "value", "unit", "p50", "p90", "cv", "status"]
            df = df if wide or parity else df[[c for c in cols if c in df.columns]]
            text = markdown_table(df)
            if out:
                out.write_text(text + "\n", encoding="utf-8")
            else:
                sys.stdout.write(text + "\n")  # whole lines when piped, never wrapped at the terminal's width
        else:
            raise SmallbenchError(f"unknown format '{fmt}'; choose from: table, csv, parquet, markdown")
    except OSError as exc:
        raise SmallbenchError(f"cannot write --out {out}: {exc.strerror or exc}") from None


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="A: results folders or record files, comma list (several runs of the "
                                          "same cells: their noise between runs counts).")],
    b: Annotated[str | None, typer.Argument(help="B: the same for the other side (or give --backend/--quant/"
                                                 "--hardware X,Y to compare within A).")] = None,
    backend: Annotated[str | None, typer.Option(help="Compare backend X (A) with Y (B) within one folder: X,Y")] = None,
    quant: Annotated[str | None, typer.Option(help="Compare quant X (A) with Y (B) within one folder: X,Y")] = None,
    hardware: Annotated[str | None, typer.Option(help="Compare hardware X (A) with Y (B): accelerator names or "
                                                      "fingerprints, X,Y")] = None,
    threshold: Annotated[float, typer.Option(help="Smallest ratio change given a verdict (0.05: 5 %).")] = 0.05,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | csv | json")] = "table",
) -> None:
    """B next to A for every cell both measured: speed and memory as B ÷ A with a bootstrap 95 % interval from the raw
    samples and a verdict (faster / slower / no significant difference); accuracy item by item (McNemar's test)."""
    from smallbench import compare as C
    from smallbench import validate

    validate.check_number("--threshold", threshold, 0)
    validate.check_choice("--format", fmt, ("table", "csv", "json"))
    axes = {k: _split(v) for k, v in (("backend", backend), ("quant", quant), ("hardware", hardware)) if v}
    if len(axes) > 1 or (axes and b is not None) or (not axes and b is None):
        raise SmallbenchError("compare takes two results (A B), or one folder and one of --backend, --quant, "
                              "--hardware with two values X,Y")

    def read(paths: str):
        return [r for path in _split(paths) for r in read_results(Path(path))]

    if axes:
        (dim, values), = axes.items()
        left, right = C.split(read(a), dim, values)
        pairs, sides = C.pair(left, right, by=dim), (values[0], values[1])
    else:
        left, right = read(a), read(b)
        pairs = C.pair(left, right) if len(left) > 1 or len(right) > 1 else [([left[0]], [right[0]])]
        if not pairs and len({r.suite for r in left + right}) == 1 and len({C.cell_key(r) for r in left}) == 1 == \
                len({C.cell_key(r) for r in right}):  # one cell on each side, measured differently: set side by side
            pairs = [(left, right)]
        sides = (a, b)
    verdicts = [v for ra, rb in pairs for v in C.compare_records(ra, rb, threshold, sides)]
    if not verdicts:
        raise SmallbenchError("nothing to compare: no cell measured on both sides with raw samples (same model, "
                              "suite and settings)")
    if fmt == "table":
        wide_console().print(compare_table(verdicts, sides))
        warn(busy_warnings({id(r): r for ra, rb in pairs for r in ra + rb}.values()))
        return
    rows = [{**{k: v for k, v in vars(x).items() if k not in ("labels", "sides", "n", "runs")},
             "labels": json.dumps(x.labels, sort_keys=True, default=str), "n_a": x.n[0], "n_b": x.n[1],
             "runs_a": x.runs[0], "runs_b": x.runs[1], "a_side": sides[0], "b_side": sides[1]}
            for x in verdicts]
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=1, default=str) + "\n")
    else:
        import pandas as pd

        sys.stdout.write(pd.DataFrame(rows).to_csv(index=False))


def compare_table(verdicts, sides: tuple[str, str]) -> Table:
    table = Table(title=f"B ÷ A   (A: {sides[0]}, B: {sides[1]})", box=box.SIMPLE_HEAD)
    if any(v.test == "bootstrap" and min(v.runs) == 1 for v in verdicts):
        table.caption = ("one run on a side: its interval holds the noise within that run only; on a shared or "
                         "virtual machine two runs of one cell can differ far more (benchmarks/README.md). Give "
                         "each side several runs (comma lists of result folders) for a verdict that holds between "
                         "runs.")
    for col in ("model", "suite", "metric", "A", "B", "runs", "B ÷ A [95 % CI] / McNemar", "verdict"):
        table.add_column(col, no_wrap=col != "metric", justify="right" if col in ("A", "B") else "left")
    for v in verdicts:
        shown = {k: val for k, val in v.labels.items() if k in ("batch_size", "concurrency", "task", "subtask")}
        if shown.get("subtask"):  # BLiMP's, MMLU's parts are told apart by their own task names
            shown["task"] = shown["subtask"]
        where = "".join(f" {k}={val}" for k, val in shown.items() if k != "subtask")
        if v.test == "mcnemar":
            stat = f"p = {v.p_value:.3g} ({v.n[1]} of {v.n[0]} items differ)"
        else:
            stat = f"{v.ratio:.3f} [{v.low:.3f}, {v.high:.3f}]"
        colour = {"no significant difference": "", "faster": "green", "smaller": "green", "better": "green"}
        table.add_row(Text(v.model), v.suite, f"{v.metric}{where} ({v.unit})", f"{v.a:.4g}", f"{v.b:.4g}",
                      f"{v.runs[0]} : {v.runs[1]}", stat,
                      Text(v.verdict, style=colour.get(v.verdict, "red")))
    return table


def read_results(path: Path):
    """The records under ``path`` (a folder or one file); each file skipped is named on stderr; none is an error."""
    from smallbench.results import scan_records

    records, skipped = scan_records(path)
    for line in skipped:
        err_console.print(f"skipped: {line}", soft_wrap=True)
    if not records:
        raise SmallbenchError(f"no result records under '{path}'")
    return records


def markdown_table(df) -> str:
    """A pipe table whose text cells are inert: HTML escaped (a ``<script>`` in a model id stays characters where
    the table is rendered) and ``|`` escaped (it cannot add a column)."""
    import html

    def cell(v):
        return html.escape(v, quote=False).replace("|", "\\|") if isinstance(v, str) else v

    df = df.map(cell)
    df.columns = [cell(str(c)) for c in df.columns]
    return df.to_markdown(index=False) if _has_tabulate() else df.to_string()


@app.command()
def leaderboard(
    results: Annotated[str | None, typer.Argument(help="Results folder, or hf://datasets/ORG/NAME (default: "
                                                       "$SMALLBENCH_RESULTS_REPO, else ./results).")] = None,
    host: Annotated[str, typer.Option(help="Address to bind (a Space binds 0.0.0.0 itself).")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: Gradio's, 7860).")] = None,
) -> None:
    """Serve the leaderboard app locally (the same app a Hugging Face Space runs)."""
    _need_app()
    from smallbench.app import main as serve

    serve(results, host=host, port=port)


@app.command()
def publish(
    results: Annotated[Path, typer.Argument(help="Results folder or one record file.")],
    repo: Annotated[str, typer.Option(help="Hub dataset repo the leaderboard reads: ORG/NAME.")],
    private: Annotated[bool, typer.Option(help="Create the dataset repo private.")] = False,
) -> None:
    """Upload new result records to a Hub dataset repo (token: HF_TOKEN or `hf auth login`)."""
    from smallbench.publish import publish as upload

    new, old, skipped = upload(results, repo, private)
    for line in skipped:
        err_console.print(f"skipped: {line}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"uploaded {new} new records to datasets/{repo} ({old} already there)", markup=False)


@app.command()
def space(
    out: Annotated[Path, typer.Argument(help="New folder to write the Space into.")],
    results: Annotated[Path | None, typer.Option(help="Records to ship with the Space.")] = Path("results"),
    repo: Annotated[str | None, typer.Option(help="Read records from this Hub dataset instead (ORG/NAME).")] = None,
) -> None:
    """Write a ready-to-push Hugging Face Space folder: app, requirements, README front matter, results."""
    _need_app()
    from smallbench.publish import write_space

    if repo is None and results is not None and not results.exists():
        raise SmallbenchError(f"no results at '{results}' (give --results FOLDER or --repo ORG/NAME)")
    copied, skipped = write_space(out, None if repo else results, repo)
    for line in skipped:
        err_console.print(f"skipped: {line}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote the Space to {out}/ ({copied} records); push it with: hf upload --repo-type space "
                  f"ORG/NAME {out}", markup=False, soft_wrap=True)


def _need_app() -> None:
    import importlib.util

    missing = [m for m in ("gradio", "plotly") if importlib.util.find_spec(m) is None]
    if missing:
        raise SmallbenchError(f"the leaderboard needs {' and '.join(missing)}: pip install 'smallbench[app]'")


def _has_tabulate() -> bool:
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None


def main() -> None:
    """The ``smallbench`` command: every error is one line on stderr (``--debug`` anywhere adds the traceback)."""
    guard(app)


def guard(call: Callable[[], object]) -> None:
    """Run a command-line entry point (``smallbench``, ``python leaderboard_app.py``): every error is one line on
    stderr and a non-zero exit (2: bad input), ``--debug`` anywhere on the command line adds the traceback."""
    import traceback

    from smallbench.results import redact

    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")

    def fail(line: str, code: int) -> None:
        if debug:
            err_console.print(redact(traceback.format_exc()))
        err_console.print(redact(line), soft_wrap=True)
        sys.exit(code)

    try:
        call()
    except SmallbenchError as exc:
        fail(f"error: {exc}", exc.exit_code)
    except Exception as exc:  # a bug of ours: still one line, exit 1
        fail(f"error: {one_line(exc)}", 1)


if __name__ == "__main__":
    main()
