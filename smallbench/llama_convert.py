"""Hugging Face checkpoints → GGUF with llama.cpp's own converter, the one matching the installed llama.cpp.

llama-cpp-python installs llama.cpp's library but not its Python converter (``convert_hf_to_gguf.py``, its
``conversion/`` package and ``gguf-py``). Its source distribution on PyPI carries them, at exactly the
llama.cpp commit the installed library was built from, so :func:`fetch` takes them from there into the
smallbench cache: once, with network (``smallbench setup llama-converter``; the README's install commands run
it). Conversion itself is offline: :func:`ensure_gguf` converts a checkpoint folder once (16-bit or F32), then
quantizes with llama.cpp's own ``llama_model_quantize``, and caches both by the checkpoint's content.

Three adjustments, all narrow:
- the converter names a BPE tokenizer's pre-tokenizer by hashing its output on a fixed text and refuses
  tokenizers it has not seen. The dummy models carry smallbench's built-in tokenizer, a GPT-2-style byte-level
  BPE, so for a folder holding exactly that tokenizer (checked by sha256) the pre-tokenizer is given as
  ``gpt-2`` (and Phi-3's converter, which wants SentencePiece unless the tokenizer config names GPT-2's class,
  takes it as the GPT-2 vocabulary it is). Every other tokenizer goes through the converter's checks unchanged;
- the converter asks transformers to trust remote code in several places; it is held to the user's
  ``--trust-remote-code`` (smallbench never turns it on by itself);
- the converter reads a config through transformers, which rewrites Nemotron-H's: transformers 5's
  ``NemotronHConfig`` fills in expert settings (the converter then takes a dense model for a mixture of
  experts) and turns ``hybrid_override_pattern`` into a list of layer names whose MLP entries the converter
  does not recognise. A dense Nemotron-H (Nemotron 3 Nano 4B) then converts to a file llama.cpp cannot load.
  For ``nemotron_h`` the pattern is passed as config.json writes it (a config that transformers 5 wrote, with
  only ``layers_block_type``, has it spelled back as the pattern's letters), and expert settings config.json does
  not have are dropped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

from smallbench.errors import SmallbenchError
from smallbench.paths import cache_dir, sha256_file

#: What of the sdist's ``vendor/llama.cpp/`` the converter needs.
MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/")
SETUP_HINT = "run `smallbench setup llama-converter` once with access to PyPI"
#: Float types the converter writes itself; every other GGUF type is quantized from one of them.
CONVERTER_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        raise SmallbenchError("llama-cpp-python is not installed: pip install 'smallbench[llama-cpp]'") from None


def converter_dir(version: str | None = None) -> Path:
    return cache_dir() / "llama-converter" / (version or installed_version())


def fetch(version: str | None = None, timeout: float = 120.0) -> Path:
    """Download llama-cpp-python's sdist of ``version`` (default: the installed one) from PyPI and keep the
    converter's files. Returns the converter folder; does nothing if it is already there."""
    version = version or installed_version()
    dest = converter_dir(version)
    if (dest / "convert_hf_to_gguf.py").exists():
        return dest
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    want = f"llama_cpp_python-{version}.tar.gz"
    try:  # the index's JSON form (PEP 691), as pip reads it
        req = urllib.request.Request(f"{index}/llama-cpp-python/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            files = json.load(r)["files"]
        sdist = next(f["url"] for f in files if f["filename"].lower() == want)
        with urllib.request.urlopen(sdist, timeout=timeout) as r:
            data = r.read()
    except (OSError, StopIteration, KeyError, ValueError) as exc:
        why = "no such file on the index" if isinstance(exc, StopIteration) else f"{type(exc).__name__}: {exc}"
        raise SmallbenchError(f"could not download {want} from {index} ({why})") from None
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            rel = m.name.split("/vendor/llama.cpp/", 1)[-1] if "/vendor/llama.cpp/" in m.name else None
            if rel and m.isfile() and rel.startswith(MEMBERS):
                m.name = rel
                tar.extract(m, tmp, filter="data")
    if not (tmp / "convert_hf_to_gguf.py").exists():
        raise SmallbenchError(f"llama-cpp-python {version}'s source has no convert_hf_to_gguf.py")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return dest


def ensure_converter() -> Path:
    """The converter folder for the installed llama.cpp; fetched if missing and PyPI is reachable."""
    dest = converter_dir()
    if (dest / "convert_hf_to_gguf.py").exists():
        return dest
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise SmallbenchError(f"llama.cpp's converter for llama-cpp-python {installed_version()} is not in the "
                              f"cache and the run is offline: {SETUP_HINT}")
    try:
        return fetch()
    except SmallbenchError as exc:
        raise SmallbenchError(f"{exc}; {SETUP_HINT}") from None


#: Runs the converter with the built-in tokenizer's pre-tokenizer named (see the module docstring).
_RUNNER = """
import sys
conv, builtin_sha, allow_remote_code = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
sys.argv = [conv + "/convert_hf_to_gguf.py", *sys.argv[4:]]
sys.path[:0] = [conv, conv + "/gguf-py"]
import hashlib, json, pathlib
import transformers.dynamic_module_utils as dynamic
from transformers.models.auto import auto_factory, configuration_auto, tokenization_auto
resolve = dynamic.resolve_trust_remote_code
def resolve_as_the_user_said(trust_remote_code, *args, **kwargs):  # the converter passes True in places
    return resolve(bool(trust_remote_code) and allow_remote_code, *args, **kwargs)
for module in (dynamic, auto_factory, configuration_auto, tokenization_auto):
    module.resolve_trust_remote_code = resolve_as_the_user_said
from conversion import base
def builtin_tokenizer(model):
    tok = pathlib.Path(model.dir_model) / "tokenizer.json"
    return tok.is_file() and hashlib.sha256(tok.read_bytes()).hexdigest() == builtin_sha
original = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    return "gpt-2" if builtin_tokenizer(self) else original(self, tokenizer)
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
try:
    from conversion import phi
except ImportError:
    phi = None
if phi is not None:  # Phi-3's vocab is SentencePiece unless tokenizer_config.json names GPT2Tokenizer
    phi_vocab = phi.Phi3MiniModel.set_vocab
    def phi_set_vocab(self):
        return self._set_vocab_gpt2() if builtin_tokenizer(self) else phi_vocab(self)
    phi.Phi3MiniModel.set_vocab = phi_set_vocab
load_hparams = base.ModelBase.load_hparams
_MOE_KEYS = {"n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob"}
from smallbench.sizing import NEMOTRON_LETTERS as _LETTERS
def load_hparams_as_written(dir_model, is_mistral_format):
    hparams = load_hparams(dir_model, is_mistral_format)
    written = pathlib.Path(dir_model) / "config.json"
    raw = json.loads(written.read_text()) if written.is_file() else {}
    if raw.get("model_type") != "nemotron_h":
        return hparams
    pattern = raw.get("hybrid_override_pattern")  # the pattern as written, not transformers' list of layer names
    names = raw.get("layers_block_type")
    if pattern is None and isinstance(names, list) and all(t in _LETTERS for t in names):  # transformers 5 wrote it
        pattern = "".join(_LETTERS[t] for t in names)
    if pattern is not None:
        hparams["hybrid_override_pattern"] = pattern
    if "num_experts_per_tok" not in raw:
        for key in [k for k in hparams if k not in raw and ("expert" in k or k.startswith("moe_") or k in _MOE_KEYS)]:
            del hparams[key]  # defaults transformers added: this is not a mixture of experts
    return hparams
base.ModelBase.load_hparams = staticmethod(load_hparams_as_written)
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def convert(hf_dir: Path, out: Path, outtype: str = "F16", trust_remote_code: bool = False,
            timeout: float = 3600.0) -> None:
    """Write ``hf_dir`` as a GGUF of ``outtype`` (F32 / F16 / BF16) with llama.cpp's converter. The converter asks
    transformers to trust remote code in places (e.g. Nemotron-H's tokenizer); it gets the repo's code
    only with the user's ``trust_remote_code``."""
    from smallbench import tiny_model

    conv = ensure_converter()
    builtin_sha = sha256_file(tiny_model.model_dir() / "tokenizer.json")
    cmd = [sys.executable, "-c", _RUNNER, str(conv), builtin_sha, "1" if trust_remote_code else "0", str(hf_dir),
           "--outfile", str(out),
           "--outtype", CONVERTER_TYPES[outtype]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        arch = json.loads((hf_dir / "config.json").read_text()).get("architectures", ["?"])[0]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        raise SmallbenchError(f"llama.cpp's converter (llama-cpp-python {installed_version()}) cannot convert "
                              f"{arch}: {why}")


def ensure_gguf(hf_dir: Path, weights_id: str, quant: str, trust_remote_code: bool = False) -> Path:
    """The cached GGUF of the checkpoint in ``hf_dir`` (identified by ``weights_id``) as ``quant``, converted
    (and quantized) on first use. The cache key includes the converter's version."""
    from smallbench.gguf_export import cached_gguf

    # other types are quantized from the checkpoint's own precision, as llama.cpp's instructions do
    base = quant.upper() if quant.upper() in CONVERTER_TYPES else checkpoint_type(hf_dir)
    # the GGUF holds the config's settings and the tokenizer too: the same weights beside another config.json
    # (another RoPE, another layer pattern: seeded dummies of one shape share their weights) convert anew, as
    # they do when smallbench's adjustments around the converter (_RUNNER) change
    described = hashlib.sha256(_RUNNER.encode())
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        if (hf_dir / name).is_file():
            described.update(name.encode() + b"\0" + (hf_dir / name).read_bytes())
    key = f"{weights_id[:16]}-{described.hexdigest()[:8]}-llama-cpp-python-{installed_version()}"
    return cached_gguf(key, hf_dir.name, quant, base, lambda tmp: convert(hf_dir, tmp, base, trust_remote_code))


def checkpoint_type(hf_dir: Path) -> str:
    """The GGUF float type of a checkpoint's own precision (llama.cpp's ``--outtype auto``)."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32").removeprefix("torch.")
    return {"bfloat16": "BF16", "float16": "F16"}.get(dtype, "F32")
