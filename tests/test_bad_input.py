"""A catalogue of bad input, as a new user types it: each is refused before any cell starts, in one line that
names the setting, with exit 2, no traceback, and nothing written."""

from __future__ import annotations

import pytest

from tests.conftest import require, run_cli

RUN = [
    # (arguments of `smallbench run`, words the one line must contain)
    (["--backend", "nosuch"], ["nosuch", "transformers"]),
    (["--backend", ""], ["--backend"]),
    (["--suite", "nosuch"], ["nosuch", "latency"]),
    (["--model", "nosuch/model"], ["nosuch/model", "smallbench list models"]),
    (["--model", "./no/such/dir"], ["./no/such/dir"]),
    (["--model", "[/x]bad[bold]"], ["[/x]bad[bold]"]),  # printed as text, not taken as rich markup
    (["--model", "a" * 300], ["unknown model"]),
    (["--preset", "pp1/tg1"], ["pp1/tg1", "pp512/tg128"]),
    (["--batch-sizes", "1,x"], ["--batch-sizes"]),
    (["--batch-sizes", "0"], ["--batch-sizes"]),
    (["--batch-sizes", "1,,2"], ["--batch-sizes", "1,,2"]),  # an empty item is not skipped
    (["--prompt-tokens", "-5"], ["--prompt-tokens"]),
    (["--prompt-tokens", "0", "--suite", "throughput"], ["--prompt-tokens"]),
    (["--gen-tokens", "0", "--suite", "latency"], ["--gen-tokens"]),
    (["--gen-tokens", "0", "--suite", "throughput"], ["--gen-tokens"]),
    (["--gen-tokens", "1", "--suite", "throughput"], ["gen_tokens", "at least 2"]),
    (["--prompt-tokens", "5000"], ["5128", "context", "tiny-llama", "2048"]),
    (["--prompt-tokens", "100", "--ctx-size", "64"], ["--ctx-size", "64"]),
    (["--repeats", "0"], ["--repeats"]),
    (["--warmup", "-1"], ["--warmup"]),
    (["--cooldown", "-1"], ["--cooldown"]),
    (["--dtype", "float7"], ["--dtype", "float7", "bfloat16"]),
    (["--device", "tpu"], ["--device", "tpu", "cuda"]),
    (["--device", "cuda:x"], ["--device", "cuda:x"]),
    (["--timeout", "-1"], ["--timeout"]),
    (["--timeout", "0"], ["--timeout"]),
    (["--timeout", "nan"], ["--timeout"]),
    (["--threads", "0"], ["--threads"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--ctx-size", "0"], ["--ctx-size"]),
    (["--n-gpu-layers", "-2"], ["--n-gpu-layers"]),
    (["--extra-bufts", "sometimes"], ["--extra-bufts", "auto"]),
    (["--quant", "Q4_K_M"], ["--quant", "llama-cpp"]),  # transformers takes no --quant
    (["-b", "llama-cpp,mlx", "--quant", "Q8_0,zz"], ["--quant 'zz'", "llama-cpp, mlx"]),  # no taker knows it
    (["-b", "llama-cpp,mlx", "--quant", "Q8_0"], ["mlx knows none of --quant Q8_0"]),  # never silently left out
    (["--suite", "serving"], ["serving", "server backend"]),
    (["--suite", "accuracy", "--tasks", "nosuch"], ["nosuch"]),
    (["--suite", "accuracy", "--tasks", "blimp", "--data-dir", "no/such/dir"], ["--data-dir", "not a folder"]),
    (["--suite", "accuracy", "--limit", "0"], ["--limit"]),
    (["--suite", "accuracy", "--num-fewshot", "-1"], ["--num-fewshot"]),
    (["--concurrency", "0", "--backend", "vllm-server", "--suite", "serving"], ["concurrency"]),
    (["--output", "a-file"], ["--output", "a-file", "is a file"]),
    (["--output", "a-file/sub"], ["--output", "cannot be created"]),
    (["--output", "/proc/smallbench-results"], ["--output", "cannot be created"]),  # root may, the kernel says no
    (["--model", "local-model", "--revision", "main"], ["--revision", "local path"]),
    (["--model", "minicpm4.1-8b"], ["--trust-remote-code"]),
    (["--executor", "ray", "--address", "127.0.0.1:9"], ["no Ray cluster", "127.0.0.1:9"]),  # at once, not minutes
    (["--dummy", "--suite", "accuracy"], ["--dummy", "accuracy"]),  # random weights scored nothing worth keeping
    (["--dummy", "--suite", "latency,parity"], ["--dummy", "parity"]),
    (["--dummy", "--model", "empty-model"], ["--dummy", "config.json", "empty-model"]),
]

OTHER = [
    (["report", "no/such/folder"], ["no results"]),
    (["report", "empty"], ["no result records"]),
    (["list", "nothing"], ["models, backends, suites"]),
    (["fit", "tiny-llama", "--memory", "12XB"], ["12XB"]),
    (["fit", "tiny-llama", "--backend", "nosuch"], ["nosuch", "vllm"]),
    (["fit", "tiny-llama", "--backend", "vllm", "--quant", "Q4_K_M"], ["vllm", "Q4_K_M", "bfloat16"]),
    (["fit", "tiny-llama", "--memory", "0"], ["--memory", "positive"]),
    (["fit", "tiny-llama", "--memory", "-3GB"], ["--memory", "-3GB"]),
    (["fit", "tiny-llama", "--memory", "1e400GB"], ["--memory", "1e400GB"]),
    (["fit", "tiny-llama", "--overhead", "-1GiB"], ["--overhead", "-1GiB"]),
    (["fit", "tiny-llama", "--context", "4096"], ["--context", "4,096", "2,048"]),
    (["fit", "tiny-llama", "--kv-dtype", "int3"], ["--kv-dtype", "int3"]),
    (["fit", "tiny-llama", "--device", "cuda:abc"], ["--device", "'cuda:abc'"]),  # not made an emoji by rich
    (["fit", "tiny-llama", "--gpu", "RTX 9999"], ["--gpu", "RTX 9999", "RTX 4090"]),
    (["models", "check", "nosuch"], ["nosuch"]),
    (["space", "list.json", "--repo", "a/b"], ["list.json", "is a file"]),
    (["models", "check", "empty"], ["empty", "no config.json"]),
    (["models", "check", "list.json"], ["list.json", "not a JSON object"]),
]


def _one_line(res, names: list[str]) -> str:
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in res.stderr + res.stdout
    for n in names:
        assert n in err, (n, err)
    return err


@pytest.mark.parametrize(("args", "names"), RUN, ids=[" ".join(a)[:40] for a, _ in RUN])
def test_run_refuses_before_any_cell(tmp_path, args, names):
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "local-model").mkdir()
    (tmp_path / "local-model" / "config.json").write_text("{}")
    (tmp_path / "empty-model").mkdir()
    _one_line(run_cli("run", *args, cwd=tmp_path, timeout=120), names)
    assert not (tmp_path / "results").exists()  # nothing was written, no folder made


@pytest.mark.parametrize("quant", ["Q9_Z", "q4_k_mm"])
def test_an_unknown_gguf_type_is_refused(tmp_path, quant):
    require("llama_cpp", "llama-cpp")
    err = _one_line(run_cli("run", "-b", "llama-cpp", "--quant", quant, cwd=tmp_path, timeout=120), [quant])
    assert "Q4_K_M" in err  # the choices are named
    assert not (tmp_path / "results").exists()


def test_an_unknown_mlx_quantization_is_refused(tmp_path):
    require("mlx_lm", "mlx")
    _one_line(run_cli("run", "-b", "mlx", "--quant", "7bit", cwd=tmp_path, timeout=120), ["7bit", "4bit"])


def test_a_data_file_that_is_not_utf8_is_named(tmp_path):
    data = tmp_path / "data" / "blimp"
    data.mkdir(parents=True)
    (data / "adjunct_island.jsonl").write_bytes(b'{"sentence_good": "caf\xe9", "sentence_bad": "x"}\n')
    res = run_cli("run", "-s", "accuracy", "--tasks", "blimp", "--data-dir", "data", cwd=tmp_path, timeout=120)
    _one_line(res, ["adjunct_island.jsonl", "not UTF-8"])


@pytest.mark.parametrize(("args", "names"), OTHER, ids=[" ".join(a)[:40] for a, _ in OTHER])
def test_other_commands_refuse_in_one_line(tmp_path, args, names):
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.json").write_text("[1, 2]")
    _one_line(run_cli(*args, cwd=tmp_path, timeout=120), names)


def test_report_out_that_cannot_be_written(tmp_path):
    from tests.records import write_synthetic

    write_synthetic(tmp_path / "results", 4)
    (tmp_path / "a-file").write_text("")
    res = run_cli("report", "results", "--format", "csv", "--out", "a-file/x.csv", cwd=tmp_path)
    _one_line(res, ["--out", "a-file/x.csv"])


def test_debug_shows_the_traceback(tmp_path):
    res = run_cli("run", "--dtype", "float7", "--debug", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: --dtype 'float7'")


def test_hostile_text_in_records_is_printed_as_text(tmp_path):
    """A model id that is HTML, a pipe or rich markup: the markdown report escapes it, the table shows it."""
    import random

    from smallbench.results import write_record
    from tests.records import HOSTILE, hardware, record

    rng = random.Random(0)
    for i, name in enumerate((HOSTILE, "a|b", "[/x] [bold]m")):
        write_record(record("latency", name, "llama-cpp", "Q4_K_M", hardware(0), rng), tmp_path / "r" / f"{i}.json")
    md = run_cli("report", "r", "--format", "markdown", cwd=tmp_path)
    assert md.returncode == 0, md.stderr
    assert "<script>" not in md.stdout and "&lt;script&gt;" in md.stdout and "a\\|b" in md.stdout
    rows = [ln for ln in md.stdout.splitlines() if ln.startswith("|")]
    assert len({ln.replace("\\|", "").count("|") for ln in rows}) == 1  # no cell adds a column; no line wrapped
    table = run_cli("report", "r", cwd=tmp_path)
    assert table.returncode == 0 and "[/x] [bold]m" in table.stdout and "Traceback" not in table.stderr
    pq = run_cli("report", "r", "--format", "parquet", "--out", "x.csv", cwd=tmp_path)
    assert pq.returncode == 0 and "x.parquet" in pq.stdout and (tmp_path / "x.parquet").exists()


def test_a_hub_models_context_is_checked_from_the_hugging_face_cache(tmp_path):
    """A Hub id that is in the Hugging Face cache (no network here): huggingface_hub reads its config.json from the
    cache, and a prompt longer than the model's context is refused before any cell starts."""
    repo = tmp_path / "hub" / "models--someorg--small"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text('{"model_type": "llama", "max_position_embeddings": 512}')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    res = run_cli("run", "--model", "someorg/small", "--prompt-tokens", "600", "--gen-tokens", "8", cwd=tmp_path,
                  env={"HF_HUB_CACHE": str(tmp_path / "hub")}, timeout=120)
    _one_line(res, ["608", "context", "someorg/small", "512 tokens"])
    assert not (tmp_path / "results").exists()
    # models check reads the same cached config.json; it lacks dimensions, which it names in one line
    _one_line(run_cli("models", "check", "someorg/small", cwd=tmp_path, env={"HF_HUB_CACHE": str(tmp_path / "hub")}),
              ["llama", "lacks hidden_size"])
    _one_line(run_cli("models", "check", "someorg/absent", cwd=tmp_path, env={"HF_HUB_CACHE": str(tmp_path / "hub")}),
              ["someorg/absent", "offline"])
