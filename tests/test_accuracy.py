"""The accuracy suite: lm-eval tasks through smallbench's backend, offline, checked against lm-eval's own ``hf``."""

from __future__ import annotations

import json

import pytest

from smallbench import load_results
from smallbench.errors import SmallbenchError
from smallbench.tasks import check_data, resolve_tasks, wikitext_pages
from tests import task_data
from tests.conftest import run_cli

pytest.importorskip("lm_eval", reason="the accuracy extra (lm-eval) is not installed")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return task_data.build(tmp_path_factory.mktemp("taskdata"))


def _suite_scores(backend, data_dir, tasks, **extra):
    from smallbench.backends.base import LoadedModelInfo
    from smallbench.results import LoadRecord
    from smallbench.suites import SuiteContext, get_suite

    suite = get_suite("accuracy")
    settings = suite.settings({"tasks": tasks, "data_dir": str(data_dir), "bootstrap_iters": 100, **extra})
    ctx = SuiteContext(load=LoadRecord(seconds=0, rss_before_bytes=0, rss_after_bytes=0, rss_peak_bytes=0),
                       model_info=LoadedModelInfo())
    return suite.run(backend, settings, ctx)


def _lm_eval_hf(tiny_path, data_dir, tasks, tmp_path, **model_args):
    """The reference: lm-eval's own ``hf`` model on the same weights, tasks and data."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from smallbench.tasks import task_manager

    specs = resolve_tasks(tasks)
    lm = HFLM(pretrained=str(tiny_path), dtype="float32", device="cpu", batch_size=16, **model_args)
    tm = task_manager(specs, data_dir, None, tmp_path)
    return lm_eval.simple_evaluate(model=lm, tasks=[s.lm_eval for s in specs], task_manager=tm,
                                   bootstrap_iters=100, log_samples=True)


def _same_to_4_decimals(a: float, b: float) -> bool:
    """Agree to 4 decimal places (float32 batching noise is ~1e-7 relative; rounding both could
    still split on a .00005 boundary, so compare the difference)."""
    return abs(a - b) < 5e-5


def _by_metric(result):
    return {m.name: m for m in result.metrics if m.labels.get("subtask") is None}


def test_multiple_choice_equals_lm_eval_hf(tf_backend, tiny_path, data_dir, tmp_path):
    ours = _by_metric(_suite_scores(tf_backend, data_dir, ["arc_easy"]))
    ref = _lm_eval_hf(tiny_path, data_dir, ["arc_easy"], tmp_path)["results"]["arc_easy"]
    for metric in ("acc", "acc_norm"):
        assert _same_to_4_decimals(ours[metric].value, ref[f"{metric},none"]), metric
    assert ours["acc"].labels["n"] == 40 and ours["acc"].labels["task_version"] == "1.0"
    assert ours["acc"].stderr == pytest.approx(ref["acc_stderr,none"], abs=1e-4)
    assert 0 < ours["acc"].value < 1  # a task whose answer could go either way


def test_perplexity_equals_lm_eval_hf_without_duplicate_bos(tf_backend, tiny_path, data_dir, tmp_path):
    ours = _by_metric(_suite_scores(tf_backend, data_dir, ["wikitext"]))
    # hf with a BOS-adding tokenizer scores BOS twice in rolling windows; add_bos_token=False avoids it
    ref = _lm_eval_hf(tiny_path, data_dir, ["wikitext"], tmp_path, add_bos_token=False)["results"]["wikitext"]
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert _same_to_4_decimals(ours[metric].value, ref[f"{metric},none"]), metric
    assert ours["bits_per_byte"].labels["n"] == 6


def test_generation_task_gives_the_same_text_as_lm_eval_hf(tf_backend, tiny_path, data_dir, tmp_path):
    res = _suite_scores(tf_backend, data_dir, ["gsm8k"], num_fewshot=0)
    em = [m for m in res.metrics if m.name == "exact_match"]
    assert {m.labels["filter"] for m in em} == {"strict-match", "flexible-extract"}
    assert all(m.labels["n"] == 6 and m.labels["num_fewshot"] == 0 for m in em)
    from smallbench.lm_bridge import BackendLM

    class Req:
        def __init__(self, ctx):
            # the built-in model answers these with a blank line first: "\n\n" would stop every answer at ""
            self.args = (ctx, {"until": ["Question:"], "do_sample": False, "max_gen_toks": 40})

    prompts = [f"Question: {r['question']}\nAnswer:" for r in task_data.gsm8k_rows(__import__("random").Random(1), 4)]
    ours = BackendLM(tf_backend).generate_until([Req(p) for p in prompts])
    from lm_eval.models.huggingface import HFLM

    ref = HFLM(pretrained=str(tiny_path), dtype="float32", device="cpu", batch_size=4).generate_until(
        [Req(p) for p in prompts])
    assert ours == ref and any(ours)


def test_cli_runs_accuracy_offline_into_the_common_record(tiny_path, data_dir, tmp_path):
    res = run_cli("run", "--suite", "accuracy", "--tasks", "arc_easy,wikitext", "--data-dir", str(data_dir),
                  "--limit", "10", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "arc_easy" in res.stdout and "acc_norm" in res.stdout
    df = load_results(tmp_path / "results")
    top = df[df.subtask.isna()]
    row = top[(top.task == "arc_easy") & (top.metric == "acc")].iloc[0]
    assert row["n"] == 10 and row["num_fewshot"] == 0 and row["stderr"] > 0 and len(row["task_hash"]) == 16
    assert set(top[top.task == "wikitext"].metric) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    rec = json.loads(next((tmp_path / "results").glob("*accuracy*.json")).read_text())
    assert len(rec["samples"]["acc[task=arc_easy,filter=none]"]) == 10
    assert rec["settings"]["data_dir"] == str(data_dir.resolve())
    report = run_cli("report", "results", cwd=tmp_path)
    assert report.returncode == 0 and "accuracy · tiny-llama · transformers" in report.stdout
    assert "wikitext" in report.stdout and "latency" not in report.stdout


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--tasks", "arc_easy,nosuch"], "unknown task 'nosuch'"),
        (["--tasks", "arc_challenge"], "ai2_arc/ARC-Challenge/test.{jsonl,json,parquet}"),
        (["--tasks", "arc_easy", "--num-fewshot", "2", "--data-dir", "{empty}"], "no ai2_arc/ARC-Easy/test"),
        (["--tasks", "gsm8k"], "needs its few-shot split 'train'"),
    ],
)
def test_bad_tasks_and_missing_files_fail_in_one_line(data_dir, tmp_path, args, expect):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{empty}", str(tmp_path / "empty")) for a in args]
    if "--data-dir" not in args:
        args += ["--data-dir", str(data_dir)]
    res = run_cli("run", "--suite", "accuracy", *args, cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], res.stderr
    assert not (tmp_path / "results").exists()


def test_malformed_files_are_named(data_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(data_dir, bad)
    test_file = bad / "ai2_arc" / "ARC-Easy" / "test.jsonl"
    lines = test_file.read_text().splitlines()
    test_file.write_text("\n".join(lines[:3] + ['{"question": "cut off', *lines[4:]]) + "\n")
    with pytest.raises(SmallbenchError, match=r"test\.jsonl line 4"):
        check_data(resolve_tasks(["arc_easy"]), bad, None)
    test_file.write_text(json.dumps({"question": "q", "answerKey": "A"}) + "\n")
    with pytest.raises(SmallbenchError, match="row 1 lacks field 'choices'"):
        check_data(resolve_tasks(["arc_easy"]), bad, None)
    (bad / "ai2_arc" / "ARC-Easy" / "test.jsonl").unlink()
    (bad / "ai2_arc" / "ARC-Easy" / "test.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SmallbenchError, match="malformed Parquet file"):
        check_data(resolve_tasks(["arc_easy"]), bad, None)


def test_group_needs_every_member(tmp_path):
    (tmp_path / "blimp").mkdir()
    (tmp_path / "blimp" / "adjunct_island.jsonl").write_text(
        json.dumps({"sentence_good": "a b .", "sentence_bad": "b a ."}) + "\n")
    with pytest.raises(SmallbenchError, match=r"blimp_anaphor_gender_agreement.*blimp/anaphor_gender_agreement"):
        check_data(resolve_tasks(["blimp"]), tmp_path, None)


def test_wikitext_release_file_splits_into_articles():
    raw = " \n = A = \n \n text one \n = = Sub = = \n more \n = B = \n text two \n"
    pages = [p["page"] for p in wikitext_pages(raw)]
    assert len(pages) == 2 and pages[0].startswith(" = A = ") and " = = Sub = = " in pages[0]
    assert pages[1].startswith(" = B = ")


def test_json_lines_split_on_newline_only(tmp_path):
    """U+2028, U+2029 and U+0085 are legal inside JSON strings (real MMLU files have U+2028)."""
    from smallbench.tasks import read_rows

    rows = [{"question": "one\u2028two", "choices": ["a\u0085b", "c\u2029d"]}, {"question": "x\x1cy\x1d\x1e\u000bz"}]
    f = tmp_path / "test.jsonl"
    f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "\n", encoding="utf-8")
    assert "\u2028" in f.read_text(encoding="utf-8")  # written raw, not escaped
    assert read_rows(f) == rows
    f.write_text(f.read_text(encoding="utf-8") + '{"question": "cut\u2028off\n', encoding="utf-8")
    with pytest.raises(SmallbenchError, match=r"test\.jsonl line 4"):  # line numbers count "\n" only
        read_rows(f)


def test_mmlu_with_line_separators_in_its_files_runs_and_its_group_rows_add_up(tmp_path):
    from smallbench.tasks import TASKS, leaves

    subjects = sorted(leaf.dataset_name for leaf in leaves(TASKS["mmlu"]))
    assert len(subjects) == 57
    root = tmp_path / "data"
    for i, subject in enumerate(subjects):
        rows = [{"question": f"Which\u2028of these is {subject} {j}?", "subject": subject,
                 "choices": ["one\u2029two", "three", "four\u0085five", "six"], "answer": (i + j) % 4}
                for j in range(2)]
        for split in ("test", "dev"):
            path = root / "mmlu" / subject / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    res = run_cli("run", "--suite", "accuracy", "--tasks", "mmlu", "--data-dir", str(root), "--limit", "1",
                  "--num-fewshot", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    df = load_results(tmp_path / "results")
    acc = df[(df.task == "mmlu") & (df.metric == "acc")].set_index(df.subtask.fillna("mmlu").rename("row"))
    assert acc.loc["mmlu", "n"] == 57 and acc.loc["mmlu", "num_fewshot"] == 1
    categories = ["mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"]
    assert sum(acc.loc[c, "n"] for c in categories) == 57
    assert all(acc.loc[c, "num_fewshot"] == 1 for c in categories)
