"""Work done in a forked child process beside the caller's own, its result read back later.

Generating a large document keeps one core busy; validation and the rendering of a big
module are independent of the rest, so they run in a child forked on the spot (it has the
parsed document and the IR already: nothing is sent to it). Where fork is not available,
or ``CONNECTOR_BUILDER_NO_FORK`` is set, or other threads run (a forked child could
deadlock on a lock one of them holds), or the child fails, the work is done in this
process when its result is asked for: the result never depends on how it was computed.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Pending(Generic[T]):
    """``fn(*args)``, computed in a child process from now on; :meth:`result` waits."""

    def __init__(self, fn: Callable[..., T], *args: object) -> None:
        self._fn = fn
        self._args = args
        self._child: tuple[int, int] | None = _fork(fn, args)

    def result(self) -> T:
        child, self._child = self._child, None
        if child is not None:
            pid, read = child
            with os.fdopen(read, "rb") as answer:
                data = answer.read()
            os.waitpid(pid, 0)
            try:
                ok, value = pickle.loads(data)
            except Exception:  # the child died before answering
                ok, value = False, None
            if ok:
                return value  # type: ignore[no-any-return]
        return self._fn(*self._args)  # no child, or it failed: do the work here

    def __del__(self) -> None:
        if self._child is not None:  # never asked for: stop it, and leave no zombie behind
            pid, read = self._child
            os.close(read)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _fork(fn: Callable[..., object], args: tuple[object, ...]) -> tuple[int, int] | None:
    if not hasattr(os, "fork") or os.environ.get("CONNECTOR_BUILDER_NO_FORK"):
        return None
    if threading.active_count() > 1:  # a child of a threaded process may deadlock on a
        return None  # lock another thread held (the import lock, a logging handler's)
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:  # the child: compute, answer, and leave without running anything else
        try:
            os.close(read)
            try:
                answer = pickle.dumps((True, fn(*args)))
            except BaseException:
                answer = pickle.dumps((False, None))
            with os.fdopen(write, "wb") as out:
                out.write(answer)
        finally:
            os._exit(0)
    os.close(write)
    return pid, read
