"""Benchmark: the OpenAPI import on every corpus document, beside two peer generators.

    python tests/benchmarks/openapi_corpus.py [--quick] [--docs a,b] [--json PATH]
        [--no-peers] [--no-mypy] [--timeout S] [--mypy-timeout S] [--work DIR]

The corpus is ``shared/corpus/openapi/`` beside the repository (documents + MANIFEST.tsv).
For each document, one row:

* ``valid``     openapi-spec-validator has no finding on it (``?``: it could not check);
* ``gen``       ``connector-builder import-openapi`` then ``generate`` both exit 0;
* ``imports``   the package's ``client`` and ``models`` import in a fresh interpreter and
                every model builds (``model_rebuild``);
* ``mypy``      errors of ``mypy --strict`` on the generated package (``--no-mypy``: skipped;
                ``T/O``: over ``--mypy-timeout``);
* ``ops``       operations generated (methods of the generated client, read from its
                source) / skipped (listed under ``skip:``) / in the document (MANIFEST.tsv);
* ``s``, ``MB`` wall time of the generating child process (import-openapi + generate, one
                interpreter) and its peak RSS (``ru_maxrss`` of ``getrusage(RUSAGE_CHILDREN)``
                read by a small parent process that does nothing else).

Our runs are cold: each document gets fresh ``CONNECTOR_BUILDER_CACHE`` and
``XDG_CACHE_HOME`` directories (no formatting or validation cache).

Peers (``--no-peers`` to skip), run on the same documents in the same run, installed by the
script into its own virtualenv (``~/.cache/connector-builder/bench-peers``):
openapi-python-client 0.29.1 (``generate --meta none``; where its default run crashes, once
more with the config ``literal_enums: true``) and datamodel-code-generator 0.89.0
(``--input-file-type openapi --output-model-type pydantic_v2.BaseModel``: models only).
Their rows: an importable package generated? (every module imported; pydantic models
built), seconds (peak RSS in the JSON output).

Totals: documents generated and imported (ours and the peers'), the share of operations we
generate, and, for the large documents (OpenAI, Stripe, Plaid, Discord), our time against
openapi-python-client's with the ratio (target: at least 3x faster).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import REPO_ROOT, parser, table, write_json  # noqa: E402

CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "openapi"
PEERS_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "connector-builder"
    / "bench-peers"
)
OPC_VERSION = "0.29.1"
DMCG_VERSION = "0.89.0"
# What the peers' output imports: httpx, attrs, dateutil (openapi-python-client), pydantic with
# email-validator (datamodel-code-generator, for `format: email`).
PEER_RUNTIME = ("python-dateutil", "httpx", "attrs", "email-validator")
LARGE = {
    "OpenAI": "openai__openapi.yaml",
    "Stripe": "stripe__openapi-spec3.yaml",
    "Plaid": "plaid__2020-09-14.yml",
    "Discord": "discord__specs-openapi.json",
}
QUICK = (
    "swagger-api__openapi.yaml",
    "nytimes__books-api-books-api.json",
    "readmeio__3-0-yaml-security-multiple.yaml",
    "twilio__twilio-monitor-v1.json",
)
RATIO_TARGET = 3.0
RESULT = "@@RESULT@@ "
RUSAGE = "@@RUSAGE@@ "

# Every measured command runs under this small interpreter: it times the command and reads
# its peak RSS from getrusage(RUSAGE_CHILDREN). (A child forked straight from this script
# would inherit the script's own RSS as its high-water mark: Linux keeps it across exec.)
TRAMPOLINE = r"""
import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.call(sys.argv[1:])
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
sys.stdout.flush()
print("\n@@RUSAGE@@ " + json.dumps({"seconds": seconds, "maxrss_kib": peak}), flush=True)
sys.exit(code if code >= 0 else 128 - code)
"""

# The generating child: import-openapi then generate, in one interpreter (one peak RSS).
GENERATE_CHILD = r"""
import json, sys
from builder.cli import main

