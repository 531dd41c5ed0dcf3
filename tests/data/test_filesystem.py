"""The filesystem transport: glob selection, sorted lazy reads, formats, atomic writes and
names that try to leave the directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from builder.runtime.config import Setting, resolve_settings
from builder.runtime.errors import (
    ConfigError,
    ConnectorError,
    NotFoundError,
    ResponseValidationError,
    WriteError,
)
from builder.runtime.operation import Decoder
from builder.runtime.transports.filesystem import (
    TEMP_SUFFIX,
    FilesystemConnector,
    PathEscapeError,
)

REPO = Path(__file__).resolve().parents[2]

# What the generator emits for the kind's standard settings (builder/spec/kinds.py).
SETTINGS = (
    Setting("path", str, env="FILES_PATH"),
    Setting("pattern", str, default="*"),
    Setting("recursive", bool, default=False),
)


class Row(BaseModel):
    id: int
    name: str


def files(
    path: Path | str | None, fmt: str = "bytes", record: Any = None, **settings: Any
) -> FilesystemConnector:
    class Files(FilesystemConnector):
        _name = "local_files"
        _options: ClassVar[dict[str, Any]] = {"format": fmt}
        _record = Decoder(record) if record is not None else None

    given = {"path": None if path is None else str(path), **settings}
    return Files(resolve_settings(SETTINGS, given, connector="local_files"))


def tree(root: Path, entries: dict[str, bytes | str]) -> None:
    for name, content in entries.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        target.write_bytes(content)


# --------------------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------------------- #


def test_pattern_and_recursive_select_files_in_sorted_order(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "b.txt": "b",
            "a.txt": "a",
            "notes.md": "m",
            "sub/c.txt": "c",
            "sub/deep/d.txt": "dd",
            "sub/deep/e.md": "e",
        },
    )
    (tmp_path / "dir.txt").mkdir()  # a directory that matches is not a file

    flat = [r["name"] for r in files(tmp_path, pattern="*.txt").read()]
    assert flat == ["a.txt", "b.txt"]

    deep = list(files(tmp_path, pattern="*.txt", recursive=True).read())
    assert [r["name"] for r in deep] == ["a.txt", "b.txt", "sub/c.txt", "sub/deep/d.txt"]
    d = deep[-1]
    assert d["content"] == b"dd" and d["size"] == 2
    assert d["path"] == str(tmp_path / "sub" / "deep" / "d.txt")
    assert d["modified"].tzinfo is not None
    assert abs(d["modified"].timestamp() - (tmp_path / "sub/deep/d.txt").stat().st_mtime) < 1e-3

    everything = [r["name"] for r in files(tmp_path, recursive=True).read()]
    assert everything == sorted(everything) and "sub/deep/e.md" in everything


def test_order_does_not_depend_on_creation_order(tmp_path: Path) -> None:
    names = [f"f{n:03d}.txt" for n in (7, 3, 11, 0, 5, 42, 1)]
    for name in names:
        (tmp_path / name).write_text(name)
    first = [r["name"] for r in files(tmp_path).read()]
    assert first == sorted(names)
    assert [r["name"] for r in files(tmp_path).read()] == first


def test_read_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, {f"{n}.bin": bytes([n]) * 10 for n in range(5)})
    reads: list[str] = []
    original = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self.name)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    source = files(tmp_path)
    records = source.read()
    assert reads == []
    assert next(records)["name"] == "0.bin"
    assert reads == ["0.bin"]
    assert source.metrics.records_read == 1 and source.metrics.bytes_read == 10


def test_a_file_deleted_after_listing_is_skipped(tmp_path: Path) -> None:
    tree(tmp_path, {"a": "1", "b": "2", "c": "3"})
    records = files(tmp_path).read()
    assert next(records)["name"] == "a"
    (tmp_path / "b").unlink()
    assert [r["name"] for r in records] == ["c"]


def test_read_batch(tmp_path: Path) -> None:
    tree(tmp_path, {f"{n}.txt": str(n) for n in range(5)})
    source = files(tmp_path, "text")
    batches = list(source.read_batch(2))
    assert [[r["content"] for r in b] for b in batches] == [["0", "1"], ["2", "3"], ["4"]]
    assert source.metrics.batches == 3


def test_text_and_json_formats(tmp_path: Path) -> None:
    tree(tmp_path, {"a.txt": "héllo", "r.json": '{"id": 1, "name": "x"}'})
    assert [r["content"] for r in files(tmp_path, "text", pattern="*.txt").read()] == ["héllo"]
    (plain,) = files(tmp_path, "json", pattern="*.json").read()
    assert plain["content"] == {"id": 1, "name": "x"}
    (typed,) = files(tmp_path, "json", record=Row, pattern="*.json").read()
    assert typed["content"] == Row(id=1, name="x")


def test_jsonl_yields_one_record_per_line_across_files(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "b.jsonl": '{"id": 3, "name": "c"}\n',
            "a.jsonl": '{"id": 1, "name": "a"}\n\n{"id": 2, "name": "b"}\n',
        },
    )
    records = list(files(tmp_path, "jsonl", record=Row).read())
    assert [(r["name"], r["line"]) for r in records] == [
        ("a.jsonl", 1),
        ("a.jsonl", 3),
        ("b.jsonl", 1),
    ]
    assert [r["content"] for r in records] == [
        Row(id=1, name="a"),
        Row(id=2, name="b"),
        Row(id=3, name="c"),
    ]


def test_bad_content_is_reported_with_where(tmp_path: Path) -> None:
    tree(tmp_path, {"a.jsonl": '{"id": 1}\n{"id": oops}\n'})
    records = files(tmp_path, "jsonl").read()
    assert next(records)["content"] == {"id": 1}
    with pytest.raises(ResponseValidationError, match=r"a\.jsonl:2: not valid json"):
        next(records)
    tree(tmp_path, {"bad.txt": b"\xff\xfe"})
    with pytest.raises(ResponseValidationError, match="bad.txt"):
        list(files(tmp_path, "text", pattern="*.txt").read())
    tree(tmp_path, {"row.json": '{"id": "not a number", "name": "x"}'})
    with pytest.raises(ResponseValidationError, match="row.json"):
        list(files(tmp_path, "json", record=Row, pattern="*.json").read())


def test_missing_directory_and_missing_setting(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not a directory"):
        list(files(tmp_path / "nope").read())
    with pytest.raises(ConfigError, match="path"):
        list(files(None).read())


def test_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, {"x.txt": "x"})
    monkeypatch.setenv("FILES_PATH", str(tmp_path))
    assert [r["name"] for r in files(None).read()] == ["x.txt"]


def test_closed_connector_refuses(tmp_path: Path) -> None:
    with files(tmp_path) as source:
        assert list(source.read()) == []
    with pytest.raises(ConnectorError, match="closed"):
        list(source.read())


# --------------------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------------------- #


def test_write_round_trips_each_format(tmp_path: Path) -> None:
    sink = files(tmp_path / "bytes")
    assert (
        sink.write(
            [{"name": "a.bin", "content": b"\x00\x01"}, {"name": "d/e/f.bin", "content": "é"}]
        )
        == 2
    )
    assert (tmp_path / "bytes/a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "bytes/d/e/f.bin").read_text("utf-8") == "é"
    assert sink.metrics.records_written == 2 and sink.metrics.bytes_written == 4

    files(tmp_path / "text", "text").write([{"name": "t.txt", "content": "line\n"}])
    assert (tmp_path / "text/t.txt").read_text() == "line\n"

    rows = [Row(id=1, name="a"), Row(id=2, name="ü")]
    files(tmp_path / "json", "json").write(
        [{"name": "r.json", "content": rows[0]}, {"name": "p.json", "content": {"k": [1, 2]}}]
    )
    assert json.loads((tmp_path / "json/r.json").read_text()) == {"id": 1, "name": "a"}
    assert [r["content"] for r in files(tmp_path / "json", "json", record=None).read()] == [
        {"k": [1, 2]},
        {"id": 1, "name": "a"},
    ]

    files(tmp_path / "jsonl", "jsonl").write([{"name": "rows.jsonl", "content": rows}])
    back = [r["content"] for r in files(tmp_path / "jsonl", "jsonl", record=Row).read()]
    assert back == rows


def test_write_replaces_and_keeps_permissions(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    target.chmod(0o640)
    files(tmp_path).write([{"name": "f.txt", "content": "new"}])
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    files(tmp_path).write([{"name": "fresh.txt", "content": "x"}])
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "fresh.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_write_error_names_exactly_the_unwritten_files(tmp_path: Path) -> None:
    records = [
        {"name": "ok1.txt", "content": "1"},
        {"name": "bad.txt", "content": 12345},  # not bytes or str
        {"name": "ok2.txt", "content": "2"},
    ]
    sink = files(tmp_path)
    with pytest.raises(WriteError) as caught:
        sink.write(records)
    error = caught.value
    assert error.written == 1
    assert error.failed == records[1:]
    assert "'bad.txt'" in str(error) and "'ok2.txt'" in str(error) and "ok1" not in str(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok1.txt"]
    assert sink.metrics.errors == 1
    # A retry of what failed (fixed) writes each file once.
    fixed = [{"name": "bad.txt", "content": "b"}, records[2]]
    assert sink.write(fixed) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "ok1.txt", "ok2.txt"]


def test_single_record_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="iterable of records"):
        files(tmp_path).write({"name": "a", "content": "x"})


@pytest.mark.parametrize(
    "name",
    [
        "../outside.txt",
        "a/../../outside.txt",
        "/etc/passwd",
        str(Path("/tmp/abs.txt")),
        "",
        "a\x00b",
    ],
)
def test_names_that_escape_are_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(WriteError) as caught:
        files(root).write([{"name": name, "content": "x"}])
    assert isinstance(caught.value.__cause__, PathEscapeError)
    assert caught.value.written == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert list(root.iterdir()) == []


def test_symlinks_pointing_outside_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "victim.txt").write_text("precious")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    (root / "linked-file.txt").symlink_to(outside / "victim.txt")
    (root / "inner").mkdir()
    (root / "inner-link").symlink_to(root / "inner", target_is_directory=True)
    sink = files(root)
    for name in ("linked-dir/new.txt", "linked-dir/victim.txt", "linked-file.txt"):
        with pytest.raises(WriteError, match="outside") as caught:
            sink.write([{"name": name, "content": "pwned"}])
        assert isinstance(caught.value.__cause__, PathEscapeError)
    assert (outside / "victim.txt").read_text() == "precious"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    # A link that stays inside the directory is fine.
    assert sink.write([{"name": "inner-link/ok.txt", "content": "ok"}]) == 1
    assert (root / "inner" / "ok.txt").read_text() == "ok"


def test_failed_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(WriteError, match="No space left"):
        files(tmp_path).write([{"name": "f.txt", "content": "new" * 1000}])
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.timeout(60)
def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    size = 2 * 1024 * 1024
    versions = [bytes([n]) * size for n in range(1, 4)]
    target = tmp_path / "big.bin"
    target.write_bytes(versions[0])
    seen: set[bytes] = set()
    bad: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            if len(data) != size or data.count(data[:1]) != size:
                bad.append(f"partial or mixed read of {len(data)} bytes")
                return
            seen.add(data[:1])

    thread = threading.Thread(target=reader)
    thread.start()
    sink = files(tmp_path)
    try:
        for round_ in range(15):
            sink.write([{"name": "big.bin", "content": versions[round_ % 3]}])
    finally:
        stop.set()
        thread.join(10)
    assert bad == []
    assert len(seen) >= 2  # the reader did overlap the writes


@pytest.mark.timeout(60)
def test_a_crash_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old content")
    child = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tests.data.test_filesystem import files

        def stalled_fsync(fd):
            print("writing", flush=True)
            time.sleep(60)  # killed here: new data is in the temp file, not yet renamed

        os.fsync = stalled_fsync
        files({str(tmp_path)!r}).write([{{"name": "f.txt", "content": "new " * 100000}}])
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, cwd=REPO, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert target.read_text() == "old content"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "f.txt"]
    assert len(leftovers) == 1 and leftovers[0].endswith(TEMP_SUFFIX)
    # The leftover is never read as data, and the next write succeeds.
    assert [r["name"] for r in files(tmp_path).read()] == ["f.txt"]
    files(tmp_path).write([{"name": "f.txt", "content": "after"}])
    assert target.read_text() == "after"


def test_jsonl_content_must_be_a_list(tmp_path: Path) -> None:
    with pytest.raises(WriteError, match="list of records"):
        files(tmp_path, "jsonl").write([{"name": "x.jsonl", "content": {"id": 1}}])


def test_import_does_not_load_the_generator() -> None:
    code = (
        "import sys; import builder.runtime.transports.filesystem; "
        "print([m for m in ('jinja2', 'yaml', 'click', 'black') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
