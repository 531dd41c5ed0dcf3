"""Benchmark: the sql transport against raw psycopg, on the local PostgreSQL, same run.

    python tests/benchmarks/sql_throughput.py [--quick] [--json PATH] [--url URL]
                                              [--rows N] [--rounds N] [--batch-size N]

Rows (N records of four columns: integer id, text, integer, double precision):
  sink    ``SqlConnector.write(records)`` (no upsert keys: COPY, one transaction per batch)
          vs raw psycopg: the same dicts, ``itemgetter`` to tuples, ``cursor.copy(...)`` and
          ``write_row`` per row, one transaction per batch of the same size
  upsert  ``write`` with ``upsert_keys=["id"]`` over rows that all exist (staging table +
          INSERT ... ON CONFLICT); no raw baseline, shown for scale
  source  ``SqlConnector.read()`` of the table (dict rows) vs a raw psycopg server-side
          cursor (``cursor(name=..., row_factory=dict_row)``, same fetch size) iterated
          in a transaction; the table is vacuumed first (after the upsert's updates)

Each round runs ours and raw once each, alternating which goes first; before each sink run
the table is emptied and a CHECKPOINT flushes the previous run's pages, so that neither
pays for the other's writes. Wall time is what counts (rows/s); the client CPU per row is
shown too, being the part the transport adds and the part least disturbed by other load
on the machine. Reported: median rows/s over rounds, and as the ratio the median of the
per-round ratios ours / raw (pairs run back to back, so drift cancels); target >= 0.9x,
checked here, never asserted by a test.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from builder.runtime.config import Setting, resolve_settings  # noqa: E402
from builder.runtime.transports.sql import FETCH_ROWS, SqlConnector  # noqa: E402
from tests.benchmarks._common import parser, summary, table, write_json  # noqa: E402

TARGET_RATIO = 0.9
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
COLUMNS = ("id", "name", "qty", "price")

SETTINGS = (
    Setting("connection_url", str, secret=True),
    Setting("host", str, default="127.0.0.1"),
    Setting("port", int),
    Setting("user", str),
    Setting("password", str, secret=True),
    Setting("database", str),
    Setting("table", str),
    Setting("query", str),
)


def make_connector(
    url: str, table_name: str, batch_size: int, upsert_keys: list[str]
) -> SqlConnector:
    class Postgres(SqlConnector):  # what the generator emits for a postgres spec
        _name = "postgres"
        _options = {"dialect": "postgresql", "upsert_keys": upsert_keys, "batch_size": batch_size}

    return Postgres(
        resolve_settings(SETTINGS, {"connection_url": url, "table": table_name}, connector="pg")
    )


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"customer {i}", "qty": i % 97, "price": i * 0.25} for i in range(n)]


def timed(action: Callable[[], int]) -> tuple[float, float, int]:
    """Wall seconds, this process's CPU seconds, and what ``action`` returned."""
    start, cpu = time.perf_counter(), time.process_time()
    count = action()
    return time.perf_counter() - start, time.process_time() - cpu, count


