"""Executors: how a group of cells (one model load, its suites in order) runs.

- ``inline``: in this process (notebooks, tests, benchmarks): no isolation, no timeout.
- ``local``: a child process (``python -m smallbench.cell``) in its own process group, with a timeout per suite,
  killed as a group; the child sends its records back over a pipe and the caller alone writes them.
- ``ray``: each group a Ray task that runs the ``local`` executor on its node (smallbench.ray_executor).

An executor calls ``on_start(i)`` when cell ``i`` of the group begins and ``emit(i, record)`` with its record (ok or
failed; a roofline record may come twice, the last one counts). Every cell that was started gets a record; after a
crash, an OOM kill or a timeout, the group's later cells get failed records that say why they did not run. On an
interruption (SIGINT, SIGTERM) the running cell gets an "interrupted" record, the later ones none, and the
interruption is raised again.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from smallbench.backends import get_backend_class
from smallbench.cell import CHANNEL_ENV, GroupSpec, failed_record, run_group
from smallbench.hardware import HardwareInfo
from smallbench.paths import SCRATCH_ENV
from smallbench.results import ResultRecord, redact

Start = Callable[[int], None]
Emit = Callable[[int, ResultRecord], None]

#: Per-group temp folders: ``smallbench-cell-<runner pid>-<random>`` in the system temp folder.
TMP_PREFIX = "smallbench-cell-"
#: Signals by which native code dies (a segfault in an engine), as opposed to being killed (OOM, timeout).
NATIVE_CRASH = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}


class Interrupted(KeyboardInterrupt):
    """The runner was told to stop (SIGINT or SIGTERM): the running cell is stopped and recorded as failed."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig.name)
        self.signal = sig


@dataclass
class Job:
    """A group to run and where its news goes: ``reused(i, cell_id)`` says cell ``i`` already has a good record
    under the id it gets on the machine that would run it (an executor that runs elsewhere learns that there)."""

    group: GroupSpec
    log: Path
    on_start: Start
    emit: Emit
    reused: Callable[[int, str], None]


class Executor(ABC):
    name: ClassVar[str]
    #: Whether the executor runs many groups at once (the runner then hands it every group in one call).
    parallel: ClassVar[bool] = False

    def __init__(self, hardware: HardwareInfo, software: dict[str, str]) -> None:
        self.hardware, self.software = hardware, software

    @abstractmethod
    def run(self, group: GroupSpec, log: Path, timeout: float, on_start: Start, emit: Emit) -> None: ...

    def run_all(self, jobs: list[Job], timeout: float, done_ids: Callable[[], set[str]]) -> None:
        """Run the jobs (one after another here). ``done_ids()``: the cell ids that already have a good record."""
        for job in jobs:
            self.run(job.group, job.log, timeout, job.on_start, job.emit)


class InlineExecutor(Executor):
    """The group in this process: what a notebook or a test wants; a crash or a hang is the caller's."""

    name = "inline"

    def run(self, group: GroupSpec, log: Path, timeout: float, on_start: Start, emit: Emit) -> None:
        run_group(group, lambda i, rec: on_start(i) if rec is None else emit(i, rec))


