"""Benchmark: client-side CPU per call, generated connector vs raw httpx vs the official SDK.

    python tests/benchmarks/per_call.py [--quick] [--json PATH] [--calls N] [--warmup N]
                                        [--rounds N] [--profile]

The fake services run in another process (``tests.servers.runner.run_server``), so
``time.process_time()`` of this process measures the client alone. Each client is
created once and reused, so connections are pooled; the number of new TCP connections
opened while measuring is counted and reported (it should be 0).

Rows:
  POST /v1/chat/completions  raw ``httpx.Client().post(...).json()``
                             vs ``connectors.openai.OpenAI.create_chat_completion`` (returns a
                             validated pydantic ``ChatCompletion``)
                             vs official ``openai.OpenAI(max_retries=0).chat.completions.create``
  POST ..., as LLM role      the same request through the uniform role: ``OpenAI.chat(messages)``
                             (a ``ChatResult`` with content, tokens, cost, latency), in the
                             "generated" column
  GET /v1/models             raw ``httpx.Client().get(...).json()`` vs ``list_models()``
                             vs official ``models.list()``
  async POST                 ``httpx.AsyncClient`` vs ``connectors.openai.AsyncOpenAI``
                             vs official ``openai.AsyncOpenAI``; sequential awaits, one loop

Each client makes ``--warmup`` calls first, then ``--rounds`` rounds of ``--calls`` calls;
the clients take turns within a round and the order reverses every round, to cancel drift.
Reported: the median over rounds of CPU microseconds per call, and its ratio to raw httpx.
Target: generated <= 1.10x raw httpx (the official SDK is expected around 2.8x).
``--profile`` adds a cProfile of ``--calls`` calls of the generated client (top 15 by tottime).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx  # noqa: E402

from connectors.openai import AsyncOpenAI, OpenAI  # noqa: E402
from tests.benchmarks._common import parser, summary, table, verdict, write_json  # noqa: E402
from tests.servers.runner import run_server  # noqa: E402

TARGET_GENERATED = 1.10
OFFICIAL_REFERENCE = 2.8

MODEL = "gpt-fake-mini"
MESSAGES = [{"role": "user", "content": "hi"}]
# What the generated client sends (it drops None arguments and adds "stream": false).
BODY = {"model": MODEL, "messages": MESSAGES, "stream": False}
EXPECTED_CONTENT = "echo: hi"

CLIENTS = ("raw httpx", "generated", "official SDK")
PRICED = frozenset()  # MODEL is not in the OpenAI price table: its cost is None
# Untimed calls before each timed round: uvicorn closes a connection idle for 5 s (its
# keep-alive timeout), which happens to every client while the others take their turn;
# these calls re-open it, so that no connection set-up falls inside a timed round.
REWARM = 5


# --------------------------------------------------------------------------------------- #
# Counting new TCP connections (to show that every client reuses its pool)
# --------------------------------------------------------------------------------------- #

CONNECTS = [0]


def _install_connect_counter() -> None:
    original = socket.socket.connect
    original_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        CONNECTS[0] += 1
        original(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        CONNECTS[0] += 1
        return original_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------- #
# Checks of what each client returned (done once per round, outside the timed loop)
# --------------------------------------------------------------------------------------- #


def _check_chat(client: str, result: Any) -> None:
    if client == "raw httpx":
        content = result["choices"][0]["message"]["content"]
    elif type(result).__name__ == "ChatResult":  # the LLM role's chat(): the same request
        content = result.content
        if result.tokens_input is None or result.cost is None and result.model in PRICED:
            raise AssertionError(f"{client}: the role read no usage: {result!r}")
    else:
        content = result.choices[0].message.content
        if client == "generated" and type(result).__name__ != "ChatCompletion":
            raise AssertionError(f"generated client returned {type(result)!r}")
    if content != EXPECTED_CONTENT:
        raise AssertionError(f"{client}: unexpected content {content!r}")


def _check_models(client: str, result: Any) -> None:
    data = result["data"] if client == "raw httpx" else result.data
    if len(data) != 3:
        raise AssertionError(f"{client}: expected 3 models, got {len(data)}")


# --------------------------------------------------------------------------------------- #
# Measurement
# --------------------------------------------------------------------------------------- #


def _time_sync(fn: Callable[[], Any], n: int) -> tuple[float, float, Any]:
    result = None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        result = fn()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / n * 1e6, wall / n * 1e6, result


async def _time_async(fn: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float, Any]:
    result = None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        result = await fn()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / n * 1e6, wall / n * 1e6, result


class Row:
    """Per-round samples of one row (one operation) for every client."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cpu: dict[str, list[float]] = {c: [] for c in CLIENTS}
        self.wall: dict[str, list[float]] = {c: [] for c in CLIENTS}
        self.connects: dict[str, int] = dict.fromkeys(CLIENTS, 0)

    def add(self, client: str, cpu: float, wall: float, connects: int) -> None:
        self.cpu[client].append(cpu)
        self.wall[client].append(wall)
        self.connects[client] += connects

    def round_ratios(self, client: str) -> list[float]:
        return [c / r for c, r in zip(self.cpu[client], self.cpu["raw httpx"], strict=True)]

    def results(self) -> dict[str, Any]:
        raw = statistics.median(self.cpu["raw httpx"])
        out: dict[str, Any] = {}
        for client in CLIENTS:
            ratios = self.round_ratios(client)
            out[client] = {
                "cpu_us_per_call": summary(self.cpu[client]),
                "wall_us_per_call": summary(self.wall[client]),
                "ratio_vs_raw_httpx": statistics.median(self.cpu[client]) / raw,
                "ratio_of_minimums": min(self.cpu[client]) / min(self.cpu["raw httpx"]),
                "per_round_ratio": {
                    "median": statistics.median(ratios),
                    "min": min(ratios),
                    "max": max(ratios),
                },
                "new_connections_while_measuring": self.connects[client],
            }
        return out


