"""Work done in a forked child process beside the caller's own, its result read back later.

Generating a large document keeps one core busy; validation and the rendering of a big
module are independent of the rest, so they run in a child forked on the spot (it has the
parsed document and the IR already: nothing is sent to it); the diff loads one side of a
comparison so. Where fork is not available, or ``CONNECTOR_BUILDER_NO_FORK`` is set, or
other threads run (a forked child could deadlock on a lock one of them holds), or the child
fails in any way, the work is done in this process when its result is asked for: the
result never depends on how it was computed, and a bug raises here as it would have.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from builder.gc_pause import collection_paused

T = TypeVar("T")

_CHUNK = 1 << 20  # pipe and buffer size: a large result streams while it is pickled


def can_fork() -> bool:
    """Whether a child can be forked safely here (see the module's docstring)."""
    if not hasattr(os, "fork") or sys.platform in ("win32", "emscripten", "wasi"):
        return False
    if os.environ.get("CONNECTOR_BUILDER_NO_FORK"):
        return False
    return threading.active_count() <= 1


class Pending(Generic[T]):
    """``fn(*args)``, computed in a child process from now on; :meth:`result` waits.

    ``fork``: whether to fork, when the caller has decided already (default:
    :func:`can_fork`). Work never asked for is stopped when this object goes (or by
    :meth:`cancel`)."""

    def __init__(self, fn: Callable[..., T], *args: object, fork: bool | None = None) -> None:
        self._fn = fn
        self._args = args
        forking = can_fork() if fork is None else fork
        self._child: tuple[int, int] | None = _fork(fn, args) if forking else None

    def result(self) -> T:
        child, self._child = self._child, None
        if child is not None:
            pid, read = child
            received = False
            try:
                # The child writes its result as it pickles it, and this process unpickles
                # it as it comes: the two overlap (the pipe holds what is written ahead).
                with os.fdopen(read, "rb", buffering=_CHUNK) as pipe, collection_paused():
                    value: T = pickle.load(pipe)
                    received = True
            except Exception:  # the child failed: nothing came, or half a pickle
                pass
            if _reap(pid, kill=not received) and received:
                return value
        return self._fn(*self._args)  # no child, or it failed: do the work here

    def cancel(self) -> None:
        """Stop the work if it is still running; its result is not wanted."""
        child, self._child = self._child, None
        if child is not None:
            pid, read = child
            os.close(read)
            _reap(pid, kill=True)

    def __del__(self) -> None:
        self.cancel()  # never asked for: stop it, and leave no zombie behind


def _fork(fn: Callable[..., object], args: tuple[object, ...]) -> tuple[int, int] | None:
    read, write = os.pipe()
    _widen(write)
    try:
        sys.stdout.flush()  # a child must not inherit (and never writes) buffered output
        sys.stderr.flush()
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:  # the child: compute, answer, and leave without running anything else
        status = 1
        try:
            os.close(read)
            with collection_paused():  # pickling a large result makes many small objects
                value = fn(*args)
                with os.fdopen(write, "wb", buffering=_CHUNK) as pipe:
                    pickle.dump(value, pipe, protocol=pickle.HIGHEST_PROTOCOL)
            status = 0
        except BaseException:
            pass  # the parent does the work again, and so reports what went wrong
        finally:
            os._exit(status)  # no atexit handlers, no buffers flushed twice
    os.close(write)
    return pid, read


def _reap(pid: int, *, kill: bool) -> bool:
    """Wait for the child (killed first with ``kill``); True when it exited with status 0."""
    if kill:
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
