"""Benchmark: async load through the generated client vs raw httpx, leaks, rate limiting.

    python tests/benchmarks/load.py [--quick] [--json PATH] [--requests N]
                                    [--concurrency C] [--rounds R] [--rate-requests N]

Against the local fake services (``tests.servers.runner.run_server``, another process):

* **throughput**: ``--requests`` (default 10,000) ``POST /v1/chat/completions`` at
  ``--concurrency`` (default 100) through ``connectors.openai.AsyncOpenAI
  .create_chat_completion`` (a validated ``ChatCompletion`` each) and through a raw
  ``httpx.AsyncClient`` doing the same (``.json()`` each), in the same run, in
  alternating rounds (``--rounds``, default 2 each) so that drift affects both alike.
  Reported: requests/s (best and median round), client CPU per request, and the ratio
  generated / raw (target >= 0.90x);
* **no leaks**: open file descriptors (``/proc/self/fd``) and sockets before, at the
  peak and after ``aclose()`` (back to the baseline), the peak number of sockets (at most
  the concurrency), the TCP connections opened (with httpx's default pool, which keeps 20
  idle connections, a concurrency of 100 makes most requests open a new one; ``--keepalive
  N`` gives both clients a larger pool), and the resident memory
  after each batch of 1,000 requests (flat: the last batch within 10 MB of the first);
* **rate limiter**: a client whose ``Service`` has ``rate_limit=(200.0, 1.0)`` (a
  subclass of ``AsyncOpenAI`` with ``dataclasses.replace(SERVICE, ...)``) sends
  ``--rate-requests`` (default 1,000) requests at concurrency 100; its achieved rate
  must be within 5 % of 200/s.

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import socket
import statistics
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx  # noqa: E402

from connectors.openai import AsyncOpenAI  # noqa: E402
from connectors.openai.client import SERVICE  # noqa: E402
from tests.benchmarks._common import parser, table, verdict, write_json  # noqa: E402
from tests.servers.runner import run_server  # noqa: E402

TARGET_RATIO = 0.90
RATE = 200.0
RATE_TOLERANCE = 0.05
RSS_GROWTH_LIMIT_MB = 10.0
BATCH = 1000

MODEL = "gpt-fake-mini"
MESSAGES = [{"role": "user", "content": "hi"}]
BODY = {"model": MODEL, "messages": MESSAGES, "stream": False}


class RateLimitedOpenAI(AsyncOpenAI):
    """The generated client with a client-side rate limit of 200 requests/s, burst 1."""

    _service = dataclasses.replace(SERVICE, rate_limit=(RATE, 1.0))


# --------------------------------------------------------------------------------------- #
# What the process holds
# --------------------------------------------------------------------------------------- #


def fds() -> tuple[int, int]:
    """(open file descriptors, of which sockets)."""
    total = sockets = 0
    for entry in os.scandir("/proc/self/fd"):
        total += 1
        try:
            if os.readlink(entry.path).startswith("socket:"):
                sockets += 1
        except OSError:  # the directory's own fd, closed meanwhile
            pass
    return total, sockets


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


CONNECTS = [0]


def count_connects() -> None:
    """Count TCP connects (asyncio connects non-blocking sockets with ``connect``)."""
    original = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        CONNECTS[0] += 1
        original(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------- #
# Load
# --------------------------------------------------------------------------------------- #


async def run_load(
    call: Callable[[], Awaitable[Any]],
    check: Callable[[Any], None],
    requests: int,
    concurrency: int,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """``requests`` calls by ``concurrency`` workers; wall and CPU seconds, peak fds."""
    remaining = [requests]
    done = [0]
    peak = [0, 0]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            result = await call()
            check(result)
            done[0] += 1
            if done[0] % BATCH == 0:
                total, sockets = fds()
                peak[0], peak[1] = max(peak[0], total), max(peak[1], sockets)
                if on_batch is not None:
                    on_batch(done[0])

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    total, sockets = fds()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "rps": requests / wall,
        "cpu_us_per_request": cpu / requests * 1e6,
        "peak_fds": max(peak[0], total),
        "peak_sockets": max(peak[1], sockets),
    }


def _check_generated(result: Any) -> None:
    if result.choices[0].message.content != "echo: hi":
        raise AssertionError(f"unexpected answer {result!r}")


def _check_raw(result: Any) -> None:
    if result["choices"][0]["message"]["content"] != "echo: hi":
        raise AssertionError(f"unexpected answer {result!r}")


async def throughput(
    base_url: str, requests: int, concurrency: int, rounds: int, keepalive: int | None
) -> dict[str, Any]:
    pool: dict[str, Any] = {}
    if keepalive:
        pool["limits"] = httpx.Limits(
            max_connections=max(100, concurrency), max_keepalive_connections=keepalive
        )
    v1 = base_url + "/v1"
    out: dict[str, Any] = {"rounds": {"raw httpx": [], "generated": []}}
    baseline_fds = fds()
    rss: list[tuple[int, float]] = []
    connects_before = CONNECTS[0]
    for r in range(rounds):
        for who in ("raw httpx", "generated") if r % 2 == 0 else ("generated", "raw httpx"):
            gc.collect()
            before = fds()
            connects = CONNECTS[0]
            if who == "raw httpx":
                raw = httpx.AsyncClient(
                    base_url=v1, headers={"Authorization": "Bearer k"}, timeout=60.0, **pool
                )

                async def call_raw(client: httpx.AsyncClient = raw) -> Any:
                    response = await client.post("/chat/completions", json=BODY)
                    response.raise_for_status()
                    return response.json()

                stats = await run_load(call_raw, _check_raw, requests, concurrency)
                await raw.aclose()
            else:
                given = httpx.AsyncClient(base_url=v1, **pool) if pool else None
                gen = AsyncOpenAI(api_key="k", base_url=v1, timeout=60.0, http_client=given)

                def on_batch(n: int) -> None:
                    rss.append((len(rss) + 1, rss_mb()))

                stats = await run_load(
                    lambda c=gen: c.create_chat_completion(model=MODEL, messages=MESSAGES),
                    _check_generated,
                    requests,
                    concurrency,
                    on_batch if r == 0 else None,
                )
                await gen.aclose()
                if given is not None:
                    await given.aclose()
            gc.collect()
            after = fds()
            stats.update(
                fds_before=before[0],
                fds_after=after[0],
                sockets_before=before[1],
                sockets_after=after[1],
                connections_opened=CONNECTS[0] - connects,
            )
            out["rounds"][who].append(stats)
            print(
                f"  round {r + 1}/{rounds} {who}: {stats['rps']:.0f} req/s, "
                f"{stats['cpu_us_per_request']:.0f} µs CPU/request, "
                f"{stats['connections_opened']} connections, "
                f"fds {before[0]} -> peak {stats['peak_fds']} -> {after[0]}",
                flush=True,
            )
    out["baseline_fds"] = baseline_fds
    out["final_fds"] = fds()
    out["connections_opened_total"] = CONNECTS[0] - connects_before
    out["rss_mb_by_batch"] = rss
    return out


async def rate_limited(base_url: str, requests: int, concurrency: int) -> dict[str, Any]:
    client = RateLimitedOpenAI(api_key="k", base_url=base_url + "/v1", timeout=60.0)
    starts: list[float] = []
    original = client._http.send

    async def send(request: httpx.Request, **kw: Any) -> httpx.Response:
        starts.append(time.perf_counter())
        return await original(request, **kw)

    client._http.send = send  # type: ignore[method-assign]
    stats = await run_load(
        lambda: client.create_chat_completion(model=MODEL, messages=MESSAGES),
        _check_generated,
        requests,
        concurrency,
    )
    await client.aclose()
    # Requests sent per second between the first and the last send.
    achieved = (len(starts) - 1) / (max(starts) - min(starts))
    return {
        "requests": requests,
        "set_rate": RATE,
        "achieved_rate": achieved,
        "error": achieved / RATE - 1,
        "wall_s": stats["wall_s"],
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, help="requests per client per round (default 10000)")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--rounds", type=int, help="rounds per client (default 2; --quick 1)")
    p.add_argument("--rate-requests", type=int, help="requests for the rate limiter (1000)")
    p.add_argument(
        "--keepalive",
        type=int,
        help="give both clients a pool keeping this many idle connections (default: as "
        "shipped, httpx's 20; the generated client gets it through http_client=)",
    )
    args = p.parse_args(argv)
    requests = args.requests or (2000 if args.quick else 10_000)
    rounds = args.rounds or (1 if args.quick else 2)
    rate_requests = args.rate_requests or (400 if args.quick else 1000)
    concurrency = args.concurrency

    count_connects()
    print(
        f"load benchmark: {requests} requests x {rounds} rounds per client at concurrency "
        f"{concurrency}; rate limiter {RATE:g}/s over {rate_requests} requests",
        flush=True,
    )
    warnings.simplefilter("always", ResourceWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with run_server() as base_url:
            load = asyncio.run(throughput(base_url, requests, concurrency, rounds, args.keepalive))
            rate = asyncio.run(rate_limited(base_url, rate_requests, concurrency))
        gc.collect()
    resource_warnings = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]

    def best(who: str, key: str) -> float:
        return max(r[key] for r in load["rounds"][who])

    def med(who: str, key: str) -> float:
        return statistics.median(r[key] for r in load["rounds"][who])

    ratio = best("generated", "rps") / best("raw httpx", "rps")
    median_ratio = med("generated", "rps") / med("raw httpx", "rps")
    cpu_ratio = med("generated", "cpu_us_per_request") / med("raw httpx", "cpu_us_per_request")
    rss = load["rss_mb_by_batch"]
    rss_growth = rss[-1][1] - rss[0][1] if len(rss) > 1 else 0.0
    leaked_fds = load["final_fds"][0] - load["baseline_fds"][0]
    leaked_sockets = load["final_fds"][1] - load["baseline_fds"][1]
    max_connections = max(r["connections_opened"] for rs in load["rounds"].values() for r in rs)
    peak_sockets = max(r["peak_sockets"] for rs in load["rounds"].values() for r in rs)
    pool = f"keep-alive {args.keepalive}" if args.keepalive else "httpx defaults, keep-alive 20"
    rate_ok = abs(rate["error"]) <= RATE_TOLERANCE

    rows = [
        [
            "throughput, raw httpx.AsyncClient",
            f"{best('raw httpx', 'rps'):.0f} req/s",
            f"median {med('raw httpx', 'rps'):.0f}",
            "(baseline)",
            "",
        ],
        [
            "throughput, generated AsyncOpenAI",
            f"{best('generated', 'rps'):.0f} req/s",
            f"median {med('generated', 'rps'):.0f}",
            "",
            "",
        ],
        [
            "  generated / raw (best rounds)",
            f"{ratio:.2f}x",
            f"median rounds {median_ratio:.2f}x",
            f">= {TARGET_RATIO:.2f}x",
            "ok" if ratio >= TARGET_RATIO else "MISS",
        ],
        [
            "client CPU per request, raw",
            f"{med('raw httpx', 'cpu_us_per_request'):.0f} µs",
            "",
            "",
            "",
        ],
        [
            "client CPU per request, generated",
            f"{med('generated', 'cpu_us_per_request'):.0f} µs",
            f"{cpu_ratio:.2f}x raw",
            "",
            "",
        ],
        [
            "open fds: baseline -> after aclose",
            f"{load['baseline_fds'][0]} -> {load['final_fds'][0]}",
            f"peak {max(r['peak_fds'] for rs in load['rounds'].values() for r in rs)}",
            "no growth",
            "ok" if leaked_fds <= 0 else "MISS",
        ],
        [
            "sockets: baseline -> after aclose",
            f"{load['baseline_fds'][1]} -> {load['final_fds'][1]}",
            f"peak {max(r['peak_sockets'] for rs in load['rounds'].values() for r in rs)}",
            "no growth",
            "ok" if leaked_sockets <= 0 else "MISS",
        ],
        [
            "TCP connections opened per round (max)",
            max_connections,
            f"peak sockets {peak_sockets} (pool: {pool})",
            f"peak sockets <= {concurrency} + baseline",
            "ok" if peak_sockets <= concurrency + load["baseline_fds"][1] else "MISS",
        ],
        [
            "RSS by batch of 1000 (generated, round 1)",
            f"{rss[0][1]:.1f} -> {rss[-1][1]:.1f} MB" if rss else "-",
            f"+{rss_growth:.1f} MB over {len(rss)} batches",
            f"<= +{RSS_GROWTH_LIMIT_MB:g} MB",
            verdict(rss_growth, RSS_GROWTH_LIMIT_MB),
        ],
        [
            "rate limiter: set / achieved",
            f"{RATE:g} / {rate['achieved_rate']:.1f} req/s",
            f"{rate['error'] * 100:+.1f} %",
            f"within ±{RATE_TOLERANCE * 100:g} %",
            "ok" if rate_ok else "MISS",
        ],
        ["ResourceWarnings", len(resource_warnings), "", "0", verdict(len(resource_warnings), 0)],
    ]
    print()
    print(
        table(
            ["measure", "value", "detail", "target", ""],
            rows,
            title=f"Async load: {requests} requests at concurrency {concurrency}, "
            f"{rounds} round(s) per client",
        )
    )
    if rss:
        print("\nRSS after each batch (MB): " + ", ".join(f"{m:.1f}" for _, m in rss))
    for message in resource_warnings[:5]:
        print(f"ResourceWarning: {message}")

    verdicts = {
        "throughput_ratio": "ok" if ratio >= TARGET_RATIO else "MISS",
        "fds": "ok" if leaked_fds <= 0 else "MISS",
        "sockets": "ok" if leaked_sockets <= 0 else "MISS",
        "sockets_peak": "ok" if peak_sockets <= concurrency + load["baseline_fds"][1] else "MISS",
        "rss": verdict(rss_growth, RSS_GROWTH_LIMIT_MB),
        "rate_limiter": "ok" if rate_ok else "MISS",
        "resource_warnings": verdict(len(resource_warnings), 0),
    }
    write_json(
        args.json,
        "load",
        {
            "requests": requests,
            "concurrency": concurrency,
            "rounds": rounds,
            "rate_requests": rate_requests,
            "quick": args.quick,
        },
        {
            "rps": {"raw httpx": best("raw httpx", "rps"), "generated": best("generated", "rps")},
            "rps_median": {
                "raw httpx": med("raw httpx", "rps"),
                "generated": med("generated", "rps"),
            },
            "ratio_generated_vs_raw": ratio,
            "ratio_generated_vs_raw_median": median_ratio,
            "cpu_us_per_request": {
                "raw httpx": med("raw httpx", "cpu_us_per_request"),
                "generated": med("generated", "cpu_us_per_request"),
            },
            "rounds": load["rounds"],
            "fds": {"baseline": load["baseline_fds"], "final": load["final_fds"]},
            "connections_opened_max_per_round": max_connections,
            "peak_sockets": peak_sockets,
            "pool": pool,
            "rss_mb_by_batch": rss,
            "rss_growth_mb": rss_growth,
            "rate_limiter": rate,
            "resource_warnings": resource_warnings,
            "targets": {
                "ratio": TARGET_RATIO,
                "rate_tolerance": RATE_TOLERANCE,
                "rss_growth_mb": RSS_GROWTH_LIMIT_MB,
            },
            "verdicts": verdicts,
        },
    )
    return 0 if all(v == "ok" for v in verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
