"""Run a test's step in a child made by ``fork``, as the sinks' fork tests do."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable


def in_forked_child(step: Callable[[], None]) -> int:
    """Fork, run ``step`` in the child and leave it at once (no exit handlers, no test
    teardown); the parent waits and checks that it succeeded. Returns the child's pid."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with a thread running
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            step()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child failed"
    return pid
