"""Run an ASGI app (by default the fake services) with uvicorn in a subprocess.

Usable from pytest fixtures and from plain benchmark scripts alike (this module
deliberately does not import pytest)::

    from tests.servers.runner import run_server

    with run_server() as base_url:
        httpx.get(f"{base_url}/v1/models")

Running the server in a separate process keeps its CPU use out of the
client-side measurements of benchmarks.

``python -m tests.servers.runner`` starts the fake services and prints the
base URL until interrupted.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

#: Repository root (``tests/servers/runner.py`` -> ``<root>``).
REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_APP = "tests.servers.fake_services:app"


def _free_port(host: str) -> int:
    """Ask the OS for a currently unused TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """terminate -> wait 5 s -> kill."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def run_server(
    app_path: str = DEFAULT_APP,
    host: str = "127.0.0.1",
    *,
    startup_timeout: float = 15.0,
    ready_path: str = "/v1/models",
) -> Iterator[str]:
    """Start ``app_path`` under uvicorn in a subprocess and yield its base URL.

    The yielded value looks like ``"http://127.0.0.1:54321"`` (no trailing
    slash). Readiness is established by polling ``GET ready_path`` until it
    answers (any status) or ``startup_timeout`` seconds pass; on failure a
    ``RuntimeError`` carrying the server's stderr is raised. The process is
    terminated (then killed if needed) when the block exits.
    """
    port = _free_port(host)
    base_url = f"http://{host}:{port}"

    env = os.environ.copy()
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + existing if existing else "")
    env.setdefault("PYTHONUNBUFFERED", "1")

    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        app_path,
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]

    # stderr goes to a temp file rather than a pipe: a pipe nobody drains can
    # fill up and block a chatty server.
    fd, stderr_path = tempfile.mkstemp(prefix="fake-server-", suffix=".stderr")
    try:
        with os.fdopen(fd, "wb") as stderr_file:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
            )
        try:
            _wait_ready(proc, base_url + ready_path, startup_timeout, stderr_path, cmd)
            yield base_url
        finally:
            _stop(proc)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(stderr_path)


def _wait_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    stderr_path: str,
    cmd: list[str],
) -> None:
    """Poll ``url`` until the server answers; raise RuntimeError otherwise."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            code = proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"server exited early with code {code}: {' '.join(cmd)}\n"
                    f"--- stderr ---\n{_read(stderr_path)}"
                )
            try:
                client.get(url)
                return
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                _stop(proc)
                raise RuntimeError(
                    f"server did not come up within {timeout:.0f}s at {url}: {' '.join(cmd)}\n"
                    f"--- stderr ---\n{_read(stderr_path)}"
                )
            time.sleep(0.05)


if __name__ == "__main__":
    with run_server() as url:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
