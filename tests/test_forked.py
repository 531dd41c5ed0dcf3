"""Work in a forked child: the same result as in this process, whatever happens to the child."""

from __future__ import annotations

import os
import time

import pytest

from builder import forked
from builder.forked import Pending

pytestmark = pytest.mark.timeout(30)


def _pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value * 2


@pytest.fixture
def no_other_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """(earlier tests of a session may leave threads behind)"""
    monkeypatch.setattr(forked.threading, "active_count", lambda: 1)


def test_the_work_runs_in_a_child_and_its_result_comes_back(no_other_threads: None) -> None:
    pid, value = Pending(_pid_and, 21).result()
    assert value == 42 and pid != os.getpid()


def test_without_fork_the_work_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_BUILDER_NO_FORK", "1")
    assert Pending(_pid_and, 21).result() == (os.getpid(), 42)


def test_a_child_that_fails_is_replaced_by_doing_the_work_here() -> None:
    parent = os.getpid()

    def only_here() -> int:
        if os.getpid() != parent:
            raise RuntimeError("the child cannot")
        return 7

    assert Pending(only_here).result() == 7


def test_work_never_asked_for_is_stopped(no_other_threads: None) -> None:
    pending = Pending(time.sleep, 60)
    child = pending._child
    assert child is not None
    started = time.monotonic()
    del pending
    assert time.monotonic() - started < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(child[0], os.WNOHANG)  # reaped already


def test_a_process_with_other_threads_does_the_work_itself() -> None:
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert Pending(_pid_and, 1).result() == (os.getpid(), 2)
    finally:
        stop.set()
        other.join()
