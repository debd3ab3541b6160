"""The Hub, through huggingface_hub itself, against a stand-in that speaks its HTTP API on 127.0.0.1
(tests/hub_standin.py; no network here): a Hub id run on every backend, publishing records and reading them back,
pinning the catalogue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from smallbench import compare, models
from smallbench import leaderboard as L
from smallbench.publish import valid_records
from smallbench.results import read_records, scan_records
from smallbench.tiny_model import model_dir
from tests.conftest import require, run_cli
from tests.hub_standin import hub_standin
from tests.records import write_hostile, write_synthetic

HUB = {"HF_HUB_OFFLINE": "0"}  # the tests' default is offline; the stand-in is on 127.0.0.1


def test_a_hub_id_runs_on_every_backend_pinned_to_the_commit_it_resolved(tmp_path):
    """``--model ORG/NAME`` is downloaded by each backend's own loading code from the Hub (here the stand-in): the
    run resolves main to its commit once, every backend loads that commit and every record names it; later,
    offline, the Hugging Face cache resolves the same commit; a revision the Hub lacks is one line."""
    for module, extra in [("llama_cpp", "llama-cpp"), ("mlx_lm", "mlx"), ("vllm", "vllm")]:
        require(module, extra)
    src = model_dir()
    files = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    backends = "transformers,llama-cpp,mlx,vllm"
    run = ["run", "--model", "someone/tiny", "--suite", "memory"]
    args = [*run, "--backend", backends]
    with hub_standin("hf_unused") as (hub, url):
        sha = hub.add("model", "someone/tiny", files)
        # smallbench's own cache stays the default: llama.cpp's converter is there (`smallbench setup llama-converter`)
        env = {**HUB, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf")}
        online = run_cli(*args, "--output", "online", cwd=tmp_path, env=env)
        hub.add("model", "someone/tiny", {**files, "README.md": b"a later commit"})
        missing = run_cli(*args, "--revision", "0" * 40, "--output", "x", cwd=tmp_path, env=env)
    offline = run_cli(*run, "--backend", "transformers", "--output", "offline", cwd=tmp_path,
                      env={**env, "HF_HUB_OFFLINE": "1"})
    assert online.returncode == 0, online.stdout + online.stderr
    records = read_records(tmp_path / "online")
    assert sorted(r.backend.name for r in records if r.status == "ok") == sorted(backends.split(","))
    assert {r.model.revision for r in records} == {sha}
    assert offline.returncode == 0, offline.stderr
    [cached] = read_records(tmp_path / "offline")
    assert cached.status == "ok" and cached.model.revision == sha and cached.model.weights_sha256
    # the first run had no hash of files it had not downloaded yet; the commit keeps both runs' records together
    first = next(r for r in records if r.backend.name == "transformers")
    assert first.model.weights_sha256 is None
    assert L.row_key(first) == L.row_key(cached) and compare.cell_key(first) == compare.cell_key(cached)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "the Hub says: no revision '0000000000000000000000000000000000000000'" in missing.stderr


def test_publish_uploads_to_a_hub_dataset_and_the_app_reads_it_back(tmp_path):
    """The upload itself, by huggingface_hub against a stand-in that speaks the Hub's API (tests/hub_standin.py):
    valid records go up in one commit carrying the token (never printed), a second publish sends nothing new, a
    wrong token is one line, and the app (SMALLBENCH_RESULTS_REPO) shows what a local folder of them shows."""
    write_synthetic(tmp_path / "r", 4)
    write_hostile(tmp_path / "r" / "hostile")
    token = "hf_" + "t" * 30
    with hub_standin(token) as (hub, url):
        env = {**HUB, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": token}
        first = run_cli("publish", "r", "--repo", "someone/smallbench-results", cwd=tmp_path, env=env)
        again = run_cli("publish", "r", "--repo", "someone/smallbench-results", cwd=tmp_path, env=env)
        wrong = run_cli("publish", "r", "--repo", "someone/other", cwd=tmp_path, env={**env, "HF_TOKEN": "hf_no"})
        read = "from smallbench.app import load; b, s, w = load(); print(b.read, len(b.table), w)"
        shown = subprocess.run([sys.executable, "-c", read], cwd=tmp_path, capture_output=True, text=True,
                               env={**os.environ, **env, "SMALLBENCH_RESULTS_REPO": "someone/smallbench-results",
                                    "SMALLBENCH_CACHE": str(tmp_path / "cache")}, timeout=300)
        repo = hub.repos[("dataset", "someone/smallbench-results")]
    unreachable = subprocess.run([sys.executable, "-c", read], cwd=tmp_path, capture_output=True, text=True,
                                 env={**os.environ, **env, "SMALLBENCH_RESULTS_REPO": "someone/smallbench-results",
                                      "SMALLBENCH_CACHE": str(tmp_path / "cache")}, timeout=300)
    assert first.returncode == 0 and "uploaded 5 new records" in first.stdout, first.stderr
    assert "uploaded 0 new records" in again.stdout and "5 already there" in again.stdout
    assert len(repo.commits) == 2  # creation, then one commit of every record
    valid = [f.relative_to(tmp_path / "r").as_posix() for f in valid_records(tmp_path / "r")[0]]
    assert set(repo.commits[repo.main]) == {".gitattributes", *valid} and len(valid) == 5
    assert hub.seen_tokens == {token, "hf_no"}
    for res in (first, again, wrong):
        assert token not in res.stdout + res.stderr and "Traceback" not in res.stderr
    errors = [line for line in wrong.stderr.splitlines() if not line.startswith("skipped:")]
    assert wrong.returncode != 0 and len(errors) == 1 and "401 Unauthorized" in errors[0]
    local = L.build(scan_records(tmp_path / "r")[0])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == [str(local.read), str(len(local.table)), "hf://datasets/someone/smallbench-results"]
    # the Space restarted with the Hub down: the last whole copy, and the page says which
    assert unreachable.returncode == 0, unreachable.stderr
    read, rows, where = unreachable.stdout.split(" ", 2)
    assert [read, rows] == shown.stdout.split()[:2]
    assert f"(not read from the Hub: unreachable (ConnectError); its copy of commit {repo.main[:12]} from" in where


def test_models_pin_takes_the_commit_and_config_json_from_the_hub(tmp_path):
    """Pinning, against a stand-in that speaks the Hub's API (tests/hub_standin.py): the repo's current commit and
    its config.json go into a copy of the catalogue; a difference in the config is named key by key; a repo the
    Hub lacks, or a config whose count disagrees with the published one, is one line and leaves its file as it
    was; a report without --write changes nothing."""
    cat = tmp_path / "catalogue"
    shutil.copytree(models.CATALOGUE_DIR, cat)
    before = {f.name: f.read_text() for f in cat.iterdir()}
    nemotron, minicpm, qwen = (models.entry(n) for n in ("nemotron-3-nano-4b", "minicpm5-1b", "qwen3-4b"))
    token = "hf_" + "q" * 30
    with hub_standin(token) as (hub, url):
        hub_config = {**nemotron.config, "max_position_embeddings": 131072, "transformers_version": "5.3.0"}
        hub.add("model", nemotron.repo, {"config.json": json.dumps({"model_type": "nemotron_h"}).encode()})
        sha = hub.add("model", nemotron.repo, {"config.json": json.dumps(hub_config).encode()})
        hub.add("model", minicpm.repo, {"config.json": json.dumps(minicpm.config).encode()})
        hub.add("model", qwen.repo, {"config.json": json.dumps({**qwen.config, "intermediate_size": 12288}).encode()})
        broken = {**models.entry("qwen3-1.7b").config, "num_hidden_layers": 40}  # 28 layer_types: unreadable
        hub.add("model", models.entry("qwen3-1.7b").repo, {"config.json": json.dumps(broken).encode()})
        env = {**HUB, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": token}
        names = ["nemotron-3-nano-4b", "minicpm5-1b", "qwen3-1.7b", "qwen3-4b", "tiny-aya-global"]
        report = run_cli("models", "pin", *names, "--catalogue", str(cat), cwd=tmp_path, env=env)
        assert report.returncode == 1, report.stderr
        assert {f.name: f.read_text() for f in cat.iterdir()} == before
        r = run_cli("models", "pin", *names, "--catalogue", str(cat), "--write", cwd=tmp_path, env=env)
        hub.add("model", "someone/plain", {"config.json": json.dumps(minicpm.config).encode()})
        check = run_cli("models", "check", "someone/plain", cwd=tmp_path, env=env)  # its config.json only
        absent = run_cli("models", "check", "someone/absent", cwd=tmp_path, env=env)
        # a catalogued name at another revision: its repo's config.json there (a 4,096-token context)
        shorter = json.dumps({**minicpm.config, "max_position_embeddings": 4096}).encode()
        minicpm_sha = hub.add("model", minicpm.repo, {"config.json": shorter})
        at_sha = run_cli("fit", "minicpm5-1b", "--revision", minicpm_sha, "--memory", "8GB", cwd=tmp_path, env=env)
        no_rev = run_cli("fit", "minicpm5-1b", "--revision", "f" * 40, "--memory", "8GB", cwd=tmp_path, env=env)
    assert at_sha.returncode == 0 and "model maximum 4,096" in at_sha.stdout, at_sha.stderr
    assert no_rev.returncode == 2 and f"no revision '{'f' * 40}'" in no_rev.stderr, no_rev.stderr
    assert check.returncode == 0 and "1,080,632,832 parameters" in check.stdout, check.stderr
    want = "error: cannot get the config.json of 'someone/absent': no such repository (or it is private)"
    assert absent.returncode == 2 and absent.stderr.strip() == want
    assert r.returncode == 1 and token not in r.stdout + r.stderr
    assert (f"nemotron-3-nano-4b: {nemotron.repo} at {sha}; config.json 2 keys differ: max_position_embeddings "
            '262144 → 131072; transformers_version (absent) → "5.3.0"') in r.stdout
    assert "minicpm5-1b: openbmb/MiniCPM5-1B at " in r.stdout and "the same as the catalogue's" in r.stdout
    errors = r.stderr.splitlines()
    assert len(errors) == 3 and "Traceback" not in r.stderr
    assert "qwen3-1.7b: cannot count the parameters of Qwen/Qwen3-1.7B" in errors[0] and "not pinned" in errors[0]
    assert "qwen3-4b: the config.json of Qwen/Qwen3-4B at" in errors[1] and "not pinned" in errors[1]
    assert "tiny-aya-global: cannot pin CohereLabs/tiny-aya-global: no such repository" in errors[2]
    pinned = models.read_entry(cat / "nemotron-3-nano-4b.json")
    assert pinned.revision == sha and pinned.config == hub_config and sha in pinned.config_source
    assert models.read_entry(cat / "minicpm5-1b.json").revision
    for untouched in ("qwen3-1.7b.json", "qwen3-4b.json", "tiny-aya-global.json", "gemma-3-1b.json"):
        assert (cat / untouched).read_text() == before[untouched]
    assert run_cli("models", "pin", "no-such", "--catalogue", str(cat), cwd=tmp_path).returncode == 2
