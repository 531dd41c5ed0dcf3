"""Local files as a Source and a Sink: a directory, a glob pattern, optionally recursive.

``read()`` yields one record per file — ``{name, path, content, size, modified}``, ``name``
relative to the ``path`` setting with ``/`` separators — in sorted order of ``name``, so
two runs over the same tree yield the same sequence. Contents are read lazily, one file
at a time. The ``format`` option says what ``content`` is: ``bytes``, ``text`` (UTF-8),
``json`` (one document per file, typed by the spec's record model) or ``jsonl`` (one
record per line: ``read()`` then yields one record per line, across files, with its
``line`` number).

``write()`` replaces each file atomically: the content goes to a temporary file in the same
directory, is flushed to disk, and is renamed over the target, so a reader sees the old
file or the new one, never half of one, and a crash mid-write leaves the old file intact.
Names that would land outside ``path`` (absolute, ``..``, through a symlink) are refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from builder.runtime.errors import (
    ConfigError,
    ConnectorError,
    NotFoundError,
    ResponseValidationError,
    WriteError,
)
from builder.runtime.transports.base import DataConnector, records_of

__all__ = ["FilesystemConnector", "PathEscapeError"]

# Temporary files of an unfinished write end with this; read() never yields them.
TEMP_SUFFIX = ".partial"
_NAMED_IN_MESSAGE = 5
_FORMATS = ("bytes", "text", "json", "jsonl")


class PathEscapeError(ConnectorError, ValueError):
    """A file name would be written outside the connector's directory."""


class FilesystemConnector(DataConnector):
    """Files under one directory, selected by a glob pattern."""

    _name = "filesystem"
    _options: ClassVar[Mapping[str, Any]] = {"format": "bytes"}

    # -- settings ------------------------------------------------------------------------

    def _root(self) -> Path:
        if self._closed:
            raise ConnectorError("the connector is closed", connector=self._name)
        (path,) = self._require("path")
        return Path(str(path)).expanduser()

    @property
    def _format(self) -> str:
        fmt = str(self._options.get("format", "bytes"))
        if fmt not in _FORMATS:
            raise ConfigError(f"unknown format {fmt!r}", connector=self._name)
        return fmt

    def _connect(self) -> Path:
        return self._root()

    def _close(self, connection: Any) -> None:
        pass  # nothing is held open between calls

    # -- Source --------------------------------------------------------------------------

    def files(self) -> list[Path]:
        """The files ``read()`` reads, in its order (sorted by name)."""
        root = self._root()
        if not root.is_dir():
            raise NotFoundError(
                f"path {str(root)!r} is not a directory",
                status_code=404,
                connector=self._name,
                operation="read",
            )
        pattern = str(self.config.get("pattern") or "*")
        recursive = bool(self.config.get("recursive"))
        try:
            found = root.rglob(pattern) if recursive else root.glob(pattern)
            named = [
                (p.relative_to(root).as_posix(), p)
                for p in found
                if not p.name.endswith(TEMP_SUFFIX) and p.is_file()
            ]
        except (OSError, ValueError) as exc:
            raise self._error(exc, operation="read") from None
        named.sort(key=lambda item: item[0])
        return [p for _, p in named]

    def read(self, **params: Any) -> Iterator[dict[str, Any]]:
        """One record per file (per line for ``jsonl``), lazily, in sorted name order."""
        if params:
            raise TypeError(f"read() got unexpected arguments: {', '.join(sorted(params))}")
        return self._counted(self._read())

    def _read(self) -> Iterator[dict[str, Any]]:
        root = self._root()
        fmt = self._format
        for path in self.files():
            name = path.relative_to(root).as_posix()
            try:
                stat = path.stat()
                if fmt == "jsonl":
                    yield from self._lines(path, name, stat)
                    continue
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # deleted since it was listed: there is nothing left to read
            except OSError as exc:
                raise self._error(exc, operation="read") from None
            self._count_bytes(read=len(data))
            yield {
                "name": name,
                "path": str(path),
                "content": self._decode(data, name, fmt),
                "size": len(data),
                "modified": datetime.fromtimestamp(stat.st_mtime, UTC),
            }

    def _lines(self, path: Path, name: str, stat: os.stat_result) -> Iterator[dict[str, Any]]:
        modified = datetime.fromtimestamp(stat.st_mtime, UTC)
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                self._count_bytes(read=len(line))
                if not line.strip():
                    continue
                yield {
                    "name": name,
                    "path": str(path),
                    "line": number,
                    "content": self._decode(line, f"{name}:{number}", "json"),
                    "size": len(line),
                    "modified": modified,
                }

    def _decode(self, data: bytes, where: str, fmt: str) -> Any:
        try:
            if fmt == "bytes":
                return data
            if fmt == "text":
                return data.decode("utf-8")
            if self._record is not None:
                return self._record.from_json(data)
            return json.loads(data)
        except ConnectorError:
            raise
        except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, a model's error
            raise ResponseValidationError(
                f"{where}: not valid {fmt}: {exc}",
                body=data[:500].decode("utf-8", "replace"),
                connector=self._name,
                operation="read",
            ) from None

    # -- Sink ----------------------------------------------------------------------------

    def write(self, records: Iterable[Any]) -> int:
        """Write each ``{name, content}`` record to ``path/name``, atomically; return how
        many files were written.

        ``content`` is bytes (or str) for ``bytes``, str for ``text``, any JSON value or
        model for ``json``, and a list of records (one line each) for ``jsonl``. On
        failure a :class:`WriteError` names the files not written and holds exactly their
        records in ``failed``.
        """
        pending = records_of(records)
        root = self._root()
        fmt = self._format
        metrics = self.metrics
        written = 0
        for index, record in enumerate(pending):
            try:
                name, content = _name_and_content(record)
                data = self._encode(content, name, fmt)
                target = self._target(root, name)
                _atomic_write(target, data)
            except (ConnectorError, OSError, TypeError, ValueError) as exc:
                metrics.errors += 1
                failed = pending[index:]
                shown = ", ".join(repr(_name_of(r)) for r in failed[:_NAMED_IN_MESSAGE])
                if len(failed) > _NAMED_IN_MESSAGE:
                    shown += f" and {len(failed) - _NAMED_IN_MESSAGE} more"
                reason = exc.message if isinstance(exc, ConnectorError) else f"{exc}"
                raise WriteError(
                    f"wrote {written} of {len(pending)} files; not written: {shown}: {reason}",
                    written=written,
                    failed=failed,
                    connector=self._name,
                    operation="write",
                ) from exc
            written += 1
            metrics.records_written += 1
            self._count_bytes(written=len(data))
        metrics.batches += 1
        return written

    def _encode(self, content: Any, name: str, fmt: str) -> bytes:
        if fmt in ("bytes", "text"):
            if isinstance(content, str):
                return content.encode("utf-8")
            if isinstance(content, bytes | bytearray | memoryview):
                return bytes(content)
            raise TypeError(f"{name!r}: content must be bytes or str, not {type(content).__name__}")
        if fmt == "json":
            return _json_line(content)
        if isinstance(content, str | bytes | Mapping) or not isinstance(content, Iterable):
            raise TypeError(f"{name!r}: jsonl content must be a list of records")
        return b"".join(_json_line(item) for item in content)

    def _target(self, root: Path, name: str) -> Path:
        """``root/name``, refused when it would be outside ``root``."""
        pure, native = PurePosixPath(name), Path(name)
        if (
            not name
            or "\x00" in name
            or pure.is_absolute()
            or native.is_absolute()
            or native.drive
            or ".." in pure.parts
            or ".." in native.parts
        ):
            raise PathEscapeError(
                f"file name {name!r} is not a relative path inside the directory",
                connector=self._name,
                operation="write",
            )
        real_root = root.resolve()
        target = root.joinpath(*pure.parts)
        # Resolving follows every symlink on the way: a linked directory or a linked file
        # that points elsewhere shows up here.
        resolved = target.resolve()
        if not resolved.is_relative_to(real_root) or resolved == real_root:
            raise PathEscapeError(
                f"file name {name!r} leads outside {str(root)!r} (through a symlink)",
                connector=self._name,
                operation="write",
            )
        return target


