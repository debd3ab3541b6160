"""Getting results to the leaderboard Space: records to a Hub dataset repo, and a ready-to-push Space folder.

The ecosystem's way (LLM-Perf): benchmark machines push records to a *dataset* repo; the Space reads that repo at
start-up (``SMALLBENCH_RESULTS_REPO`` or the folder the Space ships with). Only records that read back valid are
uploaded; tokens come from huggingface_hub's own lookup (``HF_TOKEN``, ``hf auth login``) and are never printed.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import shutil
from pathlib import Path

from smallbench.errors import SmallbenchError, one_line
from smallbench.results import scan_record_files

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
#: The Space's pinned requirements besides smallbench's own dependencies.
APP_PACKAGES = ["gradio", "plotly"]


def check_repo(repo: str) -> str:
    if not REPO_RE.match(repo):
        raise SmallbenchError(f"--repo '{repo}' is not a Hub repo id (ORG/NAME)")
    return repo


def valid_records(folder: Path) -> tuple[list[Path], list[str]]:
    """The record files under ``folder`` that read back valid, and one line per skipped file."""
    found, skipped = scan_record_files(folder)
    return [f for f, _ in found], skipped


def publish(folder: Path, repo: str, private: bool = False, message: str | None = None) -> tuple[int, int, list[str]]:
    """Upload the valid records under ``folder`` that the dataset ``repo`` does not hold yet, in one commit.
    Returns (uploaded, already there, skipped-file notes)."""
    check_repo(repo)
    files, skipped = valid_records(folder)
    if not files:
        raise SmallbenchError(f"no valid result records under '{folder}'")
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    rel = {f.relative_to(folder).as_posix() if folder.is_dir() else f.name: f for f in files}
    try:
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        remote = set(api.list_repo_files(repo, repo_type="dataset"))
        new = {k: f for k, f in rel.items() if k not in remote}
        if new:
            ops = [CommitOperationAdd(path_in_repo=k, path_or_fileobj=str(f)) for k, f in new.items()]
            api.create_commit(repo, ops, commit_message=message or f"smallbench: {len(new)} result records",
                              repo_type="dataset")
    except Exception as exc:  # offline, no token, no write access: one line, never the token
        raise SmallbenchError(f"cannot publish to the Hub dataset {repo}: {one_line(exc)}") from exc
    return len(new), len(rel) - len(new), skipped


def _requirements() -> list[str]:
    """smallbench's own dependencies and the app's, pinned to the versions installed here (the ones tested)."""
    names = []
    for req in md.requires("smallbench") or []:
        if "extra ==" not in req:
            names.append(re.split(r"[<>=!~; \[]", req, maxsplit=1)[0])
    pins = []
    for name in [*names, *APP_PACKAGES]:
        try:
            pins.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError as exc:
            raise SmallbenchError(f"the Space needs {name}: pip install 'smallbench[app]'") from exc
    return pins


FRONT_MATTER = """---
title: smallbench leaderboard
emoji: 📊
colorFrom: indigo
colorTo: green
sdk: gradio
sdk_version: {gradio}
python_version: "3.11"
app_file: leaderboard_app.py
pinned: false
license: apache-2.0
tags:
  - leaderboard
short_description: Small open LLMs across Transformers, vLLM, llama.cpp and MLX
---

# smallbench leaderboard

Speed, memory and accuracy of small open language models (under 32B parameters) on four inference backends,
per hardware. Built by `smallbench space`; results {where}.
"""


def write_space(out: Path, results: Path | None, repo: str | None = None) -> tuple[int, list[str]]:
    """A folder a Space runs as-is: the app, smallbench's package (vendored: the Space installs only the pinned
    requirements), README front matter, requirements.txt and the valid records (or the dataset repo to read).
    Returns (records copied, skipped-file notes)."""
    import smallbench
    import smallbench.backends
    import smallbench.suites

    if repo:
        check_repo(repo)
    if out.exists() and not out.is_dir():
        raise SmallbenchError(f"'{out}' is a file; give a new folder for the Space")
    if out.exists() and any(out.iterdir()):
        raise SmallbenchError(f"'{out}' is not empty; give a new folder for the Space")
    pkg = out / "smallbench"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "builtin-models")
    shutil.copytree(Path(smallbench.__file__).parent, pkg, ignore=skip)
    for sub in (smallbench.backends, smallbench.suites):
        shutil.copytree(Path(sub.__file__).parent, pkg / sub.__name__.rsplit(".", 1)[1], ignore=skip,
                        dirs_exist_ok=True)
    source = f'"hf://datasets/{repo}"' if repo else '"results"'
    (out / "leaderboard_app.py").write_text(
        '"""The smallbench leaderboard Space (written by `smallbench space`)."""\n\n'
        "from smallbench.app import main\n\n"
        f"main({source})\n"
    )
    (out / "requirements.txt").write_text("\n".join(_requirements()) + "\n")
    copied, skipped = 0, []
    if results is not None:
        files, skipped = valid_records(results)
        for f in files:
            dest = out / "results" / (f.relative_to(results) if results.is_dir() else f.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
            copied += 1
    where = f"are read from the Hub dataset `{repo}`" if repo else f"ship in `results/` ({copied} records)"
    (out / "README.md").write_text(FRONT_MATTER.format(gradio=md.version("gradio"), where=where))
    return copied, skipped
