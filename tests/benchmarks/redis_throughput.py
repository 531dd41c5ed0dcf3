"""Benchmark: Redis Streams throughput, our connector vs raw redis-py pipelines, same run.

    python tests/benchmarks/redis_throughput.py [--quick] [--json PATH] [--messages N]
                                                [--rounds N] [--url URL]

Against the Redis server at ``--url`` (default redis://127.0.0.1:6379/0), each round, on
fresh stream keys:

  write  ``RedisStreamConnector.write(records)`` (JSON-encodes each record; MULTI/EXEC
         transactions of 1000 XADDs, so a failed batch is known to be all-or-nothing)
         vs raw redis-py: ``json.dumps`` each record, 1000 XADDs per round trip, both in
         ``pipeline()`` (redis-py's default, MULTI/EXEC: the same guarantee as ours) and in
         ``pipeline(transaction=False)`` (faster, but a failure leaves an unknown part of
         the batch written).
  read   ``for message in connector.read()`` (XREADGROUP 500 at a time, each entry decoded
         into a ``Message``, acknowledged after the consumer moved on, the XACKs riding with
         the next XREADGROUP) vs raw redis-py: one pipeline per round trip holding the XACK
         of the previous 500 entries and the next XREADGROUP, ``json.loads`` each payload.

Both sides move the same payloads. "typed" rows do the same with a pydantic record model
(the connector's ``_record``; raw uses ``model_dump_json`` / ``model_validate_json``).
The clients take turns within a round and the order reverses every round, to cancel drift.
Reported: the median over rounds of messages per second (wall clock), ours / raw (target
>= 0.9x; reported, not asserted), and the same ratio by this process's CPU time alone (the
client's own cost, which other load on the machine disturbs less).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from builder.runtime.config import Setting, resolve_settings  # noqa: E402
from builder.runtime.operation import Decoder  # noqa: E402
from builder.runtime.transports.redis_stream import READ_COUNT, RedisStreamConnector  # noqa: E402
from tests.benchmarks._common import parser, summary, table, write_json  # noqa: E402

TARGET = 0.9  # ours / raw, at least
WRITE_BATCH = 1000
SETTINGS = (
    Setting("connection_url", str, secret=True),
    Setting("stream", str),
    Setting("group", str),
    Setting("consumer", str, default="connector"),
    Setting("block_ms", int, default=0),
)


class Order(BaseModel):
    id: int
    customer: str
    total: float
    items: list[str]


class Stream(RedisStreamConnector):
    _name = "redis_bench"
    _options: ClassVar[dict[str, Any]] = {
        "format": "json",
        "maxlen": None,
        "approximate": True,
        "batch_size": WRITE_BATCH,
    }

    def __init__(self, url: str, stream: str, group: str | None = None) -> None:
        given = {"connection_url": url, "stream": stream, "group": group, "block_ms": 0}
        super().__init__(resolve_settings(SETTINGS, given, connector="redis_bench"))


class TypedStream(Stream):
    _record = Decoder(Order)


Timing = tuple[float, float]  # (wall seconds, this process's CPU seconds)


def clock() -> Timing:
    return time.perf_counter(), time.process_time()


def since(started: Timing) -> Timing:
    wall, cpu = clock()
    return wall - started[0], cpu - started[1]


def records(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "customer": f"customer-{i % 97}", "total": i * 1.25, "items": ["a", "bc"]}
        for i in range(n)
    ]


# -- one timed run of each side ----------------------------------------------------------


def ours_write(url: str, data: list[Any], typed: bool) -> Callable[[str], Timing]:
    def run(stream: str) -> Timing:
        with (TypedStream if typed else Stream)(url, stream) as connector:
            connector.connection.ping()  # connect outside the timing
            started = clock()
            connector.write(data)
            return since(started)

    return run


def raw_write(url: str, data: list[Any], typed: bool, transaction: bool) -> Callable[[str], Timing]:
    def run(stream: str) -> Timing:
        client = redis.Redis.from_url(url)
        client.ping()
        started = clock()
        for start in range(0, len(data), WRITE_BATCH):
            pipe = client.pipeline(transaction=transaction)
            for record in data[start : start + WRITE_BATCH]:
                payload = (
                    record.model_dump_json(exclude_none=True).encode()
                    if typed
                    else json.dumps(record, separators=(",", ":")).encode()
                )
                pipe.xadd(stream, {"data": payload})
            pipe.execute()
        elapsed = since(started)
        client.close()
        return elapsed

    return run


def ours_read(url: str, n: int, typed: bool) -> Callable[[str], Timing]:
    def run(stream: str) -> Timing:
        with (TypedStream if typed else Stream)(url, stream, group="bench") as connector:
            connector.connection.xgroup_create(stream, "bench", id="0")
            started = clock()
            count = 0
            for _message in connector.read():
                count += 1
            elapsed = since(started)
            pending = connector.connection.xpending(stream, "bench")["pending"]
        assert count == n and pending == 0, (count, pending)
        return elapsed

    return run


def raw_read(url: str, n: int, typed: bool) -> Callable[[str], Timing]:
    decode: Callable[[bytes], Any] = Order.model_validate_json if typed else json.loads

    def run(stream: str) -> Timing:
        client = redis.Redis.from_url(url)
        client.xgroup_create(stream, "bench", id="0")
        started = clock()
        count = 0
        done: list[bytes] = []
        while True:
            pipe = client.pipeline(transaction=False)
            if done:
                pipe.xack(stream, "bench", *done)
            pipe.xreadgroup("bench", "raw", {stream: ">"}, count=READ_COUNT)
            reply = pipe.execute()[-1]
            if not reply:
                break
            done = []
            for entry_id, fields in reply[0][1]:
                decode(fields[b"data"])
                count += 1
                done.append(entry_id)
        elapsed = since(started)
        pending = client.xpending(stream, "bench")["pending"]
        client.close()
        assert count == n and pending == 0, (count, pending)
        return elapsed

    return run


def fill(url: str, stream: str, data: list[Any]) -> None:
    client = redis.Redis.from_url(url)
    for start in range(0, len(data), WRITE_BATCH):
        pipe = client.pipeline(transaction=False)
        for record in data[start : start + WRITE_BATCH]:
            pipe.xadd(stream, {"data": json.dumps(record, separators=(",", ":"))})
        pipe.execute()
    client.close()


def measure(
    url: str,
    n: int,
    rounds: int,
    label: str,
    sides: dict[str, Callable[[str], Timing]],
    prefill: list[Any] | None,
) -> dict[str, dict[str, list[float]]]:
    """Messages per second of each side (by wall clock, and by this process's CPU time:
    the client's own cost), one sample per round, on fresh streams."""
    client = redis.Redis.from_url(url)
    rates: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in sides}
    names = list(sides)
    for round_index in range(rounds + 1):  # round 0 warms up and is dropped
        order = names if round_index % 2 else names[::-1]
        for name in order:
            stream = f"bench-{label}-{uuid.uuid4().hex}"
            try:
                if prefill is not None:
                    fill(url, stream, prefill)
                wall, cpu = sides[name](stream)
            finally:
                client.delete(stream)
            if round_index:
                rates[name]["wall"].append(n / wall)
                rates[name]["cpu"].append(n / cpu)
    client.close()
    return rates


