"""Finding the two versions to compare: two files, two directories, or the working tree
against a git ref. Every problem on either side is collected, so bad input is reported
all at once (as located errors) before anything is compared.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from builder.diagnostics import Diagnostic, InputError
from builder.diff import parallel
from builder.diff.side import Side
from builder.gc_pause import collection_paused
from builder.spec.loader import LoadedSpec, load_spec

# Below this many bytes of input (spec files and the OpenAPI documents they name) the
# specs are loaded one after the other: a second process would cost more than it saves.
PARALLEL_MIN_BYTES = 256 * 1024
_OPENAPI_SOURCE = re.compile(
    r"^[ \t]+openapi:[ \t]*[\"']?([^\"'#\r\n]+?)[\"']?[ \t]*(?:#.*)?$", re.M
)


@dataclass(frozen=True)
class Pair:
    old: LoadedSpec | None
    new: LoadedSpec | None


@dataclass(frozen=True)
class _Job:
    """One spec file to load; with ``root``, the file and the files its errors are in are
    named ``prefix`` + their path under ``root`` (the old side of ``--base``)."""

    path: Path
    root: Path | None = None
    prefix: str = ""

    def label(self, file: str) -> str:
        where = f"{self.root}{os.sep}"
        if self.root is None or not file.startswith(where):
            return file
        return self.prefix + Path(file[len(where) :]).as_posix()

    def run(self, prepare: bool) -> tuple[Side | None, list[Diagnostic]]:
        """The loaded spec (with, if ``prepare``, everything the comparison reads computed),
        or the problems that stop it from loading."""
        with collection_paused():
            try:
                loaded = load_spec(self.path)
            except InputError as exc:
                return None, [
                    dataclasses.replace(d, file=self.label(d.file)) for d in exc.diagnostics
                ]
            loaded.document.file = self.label(loaded.document.file)
            side = Side.of(loaded)
            return (side.prepare() if prepare else side), []

    def weight(self) -> int:
        """About how much there is to load: the file, and an OpenAPI document it names."""
        size = 0
        try:
            size = self.path.stat().st_size
            if size > 64 * 1024:
                return size  # a spec of its own, not an overlay on a document
            match = _OPENAPI_SOURCE.search(self.path.read_text("utf-8", errors="replace"))
            if match is not None:
                size += (self.path.parent / match.group(1)).stat().st_size
        except OSError:
            pass  # loading it says what is wrong
        return size


class _Loader:
    """Loads specs, keeping every error instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Diagnostic] = []

    def load(self, jobs: Sequence[_Job]) -> list[Side | None]:
        """Each job's spec (None where it has errors, which are kept). Large inputs are
        loaded in two processes at once, each preparing what the comparison reads."""
        weights = [job.weight() for job in jobs] if len(jobs) > 1 else []
        if len(jobs) > 1 and sum(weights) >= PARALLEL_MIN_BYTES and parallel.available():
            here, there = _halves(weights)
            mine, theirs = parallel.run_both(
                lambda: [jobs[i].run(True) for i in here],
                lambda: [jobs[i].run(True) for i in there],
            )
            by_index = dict(zip(here, mine, strict=True)) | dict(zip(there, theirs, strict=True))
            results = [by_index[i] for i in range(len(jobs))]
        else:
            results = [job.run(False) for job in jobs]
        for _, problems in results:
            self.problems.extend(problems)
        return [side for side, _ in results]

    def fail(self, file: str, message: str) -> None:
        self.problems.append(Diagnostic(file, 1, 1, "", message))

    def unique_names(self, specs: Mapping[str, LoadedSpec | None]) -> None:
        """Two files of one side defining the same connector cannot be paired."""
        first: dict[str, LoadedSpec] = {}
        for spec in specs.values():
            if spec is None:
                continue
            seen = first.setdefault(spec.spec.name, spec)
            if seen is not spec:
                line, col = spec.document.position(("name",))
                message = f"connector {spec.spec.name!r} is also defined in {seen.document.file}"
                self.problems.append(Diagnostic(spec.document.file, line, col, "name", message))

    def raise_problems(self) -> None:
        if any(p.severity == "error" for p in self.problems):
            raise InputError(self.problems)


def file_pairs(old: str, new: str) -> list[Pair]:
    """OLD and NEW: two spec files, or two directories of specs (paired by file, then by
    connector name; a connector on one side only is added or removed)."""
    old_path, new_path = Path(old), Path(new)
    loader = _Loader()
    if old_path.is_dir() and new_path.is_dir():
        from builder.generate import discover  # (and the renderer): not for two files

        old_files, new_files = discover([old_path]), discover([new_path])
        loaded = loader.load([_Job(p) for p in old_files + new_files])
        old_specs = {
            p.relative_to(old_path).as_posix(): spec
            for p, spec in zip(old_files, loaded[: len(old_files)], strict=True)
        }
        new_specs = {
            p.relative_to(new_path).as_posix(): spec
            for p, spec in zip(new_files, loaded[len(old_files) :], strict=True)
        }
        loader.unique_names(old_specs)
        loader.unique_names(new_specs)
        loader.raise_problems()
        return pair_up(_loaded(old_specs), _loaded(new_specs))
    if old_path.is_dir() or new_path.is_dir():
        directory = old if old_path.is_dir() else new
        loader.fail(directory, "is a directory: give two spec files or two directories")
        loader.raise_problems()
    pair = Pair(*loader.load([_Job(old_path), _Job(new_path)]))
    loader.raise_problems()
    return [pair]


