"""The ``ray`` executor: every group a Ray task on an existing cluster (``--executor ray --address ...``).

Each task runs the ``local`` executor on its node, so isolation, timeouts and process-group kills are the same as on
one machine. The task asks for one CPU, a GPU where the run's device is CUDA (Ray then sets ``CUDA_VISIBLE_DEVICES``
and gives every GPU task a fresh worker), and the custom resources of ``--ray-resources`` (e.g. ``{"H100": 1}``,
which the nodes were started with: ``ray start --resources='{"H100": 1}'``). Records come back to the driver as
groups finish, and the driver alone writes them (atomically, so resume works as on one machine). A cell's id is
made on the node from the node's hardware, so the same cell run on two kinds of machine has two records. A node
that dies or a worker that crashes is retried ``--retries`` times by Ray, then recorded as failed with Ray's reason.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from smallbench.cell import INJECT_ENV, GroupSpec, failed_record, injected
from smallbench.errors import SmallbenchError, one_line
from smallbench.executors import Emit, Executor, Job, LocalExecutor, Start, scrub_log
from smallbench.hardware import HardwareInfo
from smallbench.results import ResultRecord


def parse_resources(text: str | None) -> dict[str, float]:
    """``--ray-resources``: a JSON object of resource name → amount (``{"H100": 1}``; ``GPU`` and ``CPU`` too)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, int | float) and not
                                              isinstance(v, bool) and v >= 0 for k, v in value.items()):
        raise SmallbenchError(f"--ray-resources takes a JSON object of names and amounts, like '{{\"H100\": 1}}', "
                              f"got '{text}'")
    return {k: float(v) for k, v in value.items()}


def _ray():
    try:
        import ray
    except ImportError:
        raise SmallbenchError("--executor ray needs Ray: pip install 'smallbench[ray]'") from None
    return ray


class RayExecutor(Executor):
    name = "ray"
    parallel = True

    def __init__(self, hardware: HardwareInfo, software: dict[str, str], address: str = "auto", retries: int = 1,
                 resources: dict[str, float] | None = None) -> None:
        super().__init__(hardware, software)
        self.address, self.retries, self.resources = address, retries, resources or {}

    def connect(self):
        """Ray, connected to the cluster at ``address`` (``auto``: the one this machine belongs to)."""
        ray = _ray()
        if not ray.is_initialized():
            why = _unreachable(self.address)  # ray.init waits minutes on an address where nothing listens
            if why:
                raise SmallbenchError(f"no Ray cluster at '{self.address}' ({why}): start one with `ray start "
                                      "--head` or pass --address HOST:PORT")
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SmallbenchError(f"no Ray cluster at '{self.address}' ({one_line(exc)}): start one with "
                                      "`ray start --head` or pass --address HOST:PORT") from None
        return ray

    def request(self, group: GroupSpec) -> dict[str, Any]:
        """The task's resource request: one CPU, one GPU on a CUDA device, and ``--ray-resources``."""
        res = dict(self.resources)
        cuda = str(group.cells[0].load.get("device", "auto")).startswith("cuda")
        return {"num_cpus": res.pop("CPU", 1.0), "num_gpus": res.pop("GPU", 1.0 if cuda else 0.0), "resources": res}

    def unplaceable(self, group: GroupSpec, nodes: list[dict[str, Any]]) -> str | None:
        """Why no live node of the cluster can ever run this group (None when one can)."""
        req = self.request(group)
        need = {"CPU": req["num_cpus"], "GPU": req["num_gpus"], **req["resources"]}
        need = {k: v for k, v in need.items() if v}
        for node in nodes:
            if node.get("Alive") and all(node.get("Resources", {}).get(k, 0) >= v for k, v in need.items()):
                return None
        return f"no node of the Ray cluster has {json.dumps(need)}"

    def nodes(self) -> list[dict[str, Any]]:
        return self.connect().nodes()

    def run(self, group: GroupSpec, log: Path, timeout: float, on_start: Start, emit: Emit) -> None:
        self.run_all([Job(group, log, on_start, emit, lambda i, cid: None)], timeout, set)

    def run_all(self, jobs: list[Job], timeout: float, done_ids) -> None:
        ray = self.connect()
        nodes, done = ray.nodes(), sorted(done_ids())
        task = ray.remote(run_on_node)
        pending: dict[Any, Job] = {}
        for job in jobs:
            if why := self.unplaceable(job.group, nodes):
                self._fail(job, why)
                continue
            req = self.request(job.group)
            ref = task.options(**req, max_retries=self.retries, retry_exceptions=False).remote(
                job.group.model_dump_json(), timeout, done, os.environ.get(INJECT_ENV, ""))
            pending[ref] = job
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as exc:  # NodeDiedError, WorkerCrashedError, ... after the retries
                    self._fail(job, f"ray: {type(exc).__name__}: {one_line(exc)}")
                    continue
                job.log.parent.mkdir(parents=True, exist_ok=True)
                job.log.write_text(out["log"], encoding="utf-8")
                scrub_log(job.log)
                for k, cell_id in out["reused"]:
                    job.reused(k, cell_id)
                for k, data in out["records"]:
                    job.emit(k, ResultRecord.model_validate_json(data))
        except KeyboardInterrupt:
            for ref in pending:  # groups still out: stopped, not recorded (a resume runs them)
                ray.cancel(ref, force=True)
            raise

    def _fail(self, job: Job, why: str) -> None:
        for k, spec in enumerate(job.group.cells):
            job.emit(k, failed_record(spec, why, None, self.software))


def run_on_node(group_json: str, timeout: float, done: list[str], inject: str) -> dict[str, Any]:
    """A Ray task: rekey the group's cells with this node's hardware, skip those that already have a good record,
    run the rest with the local executor; their records (JSON), the reused cells' ids and the group's log."""
    from smallbench.hardware import hardware_info, software_versions
    from smallbench.runner import cell_id

    if inject:
        os.environ[INJECT_ENV] = inject
    hardware, software = hardware_info(), software_versions()
    group = GroupSpec.model_validate_json(group_json)
    cells = [c.model_copy(update={"cell_id": cell_id(c, hardware.fingerprint)}) for c in group.cells]
    if any("exit" in injected(c) for c in cells):
        os._exit(1)  # the fault tests' crashing worker
    finished = set(done)
    reused = [(k, c.cell_id) for k, c in enumerate(cells) if c.cell_id in finished]
    todo = [k for k, c in enumerate(cells) if c.cell_id not in finished]
    records: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="smallbench-ray-") as tmp:
        log = Path(tmp) / "group.log"
        if todo:
            LocalExecutor(hardware, software).run(
                GroupSpec(cells=[cells[k] for k in todo]), log, timeout, lambda i: None,
                lambda i, rec: records.__setitem__(todo[i], rec.model_dump_json()),
            )
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    return {"records": sorted(records.items()), "reused": reused, "log": text}


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at ``address``'s HOST:PORT (``ray://`` too); None when something does, or for ``auto``."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")  # an IPv6 literal, [::1]:6379
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing answers at {host or '127.0.0.1'}:{port}: {one_line(exc)}"