def _order(round_index: int) -> tuple[str, ...]:
    return CLIENTS if round_index % 2 == 0 else tuple(reversed(CLIENTS))


def run_sync_row(
    row: Row,
    fns: dict[str, Callable[[], Any]],
    check: Callable[[str, Any], None],
    calls: int,
    warmup: int,
    rounds: int,
) -> None:
    for client in CLIENTS:
        _, _, result = _time_sync(fns[client], warmup)
        check(client, result)
    for r in range(rounds):
        for client in _order(r):
            _time_sync(fns[client], REWARM)
            before = CONNECTS[0]
            cpu, wall, result = _time_sync(fns[client], calls)
            row.add(client, cpu, wall, CONNECTS[0] - before)
            check(client, result)
        _progress(row, r, rounds)


async def run_async_row(
    row: Row,
    fns: dict[str, Callable[[], Awaitable[Any]]],
    check: Callable[[str, Any], None],
    calls: int,
    warmup: int,
    rounds: int,
) -> None:
    for client in CLIENTS:
        _, _, result = await _time_async(fns[client], warmup)
        check(client, result)
    for r in range(rounds):
        for client in _order(r):
            await _time_async(fns[client], REWARM)
            before = CONNECTS[0]
            cpu, wall, result = await _time_async(fns[client], calls)
            row.add(client, cpu, wall, CONNECTS[0] - before)
            check(client, result)
        _progress(row, r, rounds)


def _progress(row: Row, r: int, rounds: int) -> None:
    last = {c: row.cpu[c][-1] for c in CLIENTS}
    print(
        f"  {row.name}: round {r + 1}/{rounds}: "
        + ", ".join(f"{c} {v:.0f} µs" for c, v in last.items()),
        flush=True,
    )


# --------------------------------------------------------------------------------------- #
# The rows
# --------------------------------------------------------------------------------------- #


def sync_rows(base_url: str, calls: int, warmup: int, rounds: int) -> list[Row]:
    import openai

    v1 = base_url + "/v1"
    raw = httpx.Client(base_url=v1, headers={"Authorization": "Bearer k"}, timeout=600.0)
    gen = OpenAI(api_key="k", base_url=v1)
    off = openai.OpenAI(api_key="k", base_url=v1, max_retries=0)
    try:
        post = Row("POST /v1/chat/completions")
        run_sync_row(
            post,
            {
                "raw httpx": lambda: raw.post("/chat/completions", json=BODY).json(),
                "generated": lambda: gen.create_chat_completion(model=MODEL, messages=MESSAGES),
                "official SDK": lambda: off.chat.completions.create(model=MODEL, messages=MESSAGES),
            },
            _check_chat,
            calls,
            warmup,
            rounds,
        )
        role = Row("POST /v1/chat/completions, as LLM role chat()")
        run_sync_row(
            role,
            {
                "raw httpx": lambda: raw.post("/chat/completions", json=BODY).json(),
                "generated": lambda: gen.chat(MESSAGES, model=MODEL),
                "official SDK": lambda: off.chat.completions.create(model=MODEL, messages=MESSAGES),
            },
            _check_chat,
            calls,
            warmup,
            rounds,
        )
        get = Row("GET /v1/models")
        run_sync_row(
            get,
            {
                "raw httpx": lambda: raw.get("/models").json(),
                "generated": gen.list_models,
                "official SDK": off.models.list,
            },
            _check_models,
            calls,
            warmup,
            rounds,
        )
    finally:
        raw.close()
        gen.close()
        off.close()
    return [post, role, get]


