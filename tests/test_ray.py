"""The ray executor on a real local Ray cluster (two raylets on 127.0.0.1): an 8-cell matrix in which one group's
worker crashes and a node is removed mid-run. Every other cell completes, the failures are records with Ray's
reason, and the records equal a local run of the same matrix apart from timings."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from smallbench import load_results
from tests.conftest import require, run_cli

require("ray", "ray")

# a local test cluster: no token auth, loopback only, no dashboard, no usage report
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
MATRIX = ["run", "-b", "transformers,llama-cpp", "--quant", "F32,Q8_0,Q4_0", "-s", "latency,memory",
          "--prompt-tokens", "16", "--gen-tokens", "8", "--repeats", "2", "--warmup", "0", "--timeout", "300"]
CELLS = 8  # transformers once + llama-cpp in three types, × two suites


@pytest.fixture(scope="module")
def cluster():
    os.environ.update(RAY_ENV)  # the raylets and their workers inherit it
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "object_store_memory": 100 * 2**20})
    worker = c.add_node(num_cpus=1, object_store_memory=100 * 2**20)
    c.wait_for_nodes()
    yield c, worker
    c.shutdown()


def _runs_a_cell(node) -> bool:
    """Whether a group's process is running under this node's raylet."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    with_cells = [p for p in raylet.children(recursive=True) if "smallbench.cell" in " ".join(p.cmdline())]
    return bool(with_cells)


def _shape(rec) -> tuple:
    return (rec.cell_id, rec.status, rec.suite, rec.settings, rec.model.model_dump(), rec.hardware.fingerprint,
            sorted((m.name, str(sorted(m.labels.items()))) for m in rec.metrics), sorted(rec.samples))


def test_a_matrix_on_a_cluster_survives_a_crashed_worker_and_a_removed_node(cluster, tmp_path):
    c, worker = cluster
    out = tmp_path / "ray"
    env = {**os.environ, **RAY_ENV, "COLUMNS": "200", "SMALLBENCH_INJECT_FAULT": "exit:memory:llama-cpp:Q4_0"}
    proc = subprocess.Popen([sys.executable, "-m", "smallbench.cli", *MATRIX, "--executor", "ray", "--address",
                             c.address, "--retries", "1", "-o", str(out)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, removed = time.time() + 300, False
    while proc.poll() is None and time.time() < deadline and not removed:
        if _runs_a_cell(worker):
            time.sleep(1.0)
            c.remove_node(worker)  # the node dies mid-group: Ray re-runs the group on the head
            removed = True
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=600)
    assert removed, "no group ever ran on the second node"
    assert proc.returncode == 1 and "Traceback" not in stdout + stderr, stderr
    df = load_results(out)
    assert df["cell_id"].nunique() == CELLS
    failed = df[df.status == "failed"].drop_duplicates("cell_id")
    assert set(zip(failed.suite, failed.quant, strict=True)) == {("memory", "Q4_0"), ("latency", "Q4_0")}
    assert all(e.startswith("ray: WorkerCrashedError") for e in failed.error)
    assert list((out / ".logs").glob("*.log"))  # the groups' logs came back with their records
    _, alive = psutil.wait_procs([p for p in psutil.process_iter(["cmdline"])
                                  if "smallbench.cell" in " ".join(p.info["cmdline"] or [])], timeout=20)
    assert not alive, f"group processes outlived their node or worker: {alive}"

    # the same matrix run locally: the same cells, ids, settings and metrics; only the timings differ
    local = tmp_path / "local"
    res = run_cli(*MATRIX, "-o", str(local), cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    from smallbench.results import read_records

    ours = {r.cell_id: r for r in read_records(out) if r.status == "ok"}
    theirs = {r.cell_id: r for r in read_records(local)}
    assert len(ours) == CELLS - 2 and set(ours) < set(theirs)
    assert [_shape(ours[k]) for k in sorted(ours)] == [_shape(theirs[k]) for k in sorted(ours)]

    # a resource no node has: the plan says so, and a run fails those cells with the reason instead of waiting
    res = run_cli("plan", *MATRIX[1:], "--executor", "ray", "--address", c.address, "--ray-resources",
                  '{"H100": 1}', "-o", str(tmp_path / "none"), cwd=tmp_path, env=RAY_ENV)
    assert res.returncode == 0 and res.stdout.count('no node of the Ray cluster has {"CPU": 1.0, "H100": 1.0}') == \
        CELLS, res.stdout + res.stderr
