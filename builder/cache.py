"""Where the builder keeps what it can compute again (formatted parts, parsed and converted
documents): ``$CONNECTOR_BUILDER_CACHE``, else ``$XDG_CACHE_HOME/connector-builder``
(``~/.cache/connector-builder``). Everything in it is keyed by content hash, so deleting it
only costs time."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("CONNECTOR_BUILDER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "connector-builder"
    )
    return Path(base)
