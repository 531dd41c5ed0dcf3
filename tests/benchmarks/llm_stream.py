"""Benchmark: streaming throughput (chunks/s) and client CPU per chunk of a streamed chat.

    python tests/benchmarks/llm_stream.py [--quick] [--json PATH] [--chunks N] [--rounds N]

One local OpenAI-style server (``tests/servers/fake_services.py``, another process) streams
``--chunks`` SSE chunks per request (``x-chunks`` header). Clients, taking turns each round:

  raw httpx          ``client.stream(...)``, ``iter_lines()``, ``json.loads`` of each data
                     line, the delta's text picked out by hand
  generated          ``connectors.openai.OpenAI.stream_chat_completion`` (each chunk a
                     validated pydantic ``ChatCompletionChunk``)
  LLM role           ``OpenAI.stream(messages)``: text chunks, usage and cost at the end
  LLM role traced    the same with a tracer writing to memory (the stream traced at its end)
  official SDK       ``openai.OpenAI(max_retries=0).chat.completions.create(stream=True)``

Reported: median chunks per second (wall) and client CPU µs per chunk
(``time.process_time``), with ratios to raw httpx. No target: the issue asks for the
comparison (raw httpx picks the text out of plain dicts; the others validate each chunk).

A second table does the same for short streams (``--short`` chunks, ``--streams`` a round),
what a chat answer mostly is: client CPU µs per stream, and the TCP connections each client
opened per 100 streams (``socket.create_connection`` counted). A client that closes its
response at the end marker without reading the body's end loses its connection, and
opens (against a real service: handshakes) a new one for every stream.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx  # noqa: E402

from tests.benchmarks._common import parser, summary, table, write_json  # noqa: E402
from tests.servers.runner import run_server  # noqa: E402

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hi there"}]


def _raw(base: str, chunks: int) -> Callable[[], int]:
    client = httpx.Client(headers={"x-chunks": str(chunks)}, timeout=60)
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}

    def run() -> int:
        count = 0
        with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                choices = event.get("choices") or []
                if choices and choices[0].get("delta", {}).get("content") is not None:
                    count += 1
        return count

    return run


def _generated(base: str, chunks: int) -> Callable[[], int]:
    from connectors.openai import OpenAI

    client = OpenAI(
        api_key="sk-bench",
        base_url=f"{base}/v1",
        http_client=httpx.Client(headers={"x-chunks": str(chunks)}, timeout=60),
    )

    def run() -> int:
        count = 0
        with client.stream_chat_completion(model=MODEL, messages=MESSAGES) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content is not None:
                    count += 1
        return count

    return run


def _role(base: str, chunks: int, traced: bool) -> Callable[[], int]:
    from connectors.openai import OpenAI

    kwargs: dict[str, Any] = {}
    if traced:
        from builder.runtime.tracing import MemorySink, Tracer

        kwargs["tracer"] = Tracer(MemorySink(max_size=1000))
    client = OpenAI(
        api_key="sk-bench",
        base_url=f"{base}/v1",
        http_client=httpx.Client(headers={"x-chunks": str(chunks)}, timeout=60),
        **kwargs,
    )

    def run() -> int:
        count = 0
        with client.stream(MESSAGES, model=MODEL) as stream:
            for _text in stream:
                count += 1
        return count

    return run


def _official(base: str, chunks: int) -> Callable[[], int] | None:
    try:
        import openai
    except ImportError:
        return None
    client = openai.OpenAI(
        api_key="sk-bench",
        base_url=f"{base}/v1",
        max_retries=0,
        default_headers={"x-chunks": str(chunks)},
    )

    def run() -> int:
        count = 0
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)  # type: ignore[call-overload]
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content is not None:
                count += 1
        return count

    return run


def _clients(base: str, chunks: int) -> dict[str, Callable[[], int]]:
    clients: dict[str, Callable[[], int]] = {
        "raw httpx": _raw(base, chunks),
        "generated": _generated(base, chunks),
        "LLM role": _role(base, chunks, traced=False),
        "LLM role traced": _role(base, chunks, traced=True),
    }
    official = _official(base, chunks)
    if official is not None:
        clients["official SDK"] = official
    for run in clients.values():  # warm up: connections, validators, imports
        got = run()
        if got != chunks:
            raise SystemExit(f"expected {chunks} text chunks, got {got}")
    return clients


class _Connections:
    """Counts the TCP connections opened (httpcore's sync backend opens them with
    ``socket.create_connection``)."""

    def __init__(self) -> None:
        self.opened = 0
        self._create = socket.create_connection

    def __enter__(self) -> _Connections:
        def counted(*args: Any, **kwargs: Any) -> socket.socket:
            self.opened += 1
            return self._create(*args, **kwargs)

        socket.create_connection = counted  # type: ignore[assignment]
        return self

    def __exit__(self, *exc_info: object) -> None:
        socket.create_connection = self._create


def _measure(
    clients: dict[str, Callable[[], int]], rounds: int, streams: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, int]]:
    """Per client: chunks/s (wall) and CPU µs per round's stream, and connections opened;
    the clients take turns, the order reversed every round."""
    wall: dict[str, list[float]] = {name: [] for name in clients}
    cpu: dict[str, list[float]] = {name: [] for name in clients}
    opened = dict.fromkeys(clients, 0)
    order = list(clients)
    for round_ in range(rounds):
        for name in order if round_ % 2 == 0 else reversed(order):
            run = clients[name]
            with _Connections() as connections:
                c0, w0 = time.process_time(), time.perf_counter()
                count = sum(run() for _ in range(streams))
                c1, w1 = time.process_time(), time.perf_counter()
            opened[name] += connections.opened
            wall[name].append(count / (w1 - w0))
            cpu[name].append((c1 - c0) * 1e6 / (count if streams == 1 else streams))
    return wall, cpu, opened


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--short", type=int, default=20, help="chunks of a short stream (20)")
    p.add_argument("--streams", type=int, default=100, help="short streams a round (100)")
    args = p.parse_args()
    chunks = 200 if args.quick else args.chunks
    rounds = 2 if args.quick else args.rounds
    streams = 10 if args.quick else args.streams
    with run_server() as base:
        wall, cpu, _ = _measure(_clients(base, chunks), rounds, 1)
        short_wall, short_cpu, opened = _measure(_clients(base, args.short), rounds, streams)
    base_cpu = summary(cpu["raw httpx"])["median"]
    base_short = summary(short_cpu["raw httpx"])["median"]
    rows, short_rows = [], []
    results: dict[str, Any] = {"chunks": chunks, "rounds": rounds, "clients": {}, "short": {}}
    for name in cpu:
        rate, per_chunk = summary(wall[name]), summary(cpu[name])
        ratio = per_chunk["median"] / base_cpu
        rows.append([name, f"{rate['median']:.0f}", f"{per_chunk['median']:.1f}", f"{ratio:.2f}x"])
        results["clients"][name] = {
            "chunks_per_s": rate,
            "cpu_us_per_chunk": per_chunk,
            "ratio": ratio,
        }
        per_stream = summary(short_cpu[name])
        short_ratio = per_stream["median"] / base_short
        per_100 = opened[name] * 100 / (rounds * streams)
        short_rows.append(
            [name, f"{per_stream['median']:.0f}", f"{short_ratio:.2f}x", f"{per_100:.0f}"]
        )
        results["short"][name] = {
            "cpu_us_per_stream": per_stream,
            "ratio": short_ratio,
            "connections_per_100_streams": per_100,
        }
    print(
        table(
            ["client", "chunks/s", "CPU µs/chunk", "vs raw"],
            rows,
            title=f"Streamed chat, {chunks} chunks per request, median of {rounds} rounds",
        )
    )
    print()
    print(
        table(
            ["client", "CPU µs/stream", "vs raw", "connections per 100 streams"],
            short_rows,
            title=f"Short streams: {args.short} chunks, {streams} streams a round, "
            f"median of {rounds} rounds",
        )
    )
    if args.json:
        write_json(
            args.json,
            "llm_stream",
            {"chunks": chunks, "rounds": rounds, "short": args.short, "streams": streams},
            results,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