document, name, specs, out = sys.argv[1:5]
codes = []
for args in (
    ["import-openapi", document, "--name", name, "--out", specs],
    ["generate", f"{specs}/{name}.yaml", "--out", out],
):
    try:
        main(args, standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    codes.append(code)
    if code:
        break
sys.stdout.flush()
print("\n@@RESULT@@ " + json.dumps({"codes": codes}), flush=True)
"""

# Imports a generated package of ours under a unique name and builds its models.
IMPORT_OURS = r"""
import importlib, importlib.util, json, sys, traceback
from pathlib import Path
from pydantic import BaseModel
from builder.runtime.client import SyncClient

directory = Path(sys.argv[1])
result = {"ok": False, "methods": 0, "error": ""}
try:
    spec = importlib.util.spec_from_file_location(
        "_bench_pkg", directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules["_bench_pkg"] = package
    spec.loader.exec_module(package)
    client = importlib.import_module("_bench_pkg.client")
    models = importlib.import_module("_bench_pkg.models")
    for value in list(vars(models).values()):
        if isinstance(value, type) and issubclass(value, BaseModel):
            if value.__module__ == models.__name__:
                value.model_rebuild(force=True)
    cls = getattr(client, client.__all__[0])
    base = set(dir(SyncClient))
    result["methods"] = sum(
        1 for k, v in vars(cls).items() if callable(v) and not k.startswith("_") and k not in base
    )
    result["ok"] = True
except BaseException as exc:
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
    result["error"] = f"{type(exc).__name__}: {exc}"[:400] + where
print("@@RESULT@@ " + json.dumps(result))
"""

# Imports every module of a peer's output (a package directory or one module file).
IMPORT_PEER = r"""
import importlib, json, pkgutil, sys, traceback
from pathlib import Path

target = Path(sys.argv[1])
result = {"ok": False, "modules": 0, "error": ""}
try:
    sys.path.insert(0, str(target.parent))
    name = target.stem if target.is_file() else target.name
    root = importlib.import_module(name)
    modules = [root]
    if hasattr(root, "__path__"):
        for info in pkgutil.walk_packages(root.__path__, name + "."):
            modules.append(importlib.import_module(info.name))
    try:
        from pydantic import BaseModel
    except ImportError:
        BaseModel = None
    for module in modules:
        for value in list(vars(module).values()):
            if (
                BaseModel is not None and isinstance(value, type) and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
            ):
                value.model_rebuild(force=True)
    result["modules"] = len(modules)
    result["ok"] = True
except BaseException as exc:
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
    result["error"] = f"{type(exc).__name__}: {exc}"[:400] + where
print("@@RESULT@@ " + json.dumps(result))
"""


# --------------------------------------------------------------------------- #
# Processes
# --------------------------------------------------------------------------- #


@dataclass
class Run:
    code: int  # exit status; -9 and the like when killed; 124 on timeout
    seconds: float
    peak_mb: float
    output: str
    timed_out: bool = False

    def result(self) -> dict[str, Any] | None:
        for line in reversed(self.output.splitlines()):
            if line.startswith(RESULT):
                try:
                    value = json.loads(line[len(RESULT) :])
                except ValueError:
                    return None
                return value if isinstance(value, dict) else None
        return None


def run(
    cmd: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Run:
    """Run ``cmd``: its exit status, wall time and peak RSS (measured by ``TRAMPOLINE``)."""
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # a timeout kills the whole group (pool workers too)
        )
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    peak_mb = 0.0
    for line in reversed(text.splitlines()):
        if line.startswith(RUSAGE):
            usage = json.loads(line[len(RUSAGE) :])
            seconds, peak_mb = float(usage["seconds"]), usage["maxrss_kib"] / 1024  # KiB
            break
    code = 124 if expired.is_set() else proc.returncode
    return Run(code, seconds, peak_mb, text, expired.is_set())


def base_env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONNECTOR_BUILDER_DEBUG")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- #
# The corpus
# --------------------------------------------------------------------------- #


def manifest() -> dict[str, dict[str, str]]:
    path = CORPUS / "MANIFEST.tsv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}


def connector_name(file: str) -> str:
    stem = file.rsplit(".", 1)[0].lower()
    return ("c_" + re.sub(r"[^a-z0-9]+", "_", stem)).strip("_")[:60].rstrip("_")


# --------------------------------------------------------------------------- #
# Ours
# --------------------------------------------------------------------------- #


@dataclass
class Ours:
    valid: str = "-"  # yes / no (N findings) / ?
    findings: int = 0
    generated: bool = False
    exit_codes: list[int] = field(default_factory=list)
    imported: bool = False
    import_error: str = ""
    mypy_errors: int | None = None  # None: not run
    mypy_note: str = ""
    operations: int = 0
    skipped: int = 0
    total: int = 0
    seconds: float = 0.0
    peak_mb: float = 0.0
    error: str = ""


def validation(document: Path, xdg: Path, timeout: float) -> tuple[str, int]:
    """From the validation cache our run just filled; else by running the validator."""
    findings: list[Any] | None = None
    from builder.openapi.validate import CACHE_NAME

    for cached in (xdg / "connector-builder" / CACHE_NAME).glob("*.json"):
        try:
            findings = json.loads(cached.read_text("utf-8"))
        except (OSError, ValueError):
            findings = None
        break
    if findings is None:
        child = (
            "import json, sys\n"
            "from builder.openapi.document import load_document\n"
            "from builder.openapi.validate import _run\n"
            "d = load_document(sys.argv[1])\n"
            "print('@@RESULT@@ ' + json.dumps({'findings': _run(d.data, d.major)}))\n"
        )
        outcome = run([sys.executable, "-c", child, str(document)], timeout=timeout, env=base_env())
        result = outcome.result()
        if result is None:
            return "?", 0
        findings = result["findings"]
    assert findings is not None
    if any("could not check" in str(message) for _, message in findings):
        return "?", len(findings)
    return ("yes" if not findings else "no"), len(findings)


def run_ours(
    file: str,
    row: dict[str, str] | None,
    work: Path,
    *,
    timeout: float,
    mypy: bool,
    mypy_timeout: float,
) -> Ours:
    ours = Ours(total=int(row["operations"]) if row else 0)
    name = connector_name(file)
    root = work / "ours" / name
    shutil.rmtree(root, ignore_errors=True)
    specs, out = root / "specs", root / "out"
    cache, xdg = root / "cache", root / "xdg"
    cache.mkdir(parents=True)
    xdg.mkdir()
    env = {**base_env(), "CONNECTOR_BUILDER_CACHE": str(cache), "XDG_CACHE_HOME": str(xdg)}
    generation = run(
        [sys.executable, "-c", GENERATE_CHILD, str(CORPUS / file), name, str(specs), str(out)],
        timeout=timeout,
        env=env,
        cwd=root,
    )
    ours.seconds, ours.peak_mb = generation.seconds, generation.peak_mb
    result = generation.result()
    ours.exit_codes = list(result["codes"]) if result else [generation.code]
    ours.generated = bool(result) and ours.exit_codes == [0, 0] and generation.code == 0
    if not ours.generated:
        ours.error = "timeout" if generation.timed_out else _last_lines(generation.output)
    ours.valid, ours.findings = validation(CORPUS / file, xdg, timeout)
    spec = specs / f"{name}.yaml"
    if spec.is_file():
        try:
            import yaml

            ours.skipped = len((yaml.safe_load(spec.read_text("utf-8")) or {}).get("skip") or {})
        except Exception:  # noqa: BLE001 - a report, not a check
            pass
    if not ours.generated:
        return ours
    package = out / "connectors" / name
    check = run([sys.executable, "-c", IMPORT_OURS, str(package)], timeout=timeout, env=base_env())
    imported = check.result() or {}
    ours.imported = bool(imported.get("ok"))
    ours.import_error = str(imported.get("error") or ("" if ours.imported else "no result"))
    ours.operations = client_methods(package / "client.py")
    if not ours.total:
        ours.total = ours.operations + ours.skipped
    if mypy:
        checked = run(
            [
                sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                "--cache-dir", os.devnull, "-p", f"connectors.{name}",
            ],
            timeout=mypy_timeout,
            env={**base_env(), "MYPYPATH": str(REPO_ROOT)},
            cwd=out,
        )  # fmt: skip
        if checked.timed_out:
            ours.mypy_note = "T/O"
        else:
            found = re.search(r"Found (\d+) errors?", checked.output)
            if found:
                ours.mypy_errors = int(found.group(1))
            elif "Success" in checked.output:
                ours.mypy_errors = 0
            else:
                ours.mypy_note = "crash"
                ours.error = ours.error or _last_lines(checked.output)
    return ours


_ERROR_LINE = re.compile(r"Error|error:|Exception|not found|[Ff]ailed|crash")


def client_methods(path: Path) -> int:
    """The public methods of the sync client class, read from the source (no import)."""
    import ast

    try:
        tree = ast.parse(path.read_text("utf-8"))
    except (OSError, SyntaxError):
        return 0
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name) and b.id == "SyncClient" for b in node.bases
        ):
            return sum(
                1
                for item in node.body
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
            )
    return 0


def _last_lines(text: str, n: int = 3) -> str:
    """The telling lines of a failed run: its last error-looking lines, else its last lines."""
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not line[:1].isspace()  # a warning's source line, a traceback's frame
        and "Warning" not in line
        and "warning:" not in line
        and not line.startswith((RESULT, RUSAGE))
    ]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    return " | ".join((errors or lines)[-n:])[:400]


# --------------------------------------------------------------------------- #
# Peers
# --------------------------------------------------------------------------- #


@dataclass
class Peer:
    generated: bool = False
    imported: bool = False
    retried: bool = False  # openapi-python-client: the default crashed, literal_enums used
    seconds: float = 0.0  # the run that produced the output (or the last attempt)
    first_seconds: float | None = None  # the crashed default run, when retried
    peak_mb: float = 0.0
    empty: bool = False  # datamodel-code-generator: the document has no schema to model
    error: str = ""


def peer_python() -> Path:
    return PEERS_DIR / "bin" / "python"


def install_peers() -> dict[str, str]:
    """Create (or reuse) the peers' virtualenv; return the installed versions."""
    python = peer_python()
    if not python.exists():
        print(f"creating the peers' virtualenv in {PEERS_DIR} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_DIR)], check=True)
    versions = _peer_versions()
    if (
        versions.get("openapi-python-client")
        and versions.get("datamodel-code-generator")
        and all(versions.get(p) for p in PEER_RUNTIME)
    ):
        return versions
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    wanted_opc = f"openapi-python-client=={OPC_VERSION}"
    proc = subprocess.run([*pip, wanted_opc], capture_output=True, text=True)
    if proc.returncode != 0:
        print(
            f"openapi-python-client {OPC_VERSION} is not available; installing the newest",
            flush=True,
        )
        subprocess.run([*pip, "openapi-python-client"], check=True)
    subprocess.run([*pip, f"datamodel-code-generator=={DMCG_VERSION}", *PEER_RUNTIME], check=True)
    return _peer_versions()


def _peer_versions() -> dict[str, str]:
    child = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for n in ('openapi-python-client', 'datamodel-code-generator', 'python-dateutil',"
        " 'httpx', 'attrs', 'email-validator', 'pydantic'):\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(peer_python()), "-c", child], capture_output=True, text=True)
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        return {}


def _peer_env(root: Path) -> dict[str, str]:
    env = base_env()
    env["PATH"] = f"{PEERS_DIR / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(PEERS_DIR)
    env["XDG_CACHE_HOME"] = str(root / "xdg")
    return env


def _crashed(outcome: Run) -> bool:
    return outcome.code != 0 or "Traceback (most recent call last)" in outcome.output


def run_opc(file: str, work: Path, *, timeout: float) -> Peer:
    peer = Peer()
    name = connector_name(file)
    root = work / "opc" / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    target = root / f"opc_{name}"
    cmd = [
        str(PEERS_DIR / "bin" / "openapi-python-client"), "generate",
        "--path", str(CORPUS / file), "--meta", "none", "--output-path", str(target),
        "--overwrite",
    ]  # fmt: skip
    env = _peer_env(root)
    first = run(cmd, timeout=timeout, env=env, cwd=root)
    outcome = first
    if _crashed(first) and not first.timed_out:
        config = root / "config.yaml"
        config.write_text("literal_enums: true\n", "utf-8")
        shutil.rmtree(target, ignore_errors=True)
        outcome = run([*cmd, "--config", str(config)], timeout=timeout, env=env, cwd=root)
        peer.retried, peer.first_seconds = True, first.seconds
    peer.seconds, peer.peak_mb = outcome.seconds, outcome.peak_mb
    peer.generated = not _crashed(outcome) and (target / "__init__.py").is_file()
    if not peer.generated:
        peer.error = "timeout" if outcome.timed_out else _last_lines(outcome.output)
        return peer
    return _peer_import(peer, target, env, timeout)


def run_dmcg(file: str, work: Path, *, timeout: float) -> Peer:
    peer = Peer()
    name = connector_name(file)
    root = work / "dmcg" / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    target = root / f"dm_{name}.py"
    cmd = [
        str(PEERS_DIR / "bin" / "datamodel-codegen"),
        "--input", str(CORPUS / file), "--input-file-type", "openapi",
        "--output-model-type", "pydantic_v2.BaseModel", "--output", str(target),
    ]  # fmt: skip
    env = _peer_env(root)
    outcome = run(cmd, timeout=timeout, env=env, cwd=root)
    if "Modular references require an output directory" in outcome.output:
        # Dotted schema names: its output is a package, written to a directory.
        target = root / f"dm_{name}"
        cmd[cmd.index("--output") + 1] = str(target)
        outcome = run(cmd, timeout=timeout, env=env, cwd=root)
    peer.seconds, peer.peak_mb = outcome.seconds, outcome.peak_mb
    peer.generated = outcome.code == 0 and target.exists()
    if not peer.generated:
        peer.empty = "Models not found in the input data" in outcome.output
        peer.error = "timeout" if outcome.timed_out else _last_lines(outcome.output)
        return peer
    return _peer_import(peer, target, env, timeout)


def _peer_import(peer: Peer, target: Path, env: dict[str, str], timeout: float) -> Peer:
    check = run([str(peer_python()), "-c", IMPORT_PEER, str(target)], timeout=timeout, env=env)
    result = check.result() or {}
    peer.imported = bool(result.get("ok"))
    if not peer.imported:
        peer.error = str(result.get("error") or _last_lines(check.output))
    return peer


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _peer_cell(peer: Peer | None) -> str:
    if peer is None:
        return "-"
    if not peer.generated:
        return "T/O" if peer.error == "timeout" else "empty" if peer.empty else "crash"
    return ("yes" if peer.imported else "no-imp") + ("*" if peer.retried else "")


def row_for(file: str, ours: Ours, opc: Peer | None, dmcg: Peer | None) -> list[Any]:
    mypy = ours.mypy_note or ("-" if ours.mypy_errors is None else ours.mypy_errors)
    return [
        file[:46],
        ours.valid,
        _yes(ours.generated),
        _yes(ours.imported) if ours.generated else "-",
        mypy,
        f"{ours.operations}/{ours.skipped}/{ours.total}",
        round(ours.seconds, 2),
        round(ours.peak_mb),
        _peer_cell(opc),
        "-" if opc is None else round(opc.seconds, 2),
        _peer_cell(dmcg),
        "-" if dmcg is None else round(dmcg.seconds, 2),
    ]


HEADERS = [
    "document", "valid", "gen", "imports", "mypy", "ops gen/skip/total", "s", "MB",
    "opc", "opc s", "dmcg", "dmcg s",
]  # fmt: skip


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--docs", help="comma-separated document file names (or parts of them)")
    p.add_argument("--no-peers", action="store_true", help="skip the peer generators")
    p.add_argument("--no-mypy", action="store_true", help="skip mypy --strict")
    p.add_argument("--timeout", type=float, default=900.0, help="per document and tool (s)")
    p.add_argument("--mypy-timeout", type=float, default=600.0, help="per document (s)")
    p.add_argument("--work", help="keep outputs here (default: a temporary directory)")
    args = p.parse_args()

    rows_by_file = manifest()
    documents = (
        sorted(f.name for f in CORPUS.glob("*") if f.suffix in (".yaml", ".yml", ".json"))
        if CORPUS.is_dir()
        else []
    )
    if not documents:
        print(f"no corpus at {CORPUS}", file=sys.stderr)
        return 2
    if args.docs:
        wanted = [w.strip() for w in args.docs.split(",") if w.strip()]
        documents = [d for d in documents if any(w == d or w in d for w in wanted)]
    elif args.quick:
        documents = [d for d in documents if d in QUICK]
    if not documents:
        print("no document selected", file=sys.stderr)
        return 2

    versions: dict[str, str] = {}
    if not args.no_peers:
        versions = install_peers()
        opc_version = versions.get("openapi-python-client", "?")
        note = "" if opc_version == OPC_VERSION else f" (not {OPC_VERSION}: not available)"
        print(
            f"peers: openapi-python-client {opc_version}{note}, "
            f"datamodel-code-generator {versions.get('datamodel-code-generator', '?')}",
            flush=True,
        )

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="openapi-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{len(documents)} documents; outputs in {work}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    rows: list[list[Any]] = []
    started = time.perf_counter()
    for file in documents:
        ours = run_ours(
            file,
            rows_by_file.get(file),
            work,
            timeout=args.timeout,
            mypy=not args.no_mypy,
            mypy_timeout=args.mypy_timeout,
        )
        opc = dmcg = None
        if not args.no_peers:
            opc = run_opc(file, work, timeout=args.timeout)
            dmcg = run_dmcg(file, work, timeout=args.timeout)
        row = row_for(file, ours, opc, dmcg)
        rows.append(row)
        results[file] = {
            "ours": asdict(ours),
            "openapi_python_client": asdict(opc) if opc else None,
            "datamodel_code_generator": asdict(dmcg) if dmcg else None,
        }
        print("  ".join(str(c) for c in row), flush=True)
        for label, error in (
            ("ours", ours.error or ours.import_error),
            ("opc", opc.error if opc else ""),
            ("dmcg", dmcg.error if dmcg else ""),
        ):
            if error:
                print(f"    {label}: {error[:300]}", flush=True)

    print()
    print(
        table(
            HEADERS,
            rows,
            title="OpenAPI corpus: ours vs openapi-python-client (opc) "
            "and datamodel-code-generator (dmcg)",
        )
    )
    print(
        "valid: openapi-spec-validator finds nothing; mypy: errors of mypy --strict; "
        "ops: generated/skipped/in the document; *: opc needed literal_enums: true; "
        "empty: dmcg found no schema to model (no output)"
    )

    n = len(documents)
    ours_ok = sum(1 for r in results.values() if r["ours"]["generated"] and r["ours"]["imported"])
    generated_ops = sum(r["ours"]["operations"] for r in results.values())
    total_ops = sum(r["ours"]["total"] for r in results.values())
    share = generated_ops / total_ops if total_ops else 0.0
    mypy_clean = sum(1 for r in results.values() if r["ours"]["mypy_errors"] == 0)
    summary_rows: list[list[Any]] = [
        ["connector-builder", f"{ours_ok}/{n}",
         round(sum(r["ours"]["seconds"] for r in results.values()), 1)],
    ]  # fmt: skip
    totals: dict[str, Any] = {
        "documents": n,
        "ours_generated_and_imported": ours_ok,
        "operations_generated": generated_ops,
        "operations_total": total_ops,
        "operations_share": share,
        "mypy_clean": None if args.no_mypy else mypy_clean,
    }
    for key, label in (
        ("openapi_python_client", "openapi-python-client"),
        ("datamodel_code_generator", "datamodel-code-generator"),
    ):
        if args.no_peers:
            continue
        ok = sum(
            1 for r in results.values() if r[key] and r[key]["generated"] and r[key]["imported"]
        )
        seconds = sum(r[key]["seconds"] for r in results.values() if r[key])
        summary_rows.append([label, f"{ok}/{n}", round(seconds, 1)])
        totals[f"{key}_generated_and_imported"] = ok
    print()
    print(table(["generator", "generated+imported", "total s"], summary_rows, title="Totals"))
    usable = sum(r["ours"]["operations"] for r in results.values() if r["ours"]["imported"])
    totals["operations_in_importable_packages"] = usable
    print(f"operations generated (ours): {generated_ops}/{total_ops} = {share:.1%}")
    if total_ops:
        print(
            f"operations in packages that import (ours): {usable}/{total_ops} = "
            f"{usable / total_ops:.1%}"
        )
    if not args.no_mypy:
        print(f"mypy --strict clean (ours): {mypy_clean}/{n}")

    ratios: list[list[Any]] = []
    for label, file in LARGE.items():
        if file not in results:
            continue
        ours_r = results[file]["ours"]
        opc_r = results[file]["openapi_python_client"]
        ours_s = ours_r["seconds"] if ours_r["generated"] else None
        opc_s = opc_r["seconds"] if opc_r and opc_r["generated"] else None
        ratio = (opc_s / ours_s) if ours_s and opc_s else None
        verdict = "-" if ratio is None else ("ok" if ratio >= RATIO_TARGET else "MISS")
        ratios.append([
            label,
            "-" if ours_s is None else round(ours_s, 1),
            "-" if opc_s is None else round(opc_s, 1),
            "-" if ratio is None else f"{ratio:.1f}x",
            verdict,
        ])  # fmt: skip
        totals.setdefault("large", {})[label] = {"ours_s": ours_s, "opc_s": opc_s, "ratio": ratio}
    if ratios:
        print()
        print(table(
            ["document", "ours s", "opc s", "opc/ours", f">= {RATIO_TARGET:.0f}x"],
            ratios,
            title="Large documents: our time vs openapi-python-client's",
        ))  # fmt: skip
    print(f"\nwall time of the benchmark: {time.perf_counter() - started:.0f}s")

    if args.json:
        write_json(
            args.json,
            "openapi_corpus",
            {
                "documents": documents,
                "peers": not args.no_peers,
                "mypy": not args.no_mypy,
                "timeout": args.timeout,
                "peer_versions": versions,
            },
            {"documents": results, "totals": totals},
        )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
