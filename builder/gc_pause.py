"""Pausing the cyclic garbage collector around work that allocates much and frees little."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collection_paused(*, freeze_above: int | None = None) -> Iterator[None]:
    """Pause the cyclic garbage collector while specs are loaded or compared. Both make
    many objects, and every automatic full collection they trigger walks everything
    loaded so far (hundreds of thousands of objects for a large OpenAPI document) to free
    nothing: a third of the CPU time of comparing two versions of Stripe's API, a quarter
    of loading them. What is left behind is collected as usual afterwards. Nests.

    ``freeze_above``: for a command about to end. When more than that many objects were
    made while paused and are still alive, they are frozen (:func:`gc.freeze`) rather than
    left for the next collection (and the one at exit) to walk: they live until the
    process ends, or are its garbage, which the exit reclaims anyway."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if freeze_above is not None and gc.get_count()[0] > freeze_above:
                gc.freeze()
            gc.enable()
