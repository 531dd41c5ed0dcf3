"""The small shared runtime that generated connectors import.

It never imports the generator (jinja2, black, yaml, click, ...). Submodules are imported
by the generated code directly, so importing one connector loads only what it uses.
"""

import sys as _sys

# httpx imports its command-line tool (click, pygments, rich) whenever those happen to be
# installed, which costs ~15 ms and drags a CLI framework into every connector. No
# connector needs httpx's CLI, so that import is turned into the ImportError httpx expects.
if "httpx" not in _sys.modules:
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
