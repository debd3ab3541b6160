"""Result records: the versioned provenance schema, atomic writes, and ``load_results``.

One JSON file per (model, backend, suite, settings, hardware) cell. A record joins what ran
(model, backend, hardware, software, settings), what came out (metrics with statistics, and the
raw samples they were computed from) and how it ended (status, error).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from smallbench.backends.base import BackendInfo
from smallbench.errors import SmallbenchError
from smallbench.hardware import HardwareInfo
from smallbench.metrics import METRICS
from smallbench.stats import Drift, Stats
from smallbench.telemetry import Contention

SCHEMA_VERSION = 1


class ModelRecord(BaseModel):
    id: str
    source: str | None = None
    revision: str | None = None
    weights_sha256: str | None = None
    builtin: bool = False
    dummy: bool = False
    params_total: int | None = None
    params_active: int | None = None
    dtype: str | None = None
    quant: str | None = None

    @property
    def weights_id(self) -> str | None:
        """What names the weights across runs: the Hub commit where there is one (a run resolves a Hub id to it
        once, and later runs from the cache to the same), else the files' sha256; None for neither (dummy)."""
        return self.revision or self.weights_sha256


class Metric(BaseModel):
    name: str
    unit: str
    value: float
    stats: Stats | None = None
    #: Standard error of ``value`` where the metric has one without repeats (lm-eval accuracy).
    stderr: float | None = None
    higher_is_better: bool | None = None
    #: Key into ``ResultRecord.samples`` holding the raw samples ``stats`` was computed from.
    samples_key: str | None = None
    #: Sweep coordinates of this value, e.g. ``{"batch_size": 4}``; become columns in ``load_results``.
    labels: dict[str, Any] = Field(default_factory=dict)
    #: For per-trial samples in the order they ran: the trend across trials (thermal throttling).
    drift: Drift | None = None


class LoadRecord(BaseModel):
    seconds: float
    rss_before_bytes: int
    rss_after_bytes: int
    rss_peak_bytes: int


class ResultRecord(BaseModel):
    schema_version: int = SCHEMA_VERSION
    smallbench_version: str
    cell_id: str
    run_id: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    status: Literal["ok", "failed"]
    error: str | None = None
    suite: str
    settings: dict[str, Any] = Field(default_factory=dict)
    model: ModelRecord
    backend: BackendInfo
    hardware: HardwareInfo | None = None
    software: dict[str, str] = Field(default_factory=dict)
    load: LoadRecord | None = None
    metrics: list[Metric] = Field(default_factory=list)
    samples: dict[str, list[float]] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)
    duration_s: float | None = None
    #: What else the machine did while the suite ran (other processes' CPU, the hypervisor's steal).
    contention: Contention | None = None

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    def roofline_bound(self) -> tuple[float, str] | None:
        """The bandwidth (bytes/s) its ``decode_bandwidth_pct`` is a share of, and what kind of bound that is
        (:func:`smallbench.sizing.bound_kind`); None for a record without one."""
        from smallbench.sizing import bound_kind

        roof = self.extra.get("roofline") or {}
        bw = roof.get("bandwidth_bytes_s")
        return (float(bw), bound_kind(str(roof.get("source", "")))) if bw else None


_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{20,}")


def redact(text: str) -> str:
    """Remove anything shaped like a Hugging Face token."""
    return _TOKEN_RE.sub("hf_***", text)


