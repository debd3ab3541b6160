"""Executors: one load per group, the same records inline and in a child process, open_backend for notebooks."""

from __future__ import annotations

import pytest

import smallbench
from smallbench import runner
from smallbench.errors import SmallbenchError
from smallbench.executors import InlineExecutor, LocalExecutor
from smallbench.hardware import hardware_info, software_versions
from smallbench.models import resolve

SETTINGS = {"prompt_tokens": 16, "gen_tokens": 8, "repeats": 2, "warmup": 0, "batch_sizes": [1]}


def _run(tmp_path, executor_cls, isolate="group", suites=("latency", "throughput", "memory")):
    hw, sw = hardware_info(), software_versions()
    load = {"device": "cpu", "dtype": "float32"}
    cells = runner.plan([resolve("tiny-llama")], ["transformers"], list(suites), SETTINGS, load, hw,
                        tmp_path / "results", runner.new_run_id())
    started = []
    records = runner.execute(cells, 300, False, hw, sw, on_start=lambda c: started.append(c.spec.suite),
                             executor=executor_cls(hw, sw), isolate=isolate)
    return cells, records, started


def _shape(rec) -> tuple:
    """What a record says apart from timings: cell, status, settings, model, the metrics it has."""
    return (rec.cell_id, rec.status, rec.suite, rec.settings, rec.model.model_dump(),
            sorted((m.name, str(sorted(m.labels.items())), m.unit) for m in rec.metrics), sorted(rec.samples))


def test_a_group_loads_once_and_its_records_equal_an_inline_run_apart_from_timings(tmp_path):
    cells, local, started = _run(tmp_path / "local", LocalExecutor)
    assert started == ["memory", "latency", "throughput"]  # memory first: before other work has grown the process
    assert {r.status for r in local} == {"ok"} and len({r.load.model_dump_json() for r in local}) == 1
    assert len(list((tmp_path / "local" / "results" / ".logs").glob("*.log"))) == 1
    _, inline, _ = _run(tmp_path / "inline", InlineExecutor)
    assert [_shape(r) for r in inline] == [_shape(r) for r in local]
    assert [r.cell_id for r in local] == [c.spec.cell_id for c in cells]  # the cells' order, not the run order
    # the roofline's bandwidth: this machine's best, this run's (the better of before the load and after the close)
    # kept with the earlier runs' in the cache
    roof = next(r for r in local if r.suite == "latency").extra["roofline"]
    assert "best multi-threaded read of memory on this machine" in roof["source"], roof["source"]
    assert roof["bandwidth_bytes_s"] >= roof["this_run_bytes_s"] > 0


def test_open_backend_refuses_a_device_or_dtype_it_does_not_know():
    for load in ({"device": "tpu"}, {"dtype": "float7"}):
        with pytest.raises(SmallbenchError, match=next(iter(load.values()))):  # not torch's RuntimeError after a load
            smallbench.open_backend("tiny-llama", "transformers", **load)


def test_open_backend_gives_a_loaded_backend_and_closes_it():
    with smallbench.open_backend("tiny-llama", "transformers", device="cpu", dtype="float32") as m:
        trace = m.backend.stream(m.backend.tokenize("The cat"), 4, ignore_eos=True)
        assert trace.n_out == 4 and m.info.params_total and m.load.seconds > 0
        backend = m.backend
    assert getattr(backend, "model", None) is None  # closed on leaving
