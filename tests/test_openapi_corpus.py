"""The OpenAPI import on real documents: every small corpus document generates and imports.

The corpus is ``shared/corpus/openapi/`` beside the repository (43 public documents and a
``MANIFEST.tsv`` naming each one's size and operation count). The tests are skipped, with a
reason, when it is absent.

Rules:

- Documents of 600 KB or more are left to the benchmark
  (``tests/benchmarks/openapi_corpus.py``): stripe, plaid, openai, slack, discord, sendgrid
  and influxdata. Everything smaller is taken here.
- Each document goes through ``connector-builder import-openapi DOC --name NAME --out DIR``
  then ``connector-builder generate DIR/NAME.yaml --out OUT`` (in-process, click's
  CliRunner): both must exit 0 without a traceback, and every operation of the document
  must be either generated or listed under ``skip:`` with a reason (nothing dropped
  silently).
- One subprocess then imports every generated package's ``client`` and ``models`` modules
  (each package under a unique name) and builds every model (``model_rebuild``), so a name
  used before it is defined or a broken annotation shows up here, not in a user's program.
- Over all the documents taken, at least 98 % of the operations (the ``operations`` column of
  ``MANIFEST.tsv``) must be generated as client methods.
- The module runs in well under 90 s on 2 cores (the generation of all documents is shared by
  every test through one module-scoped fixture).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from builder.cli import main

pytestmark = pytest.mark.timeout(90)

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "openapi"
MANIFEST = CORPUS / "MANIFEST.tsv"
MAX_BYTES = 600 * 1024
COVERAGE = 0.98
LOCATED = re.compile(r"^[^:\n]+:\d+:\d+: ", re.MULTILINE)


def _manifest() -> list[dict[str, str]]:
    if not MANIFEST.is_file():
        return []
    with MANIFEST.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


ROWS = [row for row in _manifest() if int(row["size_bytes"]) < MAX_BYTES]
DOCS = [row["file"] for row in ROWS] or ["<corpus absent>"]


def connector_name(file: str) -> str:
    stem = file.rsplit(".", 1)[0].lower()
    return ("c_" + re.sub(r"[^a-z0-9]+", "_", stem)).strip("_")[:60].rstrip("_")


@dataclass
class Outcome:
    file: str
    name: str
    total: int  # operations in the document (MANIFEST.tsv)
    import_exit: int = -1
    generate_exit: int = -1
    output: str = ""
    taken: int = 0  # what import-openapi reported as converted
    skipped: dict[str, str] = field(default_factory=dict)
    imported: bool = False
    import_error: str = ""
    methods: int = 0  # client methods found by importing the package


IMPORT_SCRIPT = r"""
import importlib, importlib.util, json, sys, traceback
from pathlib import Path

from pydantic import BaseModel

from builder.runtime.client import SyncClient

