"""Write a whole directory so that readers see the old one or the new one, never a mix.

The new tree is written into a temporary sibling, fsynced, then swapped in. On Linux the
swap is one ``renameat2(RENAME_EXCHANGE)`` call; elsewhere two renames, and a leftover
``.old`` directory from a crash between them is put back by :func:`recover`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _libc_renameat2() -> object | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.renameat2
    except (OSError, AttributeError):
        return None


_renameat2 = _libc_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False when the platform cannot."""
    if _renameat2 is None:
        return False
    result = _renameat2(  # type: ignore[operator]
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE
    )
    return bool(result == 0)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover(target: Path) -> None:
    """Undo what a crash mid-swap or mid-write left next to ``target``."""
    parent = target.parent
    if not parent.is_dir():
        return
    prefix_old, prefix_new = f".{target.name}.old-", f".{target.name}.new-"
    for entry in parent.iterdir():
        if entry.name.startswith(prefix_old):
            if not target.exists():
                entry.rename(target)  # the crash came between the two renames
            else:
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(prefix_new):
            shutil.rmtree(entry, ignore_errors=True)


def write_tree(target: Path, files: Mapping[str, str | bytes]) -> None:
    """Replace the directory ``target`` by exactly ``files`` (relative path -> content)."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=parent))
    try:
        for relative, content in sorted(files.items()):
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode("utf-8") if isinstance(content, str) else content
            with open(path, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for directory in sorted({(staging / r).parent for r in files}, reverse=True):
            _fsync_dir(directory)
        os.chmod(staging, 0o755)
        if target.exists() and _exchange(staging, target):
            _fsync_dir(parent)
            shutil.rmtree(staging)  # now holds the old tree
            return
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            old.rmdir()
            target.rename(old)
            staging.rename(target)
            _fsync_dir(parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
            _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