def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    n, rounds = (5_000, 3) if args.quick else (args.messages, args.rounds)
    try:
        redis.Redis.from_url(args.url).ping()
    except redis.RedisError as exc:
        sys.exit(f"redis_throughput: Redis is not reachable at {args.url}: {exc}")

    plain = records(n)
    models = [Order(**r) for r in plain]
    url = args.url
    # (case, sides measured in it, stream to pre-fill with, comparisons: label -> (a, b))
    cases: list[
        tuple[str, dict[str, Callable[[str], Timing]], list[Any] | None, dict[str, str]]
    ] = []
    for typed, data, suffix in ((False, plain, ""), (True, models, " typed")):
        cases.append(
            (
                "write" + suffix,
                {
                    "ours": ours_write(url, data, typed),
                    "raw MULTI/EXEC pipeline": raw_write(url, data, typed, transaction=True),
                    "raw plain pipeline": raw_write(url, data, typed, transaction=False),
                },
                None,
                {
                    f"write{suffix} vs raw MULTI/EXEC pipeline": "raw MULTI/EXEC pipeline",
                    f"write{suffix} vs raw plain pipeline": "raw plain pipeline",
                },
            )
        )
        cases.append(
            (
                "read" + suffix,
                {
                    "ours": ours_read(url, n, typed),
                    "raw XREADGROUP+XACK pipeline": raw_read(url, n, typed),
                },
                plain,
                {f"read{suffix} vs raw XREADGROUP+XACK pipeline": "raw XREADGROUP+XACK pipeline"},
            )
        )
    samples: dict[str, Any] = {}
    rows: dict[str, Any] = {}
    for case, sides, prefill, comparisons in cases:
        rates = measure(url, n, rounds, case.replace(" ", "-"), sides, prefill)
        samples[case] = {
            name: {clock_name: summary(values) for clock_name, values in by_clock.items()}
            for name, by_clock in rates.items()
        }
        ours, ours_cpu = (samples[case]["ours"][c]["median"] for c in ("wall", "cpu"))
        for label, baseline in comparisons.items():
            raw, raw_cpu = (samples[case][baseline][c]["median"] for c in ("wall", "cpu"))
            rows[label] = {
                "ours_msgs_per_s": ours,
                "raw_msgs_per_s": raw,
                "ratio": ours / raw,
                "verdict": "ok" if ours / raw >= TARGET else "MISS",
                "client_cpu_ratio": ours_cpu / raw_cpu,
            }

    print(
        table(
            [
                "measure",
                "ours msg/s",
                "raw msg/s",
                "ours / raw",
                "target",
                "verdict",
                "by client CPU",
            ],
            [
                (
                    label,
                    f"{row['ours_msgs_per_s']:,.0f}",
                    f"{row['raw_msgs_per_s']:,.0f}",
                    f"{row['ratio']:.2f}x",
                    f">= {TARGET}x",
                    row["verdict"],
                    f"{row['client_cpu_ratio']:.2f}x",
                )
                for label, row in rows.items()
            ],
            title=f"Redis Streams, {n:,} messages, median of {rounds} rounds",
        )
    )
    write_json(
        args.json,
        "redis_throughput",
        {"messages": n, "rounds": rounds, "write_batch": WRITE_BATCH, "read_count": READ_COUNT},
        {
            "rows": rows,
            "msgs_per_s": samples,
            "targets": {"ratio_at_least": TARGET},
            "verdicts": {label: row["verdict"] for label, row in rows.items()},
            "throughput_ratio": {label: row["ratio"] for label, row in rows.items()},
        },
    )


if __name__ == "__main__":
    main()
