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
"""

from __future__ import annotations

import json
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


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    chunks = 200 if args.quick else args.chunks
    rounds = 2 if args.quick else args.rounds
    with run_server() as base:
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
        wall: dict[str, list[float]] = {name: [] for name in clients}
        cpu: dict[str, list[float]] = {name: [] for name in clients}
        order = list(clients)
        for round_ in range(rounds):
            for name in order if round_ % 2 == 0 else reversed(order):
                run = clients[name]
                c0, w0 = time.process_time(), time.perf_counter()
                count = run()
                c1, w1 = time.process_time(), time.perf_counter()
                wall[name].append(count / (w1 - w0))
                cpu[name].append((c1 - c0) / count * 1e6)
    base_cpu = summary(cpu["raw httpx"])["median"]
    rows = []
    results: dict[str, Any] = {"chunks": chunks, "rounds": rounds, "clients": {}}
    for name in clients:
        rate, per_chunk = summary(wall[name]), summary(cpu[name])
        ratio = per_chunk["median"] / base_cpu
        rows.append([name, f"{rate['median']:.0f}", f"{per_chunk['median']:.1f}", f"{ratio:.2f}x"])
        results["clients"][name] = {
            "chunks_per_s": rate,
            "cpu_us_per_chunk": per_chunk,
            "ratio": ratio,
        }
    print(
        table(
            ["client", "chunks/s", "CPU µs/chunk", "vs raw"],
            rows,
            title=f"Streamed chat, {chunks} chunks per request, median of {rounds} rounds",
        )
    )
    if args.json:
        write_json(args.json, "llm_stream", {"chunks": chunks, "rounds": rounds}, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
