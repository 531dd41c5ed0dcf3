"""``write_tree`` swaps a whole directory: readers and crashes see the old tree or the new one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builder import atomic
from builder.atomic import recover, write_tree

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]

# Shared by this module and the child process of the kill test.
MAKE_TREES = '''
def make_tree(tag, count=200, size=50_000):
    """count files of about size bytes; the two trees also differ in which files exist."""
    files = {}
    for i in range(count):
        line = f"{tag} file {i:03d} " + "x" * 40 + "\\n"
        files[f"part{i % 4}/f{i:03d}.txt"] = (line * (size // len(line) + 1))[:size]
    files[f"only_{tag}.txt"] = f"only in {tag}\\n"
    files[f"{tag}_dir/deep/leaf.bin"] = bytes(range(256)) * 4
    return files
'''
namespace: dict[str, Any] = {}
exec(MAKE_TREES, namespace)
make_tree: Callable[[str], dict[str, str | bytes]] = namespace["make_tree"]


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def as_bytes(files: dict[str, str | bytes]) -> dict[str, bytes]:
    return {k: v.encode("utf-8") if isinstance(v, str) else v for k, v in files.items()}


def siblings(target: Path) -> list[str]:
    prefixes = (f".{target.name}.new-", f".{target.name}.old-")
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(prefixes))


@pytest.fixture(params=["exchange", "two-renames"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "exchange" and atomic._renameat2 is None:
        pytest.skip("renameat2 is not available here")
    if request.param == "two-renames":
        monkeypatch.setattr(atomic, "_renameat2", None)
    return str(request.param)


def test_write_tree_creates_a_new_directory(tmp_path: Path, mode: str) -> None:
    target = tmp_path / "out" / "pkg"
    files = {"a.txt": "alpha\n", "sub/b.bin": b"\x00\x01", "sub/deeper/c.txt": "gamma"}
    write_tree(target, files)
    assert read_tree(target) == as_bytes(files)
    assert siblings(target) == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["pkg"]


def test_write_tree_replaces_the_directory_completely(tmp_path: Path, mode: str) -> None:
    target = tmp_path / "pkg"
    write_tree(target, {"keep.txt": "old", "gone.txt": "bye", "olddir/x.txt": "x"})
    (target / "stray.txt").write_text("not in any tree")
    write_tree(target, {"keep.txt": "new", "newdir/y.txt": "y"})
    assert read_tree(target) == {"keep.txt": b"new", "newdir/y.txt": b"y"}
    assert not (target / "gone.txt").exists()
    assert not (target / "olddir").exists()
    assert not (target / "stray.txt").exists()
    assert siblings(target) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_write_tree_leaves_other_siblings_alone(tmp_path: Path, mode: str) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "f").write_text("mine")
    (tmp_path / ".pkg2.old-keep").mkdir()  # belongs to another target
    write_tree(tmp_path / "pkg", {"a": "1"})
    write_tree(tmp_path / "pkg", {"b": "2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pkg2.old-keep", "other", "pkg"]
    assert (tmp_path / "other" / "f").read_text() == "mine"


def test_recover_restores_old_tree_after_crash_between_renames(tmp_path: Path) -> None:
    target = tmp_path / "pkg"
    old = {"a.txt": "old a", "sub/b.txt": "old b"}
    write_tree(target, old)
    # The crash: the target was moved aside, the new tree staged but not yet moved in.
    target.rename(tmp_path / ".pkg.old-k3j2h1")
    staged = tmp_path / ".pkg.new-x8y7z6"
    staged.mkdir()
    (staged / "a.txt").write_text("new a, half writ")
    assert not target.exists()

    recover(target)
    assert read_tree(target) == as_bytes(old)
    assert siblings(target) == []


def test_recover_deletes_stale_new_and_old_dirs_when_target_exists(tmp_path: Path) -> None:
    target = tmp_path / "pkg"
    write_tree(target, {"a.txt": "current"})
    for name in (".pkg.new-aaa", ".pkg.new-bbb", ".pkg.old-ccc"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "f.txt").write_text(name)
    recover(target)
    assert read_tree(target) == {"a.txt": b"current"}
    assert siblings(target) == []


def test_recover_deletes_stale_new_dir_when_nothing_was_there(tmp_path: Path) -> None:
    target = tmp_path / "pkg"
    (tmp_path / ".pkg.new-aaa").mkdir()
    (tmp_path / ".pkg.new-aaa" / "f").write_text("partial")
    recover(target)
    assert not target.exists()
    assert siblings(target) == []


def test_recover_without_parent_is_a_no_op(tmp_path: Path) -> None:
    recover(tmp_path / "missing" / "pkg")
    assert not (tmp_path / "missing").exists()


def test_write_tree_recovers_before_writing(tmp_path: Path) -> None:
    target = tmp_path / "pkg"
    write_tree(target, {"a.txt": "old"})
    target.rename(tmp_path / ".pkg.old-zzz")
    write_tree(target, {"a.txt": "new"})
    assert read_tree(target) == {"a.txt": b"new"}
    assert siblings(target) == []


# -- kill test ----------------------------------------------------------------------------

CHILD = (
    MAKE_TREES
    + """
import sys
from pathlib import Path
from builder import atomic
target, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "two-renames":
    atomic._renameat2 = None
files = make_tree("new")
print("ready", flush=True)
atomic.write_tree(target, files)
print("done", flush=True)
"""
)
KILLS = 20


def test_sigkill_during_write_tree_leaves_old_or_new_tree(tmp_path: Path) -> None:
    old, new = as_bytes(make_tree("old")), as_bytes(make_tree("new"))
    assert sum(len(v) for v in new.values()) > 200 * 50_000
    target = tmp_path / "out" / "pkg"
    rng = random.Random(20240611)
    modes = ["exchange" if atomic._renameat2 is not None else "two-renames", "two-renames"]
    outcomes: dict[str, int] = {"old": 0, "new": 0}
    for attempt in range(KILLS):
        if not target.exists() or read_tree(target) != old:
            write_tree(target, make_tree("old"))
        mode = modes[attempt % 2]
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(target), mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", (
                child.stderr.read() if child.stderr else ""
            )
            time.sleep(rng.uniform(0.0, 0.25))
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=30)
            if child.stdout:
                child.stdout.close()
            if child.stderr:
                child.stderr.close()

        recover(target)
        state = read_tree(target)
        if state == old:
            outcomes["old"] += 1
        elif state == new:
            outcomes["new"] += 1
        else:
            missing_old = sorted(set(old) - set(state))[:3]
            extra = sorted(set(state) - set(old) - set(new))[:3]
            changed = sorted(k for k in state if k in old and state[k] not in (old[k], new.get(k)))[
                :3
            ]
            pytest.fail(
                f"kill {attempt} ({mode}) left a mix: {len(state)} files, "
                f"missing {missing_old}, extra {extra}, torn {changed}"
            )
        assert siblings(target) == [], f"kill {attempt} ({mode}) left {siblings(target)}"
        assert sorted(os.listdir(target.parent)) == ["pkg"]
    assert outcomes["old"] + outcomes["new"] == KILLS
