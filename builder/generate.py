"""The pipeline: find specs, validate them all, render each package, write it atomically.

Nothing is written unless every selected spec is valid. A package whose content hash (the
spec's meaning, the builder version and the templates) matches its manifest, and whose
files are as the manifest recorded them, is skipped.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from builder.atomic import recover, write_tree
from builder.diagnostics import Diagnostic, InputError
from builder.ir import Connector, build
from builder.render import generator_digest, render_package
from builder.spec.loader import LoadedSpec, load_spec

MANIFEST = "connector.json"
SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass
class Selected:
    path: Path
    loaded: LoadedSpec

    @property
    def name(self) -> str:
        return self.loaded.spec.name


@dataclass
class Outcome:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Spec files named by ``paths``: files as given, directories searched recursively."""
    found: list[Path] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.suffix in SPEC_SUFFIXES and p.is_file() and not _is_openapi_document(p)
                )
            )
        elif path.exists():
            found.append(path)
        else:
            problems.append(Diagnostic(str(path), 1, 1, "", "no such file or directory"))
    if problems:
        raise InputError(problems)
    return list(dict.fromkeys(found))


_OPENAPI_HEAD = re.compile(r"^(openapi|swagger)\s*:", re.MULTILINE)


def _is_openapi_document(path: Path) -> bool:
    """An OpenAPI document beside the specs (what `source:` points at), not a spec."""
    if ".openapi." in path.name:
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return bool(_OPENAPI_HEAD.search(head)) and not re.search(
        r"^spec_version\s*:", head, re.MULTILINE
    )


def load_all(paths: Iterable[str | Path], *, background: bool = False) -> list[Selected]:
    """Load and validate every spec; raise one InputError with every problem of every file.
    ``background``: OpenAPI validation starts at once beside the caller's work."""
    problems: list[Diagnostic] = []
    selected: list[Selected] = []
    for path in discover(paths):
        try:
            selected.append(Selected(path, load_spec(path, background=background)))
        except InputError as exc:
            problems.extend(exc.diagnostics)
    names: dict[str, Selected] = {}
    for item in selected:
        if item.name in names:
            line, col = item.loaded.document.position(("name",))
            problems.append(
                Diagnostic(
                    str(item.path),
                    line,
                    col,
                    "name",
                    f"connector {item.name!r} is also defined in {names[item.name].path}",
                )
            )
        names[item.name] = item
    if any(p.severity == "error" for p in problems):
        raise InputError(problems + [w for s in selected for w in s.loaded.warnings])
    return selected


def content_hash(connector: Connector) -> str:
    return hashlib.sha256(
        f"{connector.spec_hash}\n{generator_digest()}\n{connector.spec_file}".encode()
    ).hexdigest()


def package_files(connector: Connector) -> dict[str, str]:
    """Every file of a connector's package, manifest included."""
    files = render_package(connector)
    manifest: dict[str, object] = {
        "name": connector.name,
        "version": connector.version,
        "builder_version": connector.builder_version,
        "spec_hash": connector.spec_hash,
        "content_hash": content_hash(connector),
        "files": {path: _sha(text) for path, text in sorted(files.items())},
    }
    files[MANIFEST] = _manifest_text(manifest)
    return files


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_manifest(package: Path) -> dict[str, object] | None:
    try:
        data = json.loads((package / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _manifest_text(manifest: dict[str, object]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def _intact(package: Path, manifest: dict[str, object], connector: Connector) -> bool:
    """The manifest is as this builder writes it for ``connector``, and every file it lists
    is there with its recorded hash, and no others."""
    recorded = manifest.get("files")
    if not isinstance(recorded, dict):
        return False
    expected = {
        "name": connector.name,
        "version": connector.version,
        "builder_version": connector.builder_version,
        "spec_hash": connector.spec_hash,
        "content_hash": content_hash(connector),
    }
    if any(manifest.get(k) != v for k, v in expected.items()) or set(manifest) != set(expected) | {
        "files"
    }:
        return False
    if (package / MANIFEST).read_text("utf-8") != _manifest_text(manifest):
        return False
    present = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    if present != set(recorded) | {MANIFEST}:
        return False
    return all(
        _sha((package / path).read_text("utf-8")) == digest for path, digest in recorded.items()
    )


def generate(
    paths: Iterable[str | Path],
    out: Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Outcome:
    selected = load_all(paths, background=True)
    outcome = Outcome()
    root = out / "connectors"
    for item in selected:
        package = root / item.name
        recover(package)
        connector = build(item.loaded.spec, item.path.name)
        manifest = _read_manifest(package)
        if (
            not force
            and manifest
            and manifest.get("content_hash") == content_hash(connector)
            and _intact(package, manifest, connector)
        ):
            outcome.skipped.append(item.name)
        else:
            write_tree(package, package_files(connector))
            outcome.written.append(item.name)
        if progress:
            progress(item.name)
    # Read last: a document's validation may still be running beside the generation.
    outcome.warnings = [w for s in selected for w in s.loaded.warnings]
    return outcome


@dataclass
class Drift:
    name: str
    reason: str
    diff: str = ""


def check(paths: Iterable[str | Path], out: Path) -> list[Drift]:
    """What in ``out`` differs from a fresh generation of the specs (empty: all in step)."""
    drift: list[Drift] = []
    root = out / "connectors"
    selected = load_all(paths)
    for item in selected:
        package = root / item.name
        if not package.is_dir():
            drift.append(Drift(item.name, "not generated yet"))
            continue
        files = package_files(build(item.loaded.spec, item.path.name))
        manifest = _read_manifest(package)
        for relative, text in sorted(files.items()):
            path = package / relative
            try:
                current = path.read_text("utf-8")
            except (OSError, UnicodeDecodeError):
                drift.append(Drift(item.name, f"{relative} is missing"))
                continue
            if current == text:
                continue
            edited = _edited(relative, current, text, manifest)
            reason = f"{relative} was edited by hand" if edited else f"{relative} is stale"
            diff = "".join(
                difflib.unified_diff(
                    current.splitlines(True),
                    text.splitlines(True),
                    f"{package / relative} (on disk)",
                    f"{package / relative} (generated)",
                    n=2,
                )
            )
            drift.append(Drift(item.name, reason, _shorten(diff)))
        extra = {
            p.relative_to(package).as_posix()
            for p in package.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts
        } - set(files)
        for relative in sorted(extra):
            drift.append(Drift(item.name, f"{relative} is not generated by the spec"))
    known = {s.name for s in selected}
    if root.is_dir():
        for package in sorted(
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
        ):
            if package.name not in known and (package / MANIFEST).exists():
                drift.append(Drift(package.name, "generated package has no spec"))
    return drift


def _edited(relative: str, current: str, fresh: str, manifest: dict[str, object] | None) -> bool:
    """Whether a differing file was changed by hand rather than left behind by the builder."""
    if manifest is None:
        return False
    if relative == MANIFEST:
        # The builder writes its manifest canonically; anything else was typed in.
        try:
            on_disk = json.loads(current)
        except ValueError:
            return True
        recorded = json.loads(fresh)
        return bool(
            current != _manifest_text(on_disk)
            or on_disk.get("content_hash") == recorded.get("content_hash")
        )
    files = manifest.get("files")
    return isinstance(files, dict) and files.get(relative) not in (None, _sha(current))


def _shorten(diff: str, limit: int = 40) -> str:
    lines = diff.splitlines(True)
    if len(lines) <= limit:
        return diff
    return "".join(lines[:limit]) + f"... ({len(lines) - limit} more diff lines)\n"
