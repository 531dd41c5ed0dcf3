"""Doing two pieces of work at once: one here, one in a forked child that sends its result
back (pickled, through a pipe).

``connector-builder diff`` loads two versions of a spec; for a large OpenAPI document each
takes a few hundred milliseconds (conversion, validation of the spec models, checks, the
IR), and they do not depend on each other. A forked child starts with every module this
process has imported, so it begins work at once.

Anything unusual makes it fall back to doing the work here, in order: no ``fork`` (Windows),
no idle CPU (one CPU, or the others busy), ``CONNECTOR_BUILDER_NO_FORK`` set, other threads
running, a child that fails, crashes or sends nothing back. A bug in the child's half
therefore surfaces exactly as it would without a child (raised here, by the same code).
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from builder.gc_pause import collection_paused

T = TypeVar("T")
U = TypeVar("U")

_CHUNK = 1 << 20


def available() -> bool:
    """Whether work can go to a second process that runs at the same time: ``fork``, no
    other thread (a forked child of a threaded process may deadlock on a lock another
    thread held), and a CPU with nothing to do. On a machine whose other CPUs are busy
    the two halves would take turns on one, and the child's pickling is pure cost: the
    work is then done here, one half after the other."""
    if not hasattr(os, "fork") or sys.platform in ("win32", "emscripten", "wasi"):
        return False
    if os.environ.get("CONNECTOR_BUILDER_NO_FORK"):  # as for builder.forked
        return False
    if threading.active_count() > 1:
        return False
    return idle_cpus() >= 1


def idle_cpus() -> int:
    """The CPUs (of those this process may use) running nothing besides this process:
    Linux counts the threads running at a given moment (/proc/loadavg). Two moments are
    looked at, now and when this module was imported (when the command started, a few
    hundred milliseconds ago), and the calmer one counts: a CPU busy at both is most
    likely busy for a while. Elsewhere every other CPU is taken to be idle."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    samples = [_running()]
    if time.monotonic() - _STARTED[0] < 5:
        samples.append(_STARTED[1])
    known = [n for n in samples if n is not None]
    running = min(known) if known else 1  # this process included
    return max(0, cpus - max(running, 1))


def _running() -> int | None:
    """How many threads of the whole system are running at this moment (Linux)."""
    try:
        with open("/proc/loadavg", encoding="ascii") as stats:
            return int(stats.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


_STARTED = (time.monotonic(), _running())


def run_both(here: Callable[[], T], there: Callable[[], U]) -> tuple[T, U]:
    """``(here(), there())``, with ``there`` run in a forked child while this process runs
    ``here``; both in this process, one after the other, when no child can be had."""
    if not available():
        return here(), there()
    read_fd, write_fd = os.pipe()
    _widen(write_fd)
    try:
        sys.stdout.flush()  # a child must not inherit (and never writes) buffered output
        sys.stderr.flush()
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return here(), there()
    if pid == 0:  # the child: never returns
        _child(there, read_fd, write_fd)
    os.close(write_fd)
    received, finished = False, False
    try:
        with os.fdopen(read_fd, "rb", buffering=_CHUNK) as pipe:
            mine = here()
            # The child writes its result as it pickles it, and this process unpickles it
            # as it comes: the two overlap (the pipe holds what is written ahead).
            with collection_paused():
                try:
                    theirs: U = pickle.load(pipe)
                    received = True
                except Exception:  # a child that failed sends nothing, or half a pickle
                    pass
    finally:
        # Reaped whatever happens; killed first if this process is giving up on it.
        finished = _reap(pid, kill=not received)
    if not (received and finished):
        return mine, there()  # do the child's part here: a bug raises here, as it would
    return mine, theirs


def _child(there: Callable[[], object], read_fd: int, write_fd: int) -> None:
    status = 1
    try:
        os.close(read_fd)
        with collection_paused():  # pickling a large result makes many small dicts
            result = there()
            with os.fdopen(write_fd, "wb", buffering=_CHUNK) as pipe:
                pickle.dump(result, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        status = 0
    except BaseException:
        pass  # the parent does the work again, and so reports what went wrong
    finally:
        os._exit(status)  # no atexit handlers, no buffers flushed twice, no pytest teardown


def _reap(pid: int, *, kill: bool = False) -> bool:
    """Wait for the child; True when it exited with status 0."""
    if kill:
        import signal

        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return False
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _widen(fd: int) -> None:
    """Let the pipe hold more than 64 KiB ahead of its reader (Linux; best effort)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _CHUNK)
    except (ImportError, OSError):
        pass


__all__ = ["available", "idle_cpus", "run_both"]