def _json_line(value: Any) -> bytes:
    dump = getattr(value, "model_dump_json", None)
    if dump is not None:
        return str(dump(exclude_none=True)).encode() + b"\n"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _name_and_content(record: Any) -> tuple[str, Any]:
    if not isinstance(record, Mapping):
        dump = getattr(record, "model_dump", None)
        if dump is None:
            raise TypeError(f"a file record must be a dict or a model, not {type(record).__name__}")
        record = dump(exclude_none=True)
    name = record.get("name")
    if not isinstance(name, str):
        raise TypeError("a file record needs a str 'name'")
    if "content" not in record:
        raise TypeError(f"file record {name!r} has no 'content'")
    return name, record["content"]


def _name_of(record: Any) -> Any:
    if isinstance(record, Mapping):
        return record.get("name")
    return getattr(record, "name", record)


def _atomic_write(target: Path, data: bytes) -> None:
    """Replace ``target`` by ``data`` so that no reader ever sees a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp, fd = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():  # keep the permissions of the file being replaced
            os.chmod(temp, target.stat().st_mode & 0o7777)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    _fsync_directory(target.parent)


def _create_temp(target: Path) -> tuple[Path, int]:
    """A new, empty temporary file beside ``target``, created with the permissions a new
    file gets (the umask applies, unlike ``tempfile.mkstemp``'s 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = target.with_name(f".{target.name}.{os.urandom(6).hex()}{TEMP_SUFFIX}")
        try:
            return temp, os.open(temp, flags, 0o666)
        except FileExistsError:
            continue


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
