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
import threading  # noqa: F401 - (tests stand in for its active_count)
import time
from collections.abc import Callable
from typing import TypeVar

from builder.forked import Pending, can_fork

T = TypeVar("T")
U = TypeVar("U")


def available() -> bool:
    """Whether work can go to a second process that runs at the same time: a fork is safe
    here (:func:`builder.forked.can_fork`), and a CPU has nothing to do. On a machine whose
    other CPUs are busy the two halves would take turns on one, and the child's pickling is
    pure cost: the work is then done here, one half after the other."""
    return can_fork() and idle_cpus() >= 1


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
    pending = Pending(there, fork=True)  # available() has decided
    try:
        mine = here()
    except BaseException:
        pending.cancel()  # this process is giving up: the child's half is not wanted
        raise
    return mine, pending.result()


__all__ = ["available", "idle_cpus", "run_both"]