def write_record(record: ResultRecord, path: Path) -> None:
    """Write atomically: a reader sees the old file or the whole new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = redact(record.model_dump_json(indent=2)) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sweep_partial(folder: Path) -> None:
    """Remove the temp files of record writers that died mid-write (``.NAME.PID.*.tmp``; a live writer's stay)."""
    from smallbench.executors import alive

    for f in Path(folder).glob(".*.tmp"):
        pid = f.name.rsplit(".json.", 1)[-1].split(".")[0]
        if pid.isdigit() and not alive(int(pid)):
            f.unlink(missing_ok=True)


#: A record holds summaries and raw samples: tens of kB, a few MB for a long sweep. Far larger is not a record.
MAX_RECORD_BYTES = 64 * 2**20


def _read_regular(path: Path, follow_symlinks: bool) -> bytes:
    """A regular file's bytes, at most MAX_RECORD_BYTES: a FIFO or device is refused without blocking on it, and
    a symbolic link unless ``follow_symlinks``."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if not follow_symlinks and path.is_symlink():
            raise SmallbenchError(f"{path}: a symbolic link; only regular files inside the folder are read") from exc
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SmallbenchError(f"{path}: not a regular file; skipped")
        if st.st_size > MAX_RECORD_BYTES:
            raise SmallbenchError(f"{path}: not a smallbench result record (larger than {MAX_RECORD_BYTES >> 20} MiB)")
        return f.read(MAX_RECORD_BYTES + 1)


def read_record(path: Path, follow_symlinks: bool = True) -> ResultRecord:
    """One record, checked: a regular file of bounded size, UTF-8, JSON, schema (its version included) and every
    declared metric's value inside what a measurement can be (a negative latency or a NaN marks a corrupt or
    forged file). Folder scans pass ``follow_symlinks=False``: a link never leads a scan out of the folder."""
    path = Path(path)
    try:
        text = _read_regular(path, follow_symlinks).decode("utf-8")
        version = json.loads(text).get("schema_version") if text.lstrip().startswith("{") else None
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise SmallbenchError(f"{path}: written by a newer smallbench (schema version {version}); this one reads "
                                  f"version {SCHEMA_VERSION}: upgrade smallbench to read it")
        if isinstance(version, int) and version != SCHEMA_VERSION:
            raise SmallbenchError(f"{path}: schema version {version}; this smallbench reads version {SCHEMA_VERSION}")
        record = ResultRecord.model_validate_json(text)
    except (OSError, ValidationError, ValueError) as exc:
        reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else type(exc).__name__
        raise SmallbenchError(f"{path}: not a smallbench result record ({reason})") from exc
    for m in record.metrics:
        spec = METRICS.get(m.name)
        if not math.isfinite(m.value) or (spec is not None and not spec.plausible(m.value)):
            raise SmallbenchError(f"{path}: impossible value {m.name} = {m.value!r} {m.unit}; record skipped")
    return record


def iter_record_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.exists():
        raise SmallbenchError(f"no results at '{p}'")
    return sorted(
        f for f in p.rglob("*.json") if not any(part.startswith(".") for part in f.relative_to(p).parts)
    )


def scan_record_files(path: str | os.PathLike = "results") -> tuple[list[tuple[Path, ResultRecord]], list[str]]:
    """Every valid record under ``path`` with its file, and one line per file that was skipped and why."""
    found, skipped = [], []
    explicit = Path(path).is_file()  # one file named by the user is read where it points; a scan never follows
    for f in iter_record_files(path):
        try:
            found.append((f, read_record(f, follow_symlinks=explicit)))
        except SmallbenchError as exc:
            skipped.append(str(exc))
    return found, skipped


def scan_records(path: str | os.PathLike = "results") -> tuple[list[ResultRecord], list[str]]:
    """Every valid record under ``path``, and one line per file that was skipped and why."""
    found, skipped = scan_record_files(path)
    return [r for _, r in found], skipped


def read_records(path: str | os.PathLike = "results") -> list[ResultRecord]:
    """Every valid record under ``path``; files that are not records are skipped with a warning."""
    records, skipped = scan_records(path)
    for line in skipped:
        warnings.warn(line, stacklevel=2)
    return records




def records_to_frame(records: list[ResultRecord]):
    """Tidy table: one row per metric per cell (a failed cell is one row with no metric)."""
    import pandas as pd

    rows = []
    for r in records:
        hw = r.hardware
        base = {
            "run_id": r.run_id,
            "cell_id": r.cell_id,
            "created_at": r.created_at,
            "status": r.status,
            "error": r.error,
            "suite": r.suite,
            "model": r.model.id,
            "model_source": r.model.source,
            "revision": r.model.revision,
            "weights_sha256": r.model.weights_sha256,
            "dummy": r.model.dummy,
            "params_total": r.model.params_total,
            "params_active": r.model.params_active,
            "dtype": r.model.dtype,
            "quant": r.model.quant,
            "backend": r.backend.name,
            "backend_version": r.backend.version,
            "device": r.backend.device,
            "hardware": hw.accelerator if hw else None,
            "hardware_id": hw.fingerprint if hw else None,
            "cpu_model": hw.cpu_model if hw else None,
            "gpu": hw.gpus[0].name if hw and hw.gpus else None,
            "settings": json.dumps(r.settings, sort_keys=True),
            "others_cpus": r.contention.others_cpus if r.contention else None,
            "steal": r.contention.steal if r.contention else None,
            "busy_flag": r.contention.busy if r.contention else None,
        }
        if not r.metrics:
            rows.append({**base, "metric": None, "unit": None, "value": None})
        for m in r.metrics:
            row = {**base, **m.labels, "metric": m.name, "unit": m.unit, "value": m.value,
                   "stderr": m.stderr, "higher_is_better": m.higher_is_better}
            if m.stats:
                row.update(m.stats.model_dump())
            if m.drift:
                row.update(slowdown=m.drift.slowdown, slowdown_flag=m.drift.flag)
            if m.name == "decode_bandwidth_pct" and (bound := r.roofline_bound()):
                row.update(bound_bytes_s=bound[0], bound_kind=bound[1])
            rows.append(row)
    return pd.DataFrame(rows)


def load_results(path: str | os.PathLike = "results"):
    """Load every result record under ``path`` (a folder or one file) into a tidy pandas DataFrame."""
    return records_to_frame(read_records(path))


def export(df, path: str | os.PathLike) -> Path:
    """Write a results DataFrame as CSV or Parquet, chosen by the file's suffix."""
    p = Path(path)
    if p.suffix == ".csv":
        df.to_csv(p, index=False)
    elif p.suffix == ".parquet":
        df.to_parquet(p, index=False)
    else:
        raise SmallbenchError(f"cannot export to '{p.name}': use a .csv or .parquet file name")
    return p
