from __future__ import annotations

import contextlib
import importlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# No hub at test time: every model and data set is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require(module: str, extra: str):
    """Import a backend's library. Missing in CI is a failure (every backend that runs on the CPU
    machine is tested for real there); missing on a developer's machine skips with the reason."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} not installed (pip install -e '.[{extra}]')")


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    from smallbench import tiny_model

    return tiny_model.model_dir()


@pytest.fixture(scope="session")
def tf_backend(tiny_path):
    import smallbench

    with smallbench.open_backend("tiny-llama", "transformers", device="cpu") as m:
        yield m.backend


def config_of(backend) -> str:
    """A loaded backend's engine config as the leaderboard labels it, once the flags its class declares in
    ``config_flags`` are found among what it describes (a renamed flag would otherwise pass unseen)."""
    from smallbench.backends import config_label
    from smallbench.hardware import hardware_info

    info = backend.describe()
    assert set(type(backend).config_flags) <= set(info.flags), "config_flags names a flag describe() lacks"
    return config_label(info, hardware_info().cpu_cores_physical)  # the cores a record's hardware carries


def run_cli(*args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "smallbench.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    """Poll ``url`` until it answers (True), or until ``proc`` has ended or ``timeout`` seconds have passed."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return True
        except OSError:
            time.sleep(0.25)
    return False


@contextlib.contextmanager
def serve_app(args: list[str], cwd: Path, timeout: float = 120):
    """Run ``python leaderboard_app.py ARGS`` (or another script) in ``cwd`` on a free 127.0.0.1 port until it
    answers; yields its base URL and stops it after."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = cwd / f"app-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            if not wait_until_up(url, proc, timeout):
                pytest.fail("the app did not start: " + log.read_text()[-2000:])
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


@contextlib.contextmanager
def spinner(ours: bool = False, seconds: float = 600):
    """A real process keeping one CPU busy: outside this process tree (``ours=False``: started through a shell that
    exits at once, so that it belongs to init, as another user's work would) or a child of this process."""
    code = f"import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass"
    if ours:
        proc = subprocess.Popen([sys.executable, "-c", code])
        pid = proc.pid
    else:
        out = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{code}" >/dev/null 2>&1 & echo $!'],
                             capture_output=True, text=True, check=True)
        pid = int(out.stdout)
    try:
        time.sleep(0.2)
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        if ours:
            proc.wait()