class LocalExecutor(Executor):
    """The group in a child process with its own process group; ``timeout`` applies to each suite (the first one's
    includes the load)."""

    name = "local"

    def run(self, group: GroupSpec, log: Path, timeout: float, on_start: Start, emit: Emit) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-")
        spec_file = Path(tmp) / "group.json"
        spec_file.write_text(group.model_dump_json(), encoding="utf-8")
        current, recorded, t_cell = 0, set(), time.perf_counter()
        error, stop = None, None
        messages: queue.Queue[str | None] = queue.Queue()

        def handle(line: str) -> bool:
            """Pass one message on; True when it starts a cell."""
            nonlocal current, t_cell
            try:
                msg = json.loads(line)
                rec = ResultRecord.model_validate(msg["data"]) if "record" in msg else None
            except ValueError:
                return False  # a line cut short by a dying child
            if rec is None:
                current, t_cell = int(msg["start"]), time.perf_counter()
                on_start(current)
                return True
            if rec.status == "failed" and (cause := _root_cause(group, rec.error or "", log)):
                rec.error = cause
            recorded.add(int(msg["record"]))
            emit(int(msg["record"]), rec)
            return False

        read_end, write_end = os.pipe()
        try:
            try:
                with open(log, "w", encoding="utf-8") as out:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "smallbench.cell", str(spec_file)], env=self._env(tmp, write_end),
                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                        pass_fds=(write_end,),
                    )
            except BaseException:
                os.close(read_end)
                raise
            finally:
                os.close(write_end)  # the child holds its own copy: the channel ends when the child's side closes
            reader = threading.Thread(target=_read_lines, args=(read_end, messages), daemon=True)
            reader.start()
            try:
                error = self._follow(group, proc, messages, handle, timeout)
            except KeyboardInterrupt as exc:
                _kill_group(proc, grace=2.0)
                stop = exc
                error = f"interrupted by {exc.signal.name if isinstance(exc, Interrupted) else 'SIGINT'}"
            reader.join(timeout=5)
            while not messages.empty():  # what the child sent before it ended
                if (line := messages.get()) is not None:
                    handle(line)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        scrub_log(log)
        missing = [i for i in range(len(group.cells)) if i not in recorded]
        if not missing:
            if stop is not None:
                raise stop
            return
        error = error or "cell process ended without writing a result"
        if stop is None and (tail := _log_tail(log)):
            error += f"; log: {tail[-300:]}"
        for i in missing:
            spec = group.cells[i]
            if i <= current:
                emit(i, failed_record(spec, error, self.hardware, self.software, started=t_cell))
            elif stop is None:  # after an interruption, cells that never started get no record: a resume runs them
                why = f"not run: the group's process ended during its {group.cells[current].suite} suite ({error})"
                emit(i, failed_record(spec, why, self.hardware, self.software))
        if stop is not None:
            raise stop

    def _env(self, tmp: str, channel: int) -> dict[str, str]:
        """The child's environment: its temp files go in the per-group folder (removed after the group, whatever
        happens to it), it knows its runner (so it ends itself if the runner dies) and its channel."""
        return {**os.environ, SCRATCH_ENV: tmp, "SMALLBENCH_RUNNER_PID": str(os.getpid()), CHANNEL_ENV: str(channel)}

    def _follow(self, group: GroupSpec, proc: subprocess.Popen, messages: queue.Queue,
                handle: Callable[[str], bool], timeout: float) -> str | None:
        """Pass on the child's messages until it ends; each cell's start resets the deadline. The reason the
        running cell failed, if it did (None when the child ended by itself with code 0 or 1)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = messages.get(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if proc.poll() is not None:
                    break
                if time.monotonic() >= deadline:
                    _kill_group(proc)
                    return f"timed out after {timeout:g} s"
                continue
            if line is None:  # the channel closed: the child is ending
                break
            if handle(line):
                deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        code = proc.poll()
        _kill_group(proc, grace=0)  # reap anything the cell left running (and the channel's last holders)
        if code is not None and code < 0:
            return _signal_reason(group, signal.Signals(-code))
        if code not in (0, 1):
            return f"cell process exited with code {code}"
        return None


def _root_cause(group: GroupSpec, error: str, log: Path) -> str | None:
    """The backend's reading of the real cause in the group's log, for an error that only wraps it."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    cause = get_backend_class(group.cells[0].backend).root_cause(error, text)
    return redact(cause) if cause else None


def _read_lines(fd: int, messages: queue.Queue) -> None:
    with open(fd, encoding="utf-8", errors="replace") as channel:
        for line in channel:
            messages.put(line)
    messages.put(None)


def _signal_reason(group: GroupSpec, sig: signal.Signals) -> str:
    """Why the cell died, with its backend's advice when native code crashed."""
    reason = f"cell process killed by signal {sig.name}"
    if sig == signal.SIGKILL:
        model = group.cells[0].model.id
        return reason + f" (out of memory? `smallbench fit {model}` says what fits in this machine's memory)"
    if sig in NATIVE_CRASH:
        first = group.cells[0]
        hint = get_backend_class(first.backend).crash_hint(first.load.get("options", {}))
        return reason + f" in native code{'; ' + hint if hint else ''}"
    return reason


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the cell's whole process group (engines it spawned included), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break  # the group is empty
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    proc.wait()


def _log_tail(log: Path, lines: int = 1) -> str:
    try:
        text = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def scrub_log(log: Path) -> None:
    """Token-shaped strings out of a cell's log (an argument, a traceback's locals)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = log.read_text(encoding="utf-8")
        if redact(text) != text:
            log.write_text(redact(text), encoding="utf-8")


def sweep_temp() -> None:
    """Remove per-group temp folders whose runner is gone (one killed with SIGKILL cannot clean up after itself)."""
    for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*"):
        pid = d.name.removeprefix(TMP_PREFIX).split("-")[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: The executors by name (``ray`` lives in smallbench.ray_executor: Ray is an optional extra).
EXECUTORS: dict[str, type[Executor]] = {e.name: e for e in (InlineExecutor, LocalExecutor)}
NAMES = (*EXECUTORS, "ray")


def get_executor(name: str, hardware: HardwareInfo, software: dict[str, str], **options) -> Executor:
    """The executor by name; ``options`` go to the ray executor (address, retries, resources)."""
    if name == "ray":
        from smallbench.ray_executor import RayExecutor

        return RayExecutor(hardware, software, **options)
    return EXECUTORS[name](hardware, software)
