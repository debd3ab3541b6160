"""A model server that smallbench starts, watches and stops: one subprocess bound to 127.0.0.1.

The server's output goes to a log file whose tail ends every error message. Stopping kills the
server's whole process tree (vLLM's API server spawns engine-core and worker processes), then its
process group; on Linux the server also gets SIGTERM if the process that started it dies. Every
process of the server carries an environment marker, so even workers orphaned by a crashed server
are found and stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil

from smallbench.errors import SmallbenchError
from smallbench.paths import scratch_dir


class ServerError(SmallbenchError):
    """The server failed to start, never became healthy, or died."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Runs ``argv[1:]`` after asking Linux to SIGTERM it when its parent dies (PR_SET_PDEATHSIG survives
#: exec). A wrapper rather than ``preexec_fn``, which is unsafe while other threads run.
_EXEC_DYING_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "try: ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "except Exception: pass\n"
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


MARKER = "SMALLBENCH_SERVER_ID"


def marked_processes(server_id: str) -> list[psutil.Process]:
    """Every living process that inherited ``SMALLBENCH_SERVER_ID=server_id``: the server and all it
    spawned, orphans included (a worker whose parent died is re-parented and leaves the tree)."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.environ().get(MARKER) == server_id:
                found.append(p)
    return found


def _gone(p: psutil.Process) -> bool:
    """Exited, or a zombie: a zombie runs nothing, and an orphan's may never be reaped (PID 1 in a
    container often reaps nobody), so waiting for it to vanish would only wait out the timeout."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` s for ``procs`` to be gone; return those still running."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in procs if not _gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def kill_all(root: psutil.Process | None, others: list[psutil.Process], grace: float = 10.0) -> None:
    """SIGTERM ``root`` first (a server shuts its own workers down) and wait up to ``grace`` s, then
    SIGTERM and finally SIGKILL whatever of ``others`` is still running."""
    alive = ([root] if root else []) + [p for p in others if p != root]
    if root is not None:
        with contextlib.suppress(psutil.Error):
            root.terminate()
        alive = _wait_gone(alive, grace)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive:
            return
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
        alive = _wait_gone(alive, grace)


class ManagedServer:
    """``start()`` launches ``argv`` and waits for ``health_path`` to answer 200; ``stop()`` ends it."""

    def __init__(self, name: str, argv: list[str], port: int, health_path: str = "/health",
                 env: dict[str, str] | None = None, start_timeout: float = 600.0) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.health_path = health_path
        self.env = env
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.server_id = uuid.uuid4().hex
        fd, path = tempfile.mkstemp(prefix=f"smallbench-{name}-", suffix=".log", dir=scratch_dir())
        os.close(fd)
        self.log_path = Path(path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = self.argv
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-c", _EXEC_DYING_WITH_PARENT, *argv]
        with open(self.log_path, "wb") as log:
            env = {**(self.env if self.env is not None else os.environ), MARKER: self.server_id}
            # its own process group, so that stop() can also end processes it is still spawning
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if (code := self.proc.poll()) is not None:
                self._fail(f"{self.name} server exited with code {code} while starting")
            if self.healthy():
                return
            if time.monotonic() > deadline:
                self._fail(f"{self.name} server not healthy after {self.start_timeout:g} s")
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.health_path, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def check_alive(self, doing: str, wait_s: float = 0.0) -> None:
        """Raise :class:`ServerError` (with the log's tail) if the server process has died, or dies
        within ``wait_s`` s: a killed server closes its sockets before its exit code can be read, so a
        request refused by a dying server needs that moment to be told from one refused by a live one."""
        if self.proc is None:
            return
        try:
            code = self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return
        self._fail(f"{self.name} server died (exit code {code}) {doing}")

    def _fail(self, what: str) -> None:
        self.stop()
        tail = self.log_tail()
        raise ServerError(f"{what}; log tail: {tail or '(nothing logged)'}")

    def log_tail(self, lines: int = 3, width: int = 400) -> str:
        """The last meaningful lines of the server's log, on one line."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        keep = [ln.strip() for ln in text if ln.strip() and not ln.lstrip().startswith(("Loading ", "Processed "))]
        return " | ".join(keep[-lines:])[-width:]

    def stop(self) -> None:
        """Stop the server and everything it spawned, orphans included."""
        if self.proc is None:
            return
        if self.proc.poll() is None:  # a live server gets SIGTERM first, to shut its own workers down
            with contextlib.suppress(psutil.Error):
                kill_all(psutil.Process(self.proc.pid), marked_processes(self.server_id))
            self.proc.wait()
        # What is left (workers of a server that died, or that it was spawning while it got SIGTERM) gets
        # SIGKILL with the whole process group at once, so no member can spawn another; then marked
        # processes that left the group, until none is left.
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for _ in range(5):
            late = marked_processes(self.server_id)
            if not late:
                break
            kill_all(None, late)

    def close(self, copy_log_to=None) -> None:
        """Stop the server, copy its log to ``copy_log_to`` (a text stream, e.g. the cell's log), delete it."""
        self.stop()
        if copy_log_to is not None:
            with contextlib.suppress(OSError):
                copy_log_to.write(self.log_path.read_text(errors="replace"))
        with contextlib.suppress(OSError):
            self.log_path.unlink()
