"""Shared helpers for the data-connector tests (real servers on this machine)."""

from __future__ import annotations

import os
import socket

import pytest

__all__ = ["free_port", "in_ci", "require_server", "server_reachable"]


def in_ci() -> bool:
    """True under CI=true: a missing server is then a failure, never a skip."""
    return os.environ.get("CI", "").lower() == "true"


def server_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_server(host: str, port: int, what: str) -> None:
    """Skip the calling test (or fail it under CI=true) when ``what`` is not listening."""
    if server_reachable(host, port):
        return
    reason = f"{what} is not reachable at {host}:{port}"
    if in_ci():
        pytest.fail(reason + " (CI=true: integration tests must not skip)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