def main() -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "sql throughput")
    p.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL URL (default: local test db)")
    p.add_argument("--rows", type=int, default=None, help="rows per run (default 200000)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 9)")
    p.add_argument("--batch-size", type=int, default=10000, help="rows per write batch")
    args = p.parse_args()
    n = args.rows or (20_000 if args.quick else 200_000)
    rounds = args.rounds or (3 if args.quick else 9)
    batch = args.batch_size

    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    try:
        raw = psycopg.connect(args.url, autocommit=True)
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL is not reachable at {args.url}: {exc}", file=sys.stderr)
        return 2
    name = f"bench_sql_{uuid.uuid4().hex[:10]}"
    target = sql.Identifier(name)
    raw.execute(
        sql.SQL(
            "CREATE UNLOGGED TABLE {} (id integer PRIMARY KEY, name text, qty integer,"
            " price double precision)"
        ).format(target)
    )
    data = records(n)
    ours = make_connector(args.url, name, batch, [])
    upserting = make_connector(args.url, name, batch, ["id"])
    copy_statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    )
    row_of = itemgetter(*COLUMNS)

    def truncate() -> None:
        raw.execute(sql.SQL("TRUNCATE {}").format(target))
        try:
            raw.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass  # not a superuser: a little more noise

    def raw_write() -> int:
        with raw.cursor() as cursor:
            for start in range(0, n, batch):
                with raw.transaction(), cursor.copy(copy_statement) as copy:
                    for record in data[start : start + batch]:
                        copy.write_row(row_of(record))
        return n

    def our_write() -> int:
        return ours.write(data)

    def our_upsert() -> int:
        return upserting.write(data)

    def raw_read() -> int:
        count = 0
        with raw.transaction():
            cursor = raw.cursor(name="bench_read", row_factory=dict_row)
            cursor.itersize = FETCH_ROWS
            cursor.execute(sql.SQL("SELECT * FROM {}").format(target))
            for _row in cursor:
                count += 1
            cursor.close()
        return count

    def our_read() -> int:
        count = 0
        for _row in ours.read():
            count += 1
        return count

    samples: dict[str, dict[str, list[float]]] = {
        "sink": {"ours": [], "raw": []},
        "source": {"ours": [], "raw": []},
        "upsert": {"ours": []},
    }
    cpu: dict[str, dict[str, list[float]]] = {
        "sink": {"ours": [], "raw": []},
        "source": {"ours": [], "raw": []},
        "upsert": {"ours": []},
    }

    def record(measure: str, who: str, seconds: float, cpu_seconds: float) -> None:
        samples[measure][who].append(n / seconds)
        cpu[measure][who].append(cpu_seconds / n * 1e6)

    try:
        # Warm-up: connections, prepared plans, the table's pages in cache.
        for _ in range(2):
            truncate()
            our_write()
            truncate()
            raw_write()
            our_upsert()
            raw.execute(sql.SQL("VACUUM {}").format(target))
            our_read()
            raw_read()
        for r in range(rounds):
            order = (("ours", our_write), ("raw", raw_write))
            for who, action in order if r % 2 == 0 else tuple(reversed(order)):
                truncate()
                seconds, cpu_seconds, count = timed(action)
                assert count == n, (who, count)
                record("sink", who, seconds, cpu_seconds)
            seconds, cpu_seconds, count = timed(our_upsert)  # every row exists: all updates
            assert count == n
            record("upsert", "ours", seconds, cpu_seconds)
            # The upsert left a dead version of every row: whoever read first would pay
            # for pruning them. Clean up before timing the reads.
            raw.execute(sql.SQL("VACUUM {}").format(target))
            reads = (("ours", our_read), ("raw", raw_read))
            for who, action in reads if r % 2 == 0 else tuple(reversed(reads)):
                seconds, cpu_seconds, count = timed(action)
                assert count == n, (who, count)
                record("source", who, seconds, cpu_seconds)
            print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    finally:
        ours.close()
        upserting.close()
        raw.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
        raw.close()

    results: dict[str, Any] = {"rows": {}, "targets": {"ratio_min": TARGET_RATIO}}
    lines: list[tuple[str, float, float | None, str, str, float, float | None]] = []
    for measure, label in (
        ("sink", "PostgreSQL sink: write() vs raw COPY"),
        ("source", "PostgreSQL source: read() vs raw server-side cursor"),
    ):
        mine, theirs = samples[measure]["ours"], samples[measure]["raw"]
        per_round = [a / b for a, b in zip(mine, theirs, strict=True)]
        ratio = statistics.median(per_round)
        cpu_mine, cpu_theirs = cpu[measure]["ours"], cpu[measure]["raw"]
        results["rows"][measure] = {
            "ours_rows_per_s": summary(mine),
            "raw_rows_per_s": summary(theirs),
            "ratio": ratio,
            "ratio_of_medians": statistics.median(mine) / statistics.median(theirs),
            "per_round_ratio": {"median": ratio, "min": min(per_round), "max": max(per_round)},
            "ours_cpu_us_per_row": summary(cpu_mine),
            "raw_cpu_us_per_row": summary(cpu_theirs),
        }
        verdict = "ok" if ratio >= TARGET_RATIO else "MISS"
        lines.append(
            (
                label,
                statistics.median(mine),
                statistics.median(theirs),
                f"{ratio:.3f}x",
                verdict,
                statistics.median(cpu_mine),
                statistics.median(cpu_theirs),
            )
        )
    upsert = samples["upsert"]["ours"]
    results["rows"]["upsert"] = {
        "ours_rows_per_s": summary(upsert),
        "ours_cpu_us_per_row": summary(cpu["upsert"]["ours"]),
    }
    lines.append(
        (
            "PostgreSQL sink, upsert (all updates)",
            statistics.median(upsert),
            None,
            "",
            "",
            statistics.median(cpu["upsert"]["ours"]),
            None,
        )
    )

    print(
        table(
            (
                "measure",
                "ours rows/s",
                "raw rows/s",
                "ours/raw",
                "verdict",
                "ours CPU µs/row",
                "raw CPU µs/row",
            ),
            [(m, round(a), round(b) if b else None, r, v, c, d) for m, a, b, r, v, c, d in lines],
            title=(
                f"sql throughput: {n} rows x 4 columns, batch {batch}, fetch {FETCH_ROWS},"
                f" median of {rounds} rounds (target >= {TARGET_RATIO}x raw)"
            ),
        )
    )
    write_json(
        args.json,
        "sql_throughput",
        {"rows": n, "rounds": rounds, "batch_size": batch, "fetch_rows": FETCH_ROWS},
        results,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