def async_row(base_url: str, calls: int, warmup: int, rounds: int) -> Row:
    import openai

    async def run() -> Row:
        v1 = base_url + "/v1"
        raw = httpx.AsyncClient(base_url=v1, headers={"Authorization": "Bearer k"}, timeout=600.0)
        gen = AsyncOpenAI(api_key="k", base_url=v1)
        off = openai.AsyncOpenAI(api_key="k", base_url=v1, max_retries=0)

        async def raw_call() -> Any:
            return (await raw.post("/chat/completions", json=BODY)).json()

        row = Row("async POST /v1/chat/completions")
        try:
            await run_async_row(
                row,
                {
                    "raw httpx": raw_call,
                    "generated": lambda: gen.create_chat_completion(model=MODEL, messages=MESSAGES),
                    "official SDK": lambda: off.chat.completions.create(
                        model=MODEL, messages=MESSAGES
                    ),
                },
                _check_chat,
                calls,
                warmup,
                rounds,
            )
        finally:
            await raw.aclose()
            await gen.aclose()
            await off.close()
        return row

    return asyncio.run(run())


# --------------------------------------------------------------------------------------- #
# Profile
# --------------------------------------------------------------------------------------- #


def profile_generated(base_url: str, calls: int, warmup: int) -> dict[str, Any]:
    """cProfile of ``calls`` calls of the generated client, and of raw httpx for contrast."""
    v1 = base_url + "/v1"
    out: dict[str, Any] = {}
    with (
        OpenAI(api_key="k", base_url=v1) as gen,
        httpx.Client(base_url=v1, headers={"Authorization": "Bearer k"}, timeout=600.0) as raw,
    ):
        fns = {
            "generated": lambda: gen.create_chat_completion(model=MODEL, messages=MESSAGES),
            "raw httpx": lambda: raw.post("/chat/completions", json=BODY).json(),
        }
        stats: dict[str, pstats.Stats] = {}
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            # The default (wall-clock) timer: a process_time timer costs a system call per
            # event and inflates the profile ~8x. Socket send/recv therefore include waiting.
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(calls):
                fn()
            prof.disable()
            stats[name] = pstats.Stats(prof)

    buf = io.StringIO()
    st = stats["generated"]
    st.stream = buf  # type: ignore[attr-defined]
    st.sort_stats("tottime").print_stats(15)
    text = buf.getvalue()
    out["generated_top15_tottime"] = text

    # Functions on the generated path that raw httpx never calls: the connector's own cost.
    gen_funcs: dict[Any, Any] = stats["generated"].stats  # type: ignore[attr-defined]
    raw_funcs: dict[Any, Any] = stats["raw httpx"].stats  # type: ignore[attr-defined]
    this_file = str(Path(__file__).resolve())
    only = sorted(
        (
            (key, val)
            for key, val in gen_funcs.items()
            if key not in raw_funcs and key[0] != this_file
        ),
        key=lambda kv: kv[1][2],
        reverse=True,
    )
    total_gen = sum(v[2] for v in gen_funcs.values())
    total_raw = sum(v[2] for v in raw_funcs.values())
    lines = [
        f"profiled total tottime: generated {total_gen:.3f} s, raw httpx {total_raw:.3f} s "
        f"for {calls} calls each (wall-clock timer; profiler overhead inflates both)",
        "top 10 by tottime of functions the generated client calls and raw httpx does not:",
        f"  {'ncalls':>8}  {'tottime':>8}  {'cumtime':>8}  function",
    ]
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in only[:10]:
        short = filename.replace(str(Path(__file__).resolve().parents[2]) + "/", "")
        if "site-packages/" in short:
            short = short.split("site-packages/", 1)[1]
        lines.append(f"  {nc:>8}  {tt:>8.3f}  {ct:>8.3f}  {short}:{line}({func})")
    out["generated_only_top10"] = "\n".join(lines)
    out["total_tottime_s"] = {"generated": total_gen, "raw httpx": total_raw}
    return out