def git_pairs(ref: str, paths: Iterable[str]) -> list[Pair]:
    """The specs under ``paths`` in the working tree against the same files at ``ref``.

    The old files are read from a copy of their directories at ``ref`` (``git archive``),
    so a spec whose operations come from an OpenAPI document next to it loads as it did
    then; every file and error location is named ``REF:path``.
    """
    from builder.generate import discover

    root = _git_root()
    commit = _resolve(ref, root)
    loader = _Loader()
    new_files: list[tuple[str, Path]] = []  # the working tree's spec files (path from the root)
    wanted: list[str] = []  # the paths, relative to the root, as they were at the ref
    candidates: set[str] = set()  # files at the ref that may be specs
    for raw in paths:
        path = Path(raw)
        relative = _inside(path, root)
        at_ref = _files_at(commit, relative, root)
        if not path.exists() and not at_ref:
            loader.fail(raw, f"no such file or directory, here or at {ref}")
            continue
        for file in discover([path]) if path.exists() else []:
            new_files.append((_inside(file, root), file))
        if at_ref:
            wanted.append(relative)
            candidates.update(at_ref)
    with tempfile.TemporaryDirectory(prefix="connector-builder-diff-") as tmp:
        copy = Path(tmp)
        _export(commit, sorted({str(PurePosixPath(n).parent) for n in candidates}), root, copy)
        # The same rules pick the specs out of the copy as out of the working tree.
        old_names = [p.relative_to(copy).as_posix() for p in discover(copy / w for w in wanted)]
        jobs = [_Job(file) for _, file in new_files]
        jobs += [_Job(copy / name, copy, f"{ref}:") for name in old_names]
        loaded = loader.load(jobs)
    new_specs = dict(zip([key for key, _ in new_files], loaded[: len(new_files)], strict=True))
    old_specs = dict(zip(old_names, loaded[len(new_files) :], strict=True))
    loader.unique_names(old_specs)
    loader.unique_names(new_specs)
    loader.raise_problems()
    return pair_up(_loaded(old_specs), _loaded(new_specs))


def pair_up(old: dict[str, LoadedSpec], new: dict[str, LoadedSpec]) -> list[Pair]:
    """Pair specs by file path, then what is left by connector name; sorted by name."""
    pairs = [Pair(old[key], new[key]) for key in old if key in new]
    old_left = {spec.spec.name: spec for key, spec in old.items() if key not in new}
    new_left = {spec.spec.name: spec for key, spec in new.items() if key not in old}
    for connector in old_left.keys() | new_left.keys():
        pairs.append(Pair(old_left.get(connector), new_left.get(connector)))

    def by_name(pair: Pair) -> tuple[str, str]:
        either = pair.new or pair.old
        assert either is not None
        return either.spec.name, either.document.file

    return sorted(pairs, key=by_name)


def _halves(weights: list[int]) -> tuple[list[int], list[int]]:
    """The indexes of ``weights`` in two groups of about the same total weight (the
    heaviest first, each to the lighter group), each in order."""
    groups: tuple[list[int], list[int]] = ([], [])
    totals = [0, 0]
    for i in sorted(range(len(weights)), key=lambda i: -weights[i]):
        lighter = 0 if totals[0] <= totals[1] else 1
        groups[lighter].append(i)
        totals[lighter] += weights[i]
    return sorted(groups[0]), sorted(groups[1])


def _loaded(specs: Mapping[str, LoadedSpec | None]) -> dict[str, LoadedSpec]:
    return {key: spec for key, spec in specs.items() if spec is not None}


# -- git ------------------------------------------------------------------------------------


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise InputError([Diagnostic("<git>", 1, 1, "", "git is not installed")]) from None


def _git_root() -> Path:
    run = _git(["rev-parse", "--show-toplevel"], Path.cwd())
    if run.returncode != 0:
        message = "--base needs a git repository: the current directory is not in one"
        raise InputError([Diagnostic("<git>", 1, 1, "", message)])
    return Path(run.stdout.decode().strip())


def _resolve(ref: str, root: Path) -> str:
    # A ref that starts with "-" would be read as an option; no real ref does.
    run = (
        None
        if ref.startswith("-")
        else _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], root)
    )
    if run is None or run.returncode != 0:
        raise InputError(
            [
                Diagnostic(
                    "<git>", 1, 1, "", f"{ref!r} is not a commit, branch or tag of this repository"
                )
            ]
        )
    return run.stdout.decode().strip()


def _inside(path: Path, root: Path) -> str:
    """``path`` relative to the repository root, as git names it."""
    absolute = path.resolve()
    try:
        return PurePosixPath(absolute.relative_to(root.resolve())).as_posix()
    except ValueError:
        raise InputError(
            [Diagnostic(str(path), 1, 1, "", f"is outside the git repository at {root}")]
        ) from None


def _files_at(commit: str, relative: str, root: Path) -> list[str]:
    run = _git(["ls-tree", "-r", "-z", "--name-only", commit, "--", relative or "."], root)
    if run.returncode != 0:
        return []
    names = [n for n in run.stdout.decode().split("\0") if n]
    from builder.generate import SPEC_SUFFIXES

    return [n for n in names if n.endswith(SPEC_SUFFIXES)]


def _export(commit: str, directories: list[str], root: Path, target: Path) -> None:
    """Write ``directories`` as they are at ``commit`` under ``target``."""
    if not directories:
        return
    run = _git(["archive", "--format=tar", commit, "--", *directories], root)
    if run.returncode != 0:
        message = run.stderr.decode(errors="replace").strip() or "git archive failed"
        raise InputError([Diagnostic("<git>", 1, 1, "", message)])
    with tarfile.open(fileobj=io.BytesIO(run.stdout)) as archive:
        # The "data" filter refuses links and paths that lead out of the target directory.
        archive.extractall(target, filter="data")