results = {}
base = set(dir(SyncClient))
for i, (name, directory) in enumerate(json.load(sys.stdin)):
    directory = Path(directory)
    unique = f"_corpus_{i}_{name}"
    try:
        spec = importlib.util.spec_from_file_location(
            unique, directory / "__init__.py", submodule_search_locations=[str(directory)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[unique] = package
        spec.loader.exec_module(package)
        client = importlib.import_module(unique + ".client")
        models = importlib.import_module(unique + ".models")
        for value in list(vars(models).values()):
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == models.__name__
            ):
                value.model_rebuild(force=True)
        cls = getattr(client, client.__all__[0])
        methods = [
            k for k, v in vars(cls).items()
            if callable(v) and not k.startswith("_") and k not in base
        ]
        results[name] = {"ok": True, "methods": len(methods), "error": ""}
    except BaseException as exc:  # report, never stop: one broken package is one failure
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{last.filename}:{last.lineno}"
        error = f"{type(exc).__name__}: {exc} ({where})"
        results[name] = {"ok": False, "methods": 0, "error": error}
json.dump(results, sys.stdout)
"""


def _run_cli(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        output += f"\nthe CLI raised {result.exception!r}"
        return 99, output
    return result.exit_code, output


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    if not ROWS:
        pytest.skip(f"the OpenAPI corpus is not at {CORPUS} (it comes with shared/)")
    root = tmp_path_factory.mktemp("corpus")
    specs, out = root / "specs", root / "out"
    outcomes: dict[str, Outcome] = {}
    started = time.perf_counter()
    for row in ROWS:
        file = row["file"]
        outcome = Outcome(file, connector_name(file), int(row["operations"]))
        outcomes[file] = outcome
        code, text = _run_cli(
            "import-openapi", CORPUS / file, "--name", outcome.name, "--out", specs
        )
        outcome.import_exit, outcome.output = code, text
        if code != 0:
            continue
        match = re.search(r": (\d+) operations", text)
        outcome.taken = int(match.group(1)) if match else 0
        written = yaml.safe_load((specs / f"{outcome.name}.yaml").read_text("utf-8"))
        outcome.skipped = dict(written.get("skip") or {})
        code, text = _run_cli("generate", specs / f"{outcome.name}.yaml", "--out", out)
        outcome.generate_exit, outcome.output = code, outcome.output + text
    generated = [
        (o.name, str(out / "connectors" / o.name))
        for o in outcomes.values()
        if o.generate_exit == 0
    ]
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT],
        input=json.dumps(generated),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported: dict[str, Any] = json.loads(proc.stdout)
    for outcome in outcomes.values():
        result = imported.get(outcome.name)
        if result is not None:
            outcome.imported = bool(result["ok"])
            outcome.import_error = str(result["error"])
            outcome.methods = int(result["methods"])
    sys.stderr.write(f"\ncorpus: {len(ROWS)} documents in {time.perf_counter() - started:.1f}s\n")
    return outcomes


@pytest.mark.parametrize("document", DOCS)
def test_document_generates(corpus: dict[str, Outcome], document: str) -> None:
    outcome = corpus[document]
    assert "Traceback" not in outcome.output, outcome.output
    assert outcome.import_exit == 0, f"import-openapi exit {outcome.import_exit}:\n{outcome.output}"
    assert outcome.generate_exit == 0, f"generate exit {outcome.generate_exit}:\n{outcome.output}"


@pytest.mark.parametrize("document", DOCS)
def test_every_operation_is_generated_or_skipped_with_a_reason(
    corpus: dict[str, Outcome], document: str
) -> None:
    outcome = corpus[document]
    if outcome.import_exit != 0:
        pytest.fail(f"import-openapi failed:\n{outcome.output}")
    assert all(str(reason).strip() for reason in outcome.skipped.values()), outcome.skipped
    assert outcome.taken + len(outcome.skipped) == outcome.total, (
        f"{outcome.taken} generated + {len(outcome.skipped)} skipped "
        f"!= {outcome.total} operations in the document"
    )
    if outcome.generate_exit != 0:
        pytest.fail(f"generate failed:\n{outcome.output}")
    for line in outcome.output.splitlines():
        if "warning" in line and "skip" in line:
            assert LOCATED.match(line), line


@pytest.mark.parametrize("document", DOCS)
def test_generated_package_imports(corpus: dict[str, Outcome], document: str) -> None:
    outcome = corpus[document]
    if outcome.generate_exit != 0:
        pytest.fail(f"not generated (exit {outcome.generate_exit}):\n{outcome.output[-2000:]}")
    assert outcome.imported, outcome.import_error
    assert outcome.methods == outcome.taken, (
        f"the client has {outcome.methods} methods; import-openapi took {outcome.taken}"
    )


def test_operations_generated_overall(corpus: dict[str, Outcome]) -> None:
    total = sum(o.total for o in corpus.values())
    generated = sum(o.methods for o in corpus.values() if o.imported)
    lines = [f"{o.file}: {o.methods}/{o.total}" for o in corpus.values() if o.methods < o.total]
    assert total > 0
    assert generated / total >= COVERAGE, (
        f"{generated}/{total} operations generated ({generated / total:.1%} < {COVERAGE:.0%}):\n"
        + "\n".join(lines)
    )
