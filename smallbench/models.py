"""Model registry: short names for models people ask for, and resolution of any model id.

A model id is one of: a registered short name (``tiny-llama``, ``nemotron-3-nano-4b``, ...),
a local folder, or a Hugging Face Hub repo id (``org/name``). Resolution checks that the model
can be found *before* any cell starts, so a typo is one clear line, not a failed run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from smallbench.errors import SmallbenchError
from smallbench.paths import sha256_file


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    repo: str  # Hub repo id, or "builtin"
    params: str
    note: str = ""


REGISTRY: dict[str, RegisteredModel] = {
    m.name: m
    for m in [
        RegisteredModel("tiny-llama", "builtin", "1.3M", "ships with smallbench; the default"),
        RegisteredModel("nemotron-3-nano-4b", "nvidia/NVIDIA-Nemotron-3-Nano-4B-BF16", "4B",
                        "hybrid Mamba-Transformer"),
        RegisteredModel("mellum-4b", "JetBrains/Mellum-4b-base", "4B", "Llama-style code model"),
        RegisteredModel("tiny-aya-base", "CohereLabs/tiny-aya-base", "3.35B", "multilingual; non-commercial licence"),
        RegisteredModel("tiny-aya-global", "CohereLabs/tiny-aya-global", "3.35B", "multilingual; non-commercial"),
        RegisteredModel("minicpm4-0.5b", "openbmb/MiniCPM4-0.5B", "0.5B", "may need --trust-remote-code"),
    ]
}  # fmt: skip

@dataclass(frozen=True)
class ResolvedModel:
    id: str  # what the user asked for
    source: str  # local folder or Hub repo id handed to the backend
    revision: str | None
    builtin: bool
    weights_sha256: str | None  # content hash of the weights where known without a download


def resolve(model_id: str, revision: str | None = None) -> ResolvedModel:
    """Find the model. Raises :class:`SmallbenchError` if absent."""
    if model_id in REGISTRY and REGISTRY[model_id].repo == "builtin":
        from smallbench import tiny_model

        return ResolvedModel(model_id, str(tiny_model.model_dir()), None, True, tiny_model.WEIGHTS_SHA256)
    source = REGISTRY[model_id].repo if model_id in REGISTRY else model_id
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir() and local.suffix != ".gguf":
            raise SmallbenchError(f"model path '{source}' is a file, not a model folder")
        return ResolvedModel(model_id, str(local.resolve()), revision, False, weights_digest(local))
    if source.count("/") != 1 or source.startswith(("/", ".", "~")):
        raise SmallbenchError(
            f"unknown model '{model_id}': not a registered name ({', '.join(REGISTRY)}), "
            "an existing local path, or a Hub id of the form org/name"
        )
    cached = _hub_snapshot(source, revision)
    if cached is not None:
        return ResolvedModel(model_id, source, revision, False, weights_digest(cached))
    reason = _hub_check(source, revision)
    if reason:
        raise SmallbenchError(
            f"model '{model_id}' not found: not a registered name ({', '.join(REGISTRY)}), "
            f"not a local path, not in the Hugging Face cache, and the Hub says: {reason}"
        )
    return ResolvedModel(model_id, source, revision, False, None)


def _hub_snapshot(repo: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of ``repo`` (a model folder, or a repo of GGUF files), if any."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a cache entry without that revision
        return None


def _hub_check(repo: str, revision: str | None) -> str | None:
    """None if the Hub knows the repo, else why not (offline, missing, gated) in one line."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return "offline (HF_HUB_OFFLINE is set)"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(repo, revision=revision, timeout=10)
    except GatedRepoError:
        return "gated repo: accept its licence on the Hub and log in (hf auth login)"
    except RepositoryNotFoundError:
        return "no such repository (or it is private)"
    except RevisionNotFoundError:
        return f"no revision '{revision}'"
    except Exception as exc:  # network down, DNS, proxy...
        return f"unreachable ({type(exc).__name__})"
    return None


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
