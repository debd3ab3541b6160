"""ManagedServer on a small real HTTP server (the standard library's), in seconds: the ways a server
dies, told apart, and nothing of it left running. vLLM's own server is exercised in test_vllm_backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from smallbench.server import ManagedServer, ServerError, _wait_gone, free_port, marked_processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups as on Linux")

# Serves 200 on every path; first starts a worker that ignores SIGTERM (as a busy engine process may).
_SERVER = """
import http.server, subprocess, sys
worker = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", worker])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


@pytest.fixture
def server():
    port = free_port()
    s = ManagedServer("toy", [sys.executable, "-c", _SERVER, str(port)], port, start_timeout=30)
    s.start()
    deadline = time.monotonic() + 10
    while len(marked_processes(s.server_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield s
    s.close()
    assert not marked_processes(s.server_id)


def test_a_killed_server_is_reported_dead_not_refusing(server):
    assert len(marked_processes(server.server_id)) == 2  # the server and its worker
    server.check_alive("now")  # alive: no error
    os.kill(server.proc.pid, signal.SIGKILL)
    # at once, the exit code may not be readable yet; wait_s covers that moment
    with pytest.raises(ServerError) as err:
        server.check_alive("during the run", wait_s=5)
    msg = str(err.value)
    assert msg == "toy server died (exit code -9) during the run; log tail: serving", msg
    assert not marked_processes(server.server_id)  # its worker, orphaned, was stopped too


def test_the_workers_of_a_dead_server_get_no_grace(server):
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    t = time.monotonic()
    server.stop()
    # a dead server cannot shut its worker down, and the worker ignores SIGTERM: waiting for either
    # would take kill_all's 10 s grace, once or twice
    assert time.monotonic() - t < 5
    assert not marked_processes(server.server_id)


def test_a_zombie_counts_as_gone():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    p = psutil.Process(proc.pid)
    deadline = time.monotonic() + 10
    while p.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:  # exited, not yet reaped
        time.sleep(0.05)
    assert p.status() == psutil.STATUS_ZOMBIE
    assert _wait_gone([p], timeout=0) == []
    proc.wait()
