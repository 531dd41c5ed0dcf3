"""Benchmark: import time of generated connectors, in fresh interpreters.

    python tests/benchmarks/import_time.py [--quick] [--json PATH] [--samples N]

Every sample is a new ``python`` subprocess that times *only* the statement under test with
``time.perf_counter()`` (interpreter start-up and ``site`` are not counted; set-up such as
the canned JSON is done before the timer starts). Cases are interleaved, their order
rotating each round, so that drift and cache effects fall on all of them alike. One
untimed warm-up run per case first makes sure bytecode caches exist.

Besides bare imports, two rows report what lazy loading defers: constructing a client,
and importing plus decoding a first validated ``ChatCompletion`` with the connector's own
models (the official SDK gets the same two rows for comparison).

Target: ``import connectors.openai`` <= 1.30x ``import httpx, pydantic``.
The modules ``import connectors.openai`` loads beyond the baseline are listed, and none of
the generator's dependencies may be among them (FAIL, exit status 1, otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import parser, summary, table, verdict, write_json  # noqa: E402

TARGET_RATIO = 1.30
FORBIDDEN = (
    "jinja2",
    "black",
    "click",
    "yaml",
    "datamodel_code_generator",
    "openapi_spec_validator",
)

CANNED_CHAT_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-canned",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-fake-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "echo: hi"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    },
    separators=(",", ":"),
)

_CANNED_SETUP = f"CANNED = {CANNED_CHAT_COMPLETION.encode()!r}"

# (key, label, untimed set-up, timed statement)
CASES: list[tuple[str, str, str, str]] = [
    ("connectors_openai", "import connectors.openai", "", "import connectors.openai"),
    ("connectors_github", "import connectors.github", "", "import connectors.github"),
    ("baseline", "import httpx, pydantic   [baseline]", "", "import httpx, pydantic"),
    (
        "baseline_no_httpx_cli",
        "import httpx, pydantic   (httpx._main blocked, as builder.runtime does)",
        "sys.modules['httpx._main'] = None",
        "import httpx, pydantic",
    ),
    (
        "httpx_basemodel",
        "import httpx; from pydantic import BaseModel",
        "",
        "import httpx\nfrom pydantic import BaseModel",
    ),
    ("openai_sdk", "import openai   (official SDK)", "", "import openai"),
    ("anthropic_sdk", "import anthropic   (official SDK)", "", "import anthropic"),
    ("connectors_anthropic", "import connectors.anthropic", "", "import connectors.anthropic"),
    ("connectors_cohere", "import connectors.cohere", "", "import connectors.cohere"),
    ("connectors_mistral", "import connectors.mistral", "", "import connectors.mistral"),
    ("connectors_ollama", "import connectors.ollama", "", "import connectors.ollama"),
    (
        "connectors_openai_compatible",
        "import connectors.openai_compatible",
        "",
        "import connectors.openai_compatible",
    ),
    ("connectors_postgres", "import connectors.postgres", "", "import connectors.postgres"),
    (
        "connectors_openai_construct",
        "from connectors.openai import OpenAI; OpenAI(api_key='k')",
        "",
        "from connectors.openai import OpenAI\nOpenAI(api_key='k')",
    ),
    (
        "httpx_client_construct",
        "import httpx; httpx.Client()   [construction baseline]",
        "",
        "import httpx\nhttpx.Client()",
    ),
    (
        "openai_sdk_construct",
        "import openai; openai.OpenAI(api_key='k')   (official SDK)",
        "",
        "import openai\nopenai.OpenAI(api_key='k')",
    ),
    (
        "connectors_openai_first_decode",
        "import connectors.openai + first validated ChatCompletion decode",
        _CANNED_SETUP,
        "import connectors.openai\n"
        "from connectors.openai.models import ChatCompletion\n"
        "ChatCompletion.model_validate_json(CANNED)",
    ),
    (
        "openai_sdk_first_decode",
        "import openai + first ChatCompletion decode   (official SDK)",
        _CANNED_SETUP,
        "import openai\n"
        "from openai.types.chat import ChatCompletion\n"
        "ChatCompletion.model_validate_json(CANNED)",
    ),
]

CHILD = """
import sys, time, json
exec(sys.argv[1])
_code = compile(sys.argv[2], "<bench>", "exec")
_before = set(sys.modules)
_t0 = time.perf_counter()
exec(_code, {"CANNED": globals().get("CANNED")})
_t1 = time.perf_counter()
_new = sorted(set(sys.modules) - _before)
print(json.dumps({"seconds": _t1 - _t0, "modules": _new}))
"""


def _child_env() -> dict[str, str]:
    env = os.environ.copy()
    # Neither client should see a key or base URL from the environment.
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PYTHONPROFILEIMPORTTIME"):
        env.pop(name, None)
    return env


def run_case(setup: str, stmt: str, cwd: str, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, setup, stmt],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child failed for {stmt!r}:\n{proc.stderr}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def top_level(modules: list[str] | set[str]) -> set[str]:
    return {m.split(".", 1)[0] for m in modules}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, help="fresh interpreters per case (default 20)")
    args = p.parse_args(argv)
    samples = args.samples or (3 if args.quick else 20)

    env = _child_env()
    times: dict[str, list[float]] = {key: [] for key, *_ in CASES}
    modules: dict[str, set[str]] = {key: set() for key, *_ in CASES}
    print(
        f"import-time benchmark: {len(CASES)} cases x {samples} fresh interpreters, interleaved",
        flush=True,
    )
    # A neutral working directory: imports resolve as they would for a user of the
    # installed packages, not through the repository root on sys.path.
    with tempfile.TemporaryDirectory(prefix="bench-import-") as cwd:
        for _key, _label, setup, stmt in CASES:  # warm-up: bytecode caches
            run_case(setup, stmt, cwd, env)
        for r in range(samples):
            k = r % len(CASES)
            for key, _label, setup, stmt in CASES[k:] + CASES[:k]:
                data = run_case(setup, stmt, cwd, env)
                times[key].append(data["seconds"] * 1000.0)
                modules[key].update(data["modules"])
            if (r + 1) % 5 == 0 or r + 1 == samples:
                print(f"  round {r + 1}/{samples}", flush=True)

    stats = {key: summary(v) for key, v in times.items()}
    base = stats["baseline"]["median"]
    lean = stats["baseline_no_httpx_cli"]["median"]

    rows = []
    for key, label, _setup, _stmt in CASES:
        s = stats[key]
        ratio = s["median"] / base
        target = verdict_cell = ""
        if key == "connectors_openai":
            target = f"<= {TARGET_RATIO:.2f}x"
            verdict_cell = verdict(ratio, TARGET_RATIO)
        rows.append(
            [
                label,
                s["median"],
                s["min"],
                f"{ratio:.2f}x",
                f"{s['median'] / lean:.2f}x",
                len(top_level(modules[key])),
                target,
                verdict_cell,
            ]
        )
    print()
    print(
        table(
            [
                "statement (timed inside a fresh interpreter)",
                "median ms",
                "min ms",
                "vs baseline",
                "vs no-cli baseline",
                "top-level mods",
                "target",
                "",
            ],
            rows,
            title=f"Import time, {samples} fresh interpreters per case",
        )
    )

    # --- what the connector loads beyond the baseline --------------------------------
    conn_top = top_level(modules["connectors_openai"])
    base_top = top_level(modules["baseline"])
    extra = sorted(conn_top - base_top)
    missing = sorted(base_top - conn_top)
    decode_extra = sorted(top_level(modules["connectors_openai_first_decode"]) - base_top)
    print()
    print(
        "top-level modules `import connectors.openai` loads that `import httpx, pydantic` "
        f"doesn't: {', '.join(extra) or 'none'}"
    )
    print(
        "top-level modules `import httpx, pydantic` loads that `import connectors.openai` "
        f"doesn't: {', '.join(missing) or 'none'}"
    )
    print(
        "top-level modules `import connectors.openai` + first decode loads beyond "
        f"`import httpx, pydantic`: {', '.join(decode_extra) or 'none'}"
    )

    failures: dict[str, list[str]] = {}
    for key in (
        "connectors_openai",
        "connectors_github",
        "connectors_openai_construct",
        "connectors_openai_first_decode",
    ):
        bad = sorted(set(FORBIDDEN) & top_level(modules[key]))
        if bad:
            failures[key] = bad
    bad_extra = sorted(set(FORBIDDEN) & set(extra))
    if bad_extra:
        print(
            f"FAIL: import connectors.openai loads generator dependencies beyond the "
            f"baseline: {', '.join(bad_extra)}"
        )
    for key, bad in failures.items():
        print(f"FAIL: {key} loads generator dependencies: {', '.join(bad)}")
    if not failures and not bad_extra:
        print(f"ok: none of {', '.join(FORBIDDEN)} is loaded by any connector case")

    construct_extra = sorted(
        top_level(modules["connectors_openai_construct"])
        - top_level(modules["httpx_client_construct"])
    )
    print(
        "top-level modules `OpenAI(api_key='k')` (with its import) loads beyond "
        f"`import httpx; httpx.Client()`: {', '.join(construct_extra) or 'none'}"
    )
    httpx_client_extra = sorted(top_level(modules["httpx_client_construct"]) - base_top)
    print(
        "top-level modules `import httpx; httpx.Client()` loads beyond `import httpx, pydantic`"
        f" (httpcore's imports at client construction): {', '.join(httpx_client_extra)}"
    )

    ratio = stats["connectors_openai"]["median"] / base
    construct_ratio = (
        stats["connectors_openai_construct"]["median"] / stats["httpx_client_construct"]["median"]
    )
    print()
    print(
        "from connectors.openai import OpenAI; OpenAI(api_key='k') / "
        f"import httpx; httpx.Client() = {construct_ratio:.2f}x (no target)"
    )
    print(
        f"connectors.openai / baseline = {ratio:.2f}x (target <= {TARGET_RATIO:.2f}x: "
        f"{verdict(ratio, TARGET_RATIO)}); vs the no-cli baseline: "
        f"{stats['connectors_openai']['median'] / lean:.2f}x"
    )

    write_json(
        args.json,
        "import_time",
        {
            "samples": samples,
            "quick": args.quick,
            "cases": {
                key: {"label": label, "setup": setup, "statement": stmt}
                for key, label, setup, stmt in CASES
            },
        },
        {
            "milliseconds": stats,
            "ratio_vs_baseline": {k: stats[k]["median"] / base for k in stats},
            "ratio_vs_no_cli_baseline": {k: stats[k]["median"] / lean for k in stats},
            "construct_ratio_vs_httpx_client": construct_ratio,
            "target_ratio": TARGET_RATIO,
            "verdict": verdict(ratio, TARGET_RATIO),
            "extra_top_level_modules": extra,
            "baseline_only_top_level_modules": missing,
            "first_decode_extra_top_level_modules": decode_extra,
            "construct_extra_top_level_modules_vs_httpx_client": construct_extra,
            "httpx_client_extra_top_level_modules": httpx_client_extra,
            "forbidden_loaded": failures,
            "modules": {k: sorted(v) for k, v in modules.items()},
        },
    )
    return 1 if failures or bad_extra else 0


if __name__ == "__main__":
    sys.exit(main())