# --------------------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------------------- #


def report(rows: list[Row], calls: int, rounds: int) -> str:
    body = []
    for row in rows:
        raw = statistics.median(row.cpu["raw httpx"])
        for client in CLIENTS:
            cpu = statistics.median(row.cpu[client])
            ratio = cpu / raw
            ratios = row.round_ratios(client)
            if client == "generated":
                target, ok = f"<= {TARGET_GENERATED:.2f}x", verdict(ratio, TARGET_GENERATED)
            elif client == "official SDK":
                target, ok = f"(~{OFFICIAL_REFERENCE:.1f}x ref)", ""
            else:
                target, ok = "", ""
            body.append(
                [
                    row.name if client == CLIENTS[0] else "",
                    client,
                    f"{cpu:.1f}",
                    f"{min(row.cpu[client]):.1f}",
                    f"{statistics.median(row.wall[client]):.1f}",
                    f"{ratio:.2f}x",
                    f"{min(ratios):.2f}-{max(ratios):.2f}x" if client != "raw httpx" else "",
                    target,
                    ok,
                    row.connects[client],
                ]
            )
    return table(
        [
            "row",
            "client",
            "CPU µs/call",
            "min µs",
            "wall µs/call",
            "vs raw",
            "per-round",
            "target",
            "",
            "new conns",
        ],
        body,
        title=(
            f"Client CPU per call (process_time of the client process; median of {rounds} "
            f"rounds x {calls} calls)"
        ),
    )


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, help="calls per client per round (default 2000)")
    p.add_argument("--warmup", type=int, help="warm-up calls per client (default 200)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5)")
    p.add_argument(
        "--profile", action="store_true", help="also cProfile --calls calls of the generated client"
    )
    p.add_argument("--no-async", action="store_true", help="skip the async row")
    args = p.parse_args(argv)
    calls = args.calls or (200 if args.quick else 2000)
    warmup = args.warmup if args.warmup is not None else (20 if args.quick else 200)
    rounds = args.rounds or (2 if args.quick else 5)

    _install_connect_counter()
    started = time.perf_counter()
    print(
        f"per-call benchmark: {rounds} rounds x {calls} calls per client "
        f"after {warmup} warm-up calls",
        flush=True,
    )
    profile: dict[str, Any] | None = None
    with run_server() as base_url:
        rows = sync_rows(base_url, calls, warmup, rounds)
        if not args.no_async:
            rows.append(async_row(base_url, calls, warmup, rounds))
        if args.profile:
            profile = profile_generated(base_url, calls, warmup)
    elapsed = time.perf_counter() - started

    print()
    print(report(rows, calls, rounds))
    print(
        f"\n(total run time {elapsed:.0f} s; 'vs raw' is the ratio of the medians, 'per-round' "
        "the range of the per-round ratios; 'new conns' counts TCP connects while measuring)"
    )
    print(
        "ratio of the per-client minimums, generated / raw httpx: "
        + ", ".join(
            f"{row.name} {min(row.cpu['generated']) / min(row.cpu['raw httpx']):.2f}x"
            for row in rows
        )
    )
    if profile is not None:
        print(
            f"\ncProfile of {calls} calls of OpenAI.create_chat_completion, top 15 by "
            "tottime (wall-clock timer: socket send/recv include waiting for the server):"
        )
        print(profile["generated_top15_tottime"].rstrip())
        print()
        print(profile["generated_only_top10"])

    results: dict[str, Any] = {row.name: row.results() for row in rows}
    write_json(
        args.json,
        "per_call",
        {
            "calls": calls,
            "warmup": warmup,
            "rounds": rounds,
            "quick": args.quick,
            "clock": "time.process_time (client process only)",
        },
        {
            "rows": results,
            "targets": {
                "generated_vs_raw_httpx": TARGET_GENERATED,
                "official_sdk_reference": OFFICIAL_REFERENCE,
            },
            "verdicts": {
                name: verdict(r["generated"]["ratio_vs_raw_httpx"], TARGET_GENERATED)
                for name, r in results.items()
            },
            "profile": profile,
            "elapsed_s": elapsed,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
