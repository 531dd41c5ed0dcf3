"""JsonlSink's batches: when queued lines are written (interval, batch size, close, a sink
dropped unclosed, interpreter exit), their order across threads, fork, and failed writes."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Any

import pytest

from builder.runtime.tracing import SWITCH_OFF_AFTER, JsonlSink, TracedCall, Tracer
from tests.runtime._forking import in_forked_child

pytestmark = pytest.mark.timeout(30)

REPO = FilePath(__file__).resolve().parents[2]


def _call(n: int = 0, **fields: Any) -> TracedCall:
    return TracedCall(1_700_000_000.0 + n, "demo", f"op{n}", **fields)


def _operations(target: FilePath) -> list[str]:
    return [json.loads(line)["operation"] for line in target.read_text().splitlines()]


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> float:
    """Poll until ``condition()``; returns how long it took (fails after ``seconds``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not met within {seconds} s")
        time.sleep(0.005)
    return time.monotonic() - started


def test_queued_lines_are_written_after_the_interval_not_on_the_call(tmp_path: FilePath) -> None:
    target = tmp_path / "t.jsonl"
    sink = JsonlSink(target, interval=0.2)
    sink.emit(_call(0))
    sink.emit(_call(1))
    assert target.read_bytes() == b""  # queued: the call did not write
    waited = _wait_for(lambda: len(target.read_bytes().splitlines()) == 2)
    assert 0.1 < waited < 2.0
    assert _operations(target) == ["op0", "op1"]
    # Idle again: the next call starts a new clock.
    sink.emit(_call(2))
    assert len(target.read_bytes().splitlines()) == 2
    _wait_for(lambda: len(target.read_bytes().splitlines()) == 3)
    sink.close()
    assert _operations(target) == ["op0", "op1", "op2"]


def test_the_default_sink_writes_within_a_second(tmp_path: FilePath) -> None:
    target = tmp_path / "t.jsonl"
    sink = JsonlSink(target)
    assert (sink.flush, sink.interval, sink.batch_size) == (False, 1.0, 256)
    sink.emit(_call(0))
    waited = _wait_for(lambda: target.read_bytes() != b"", seconds=3.0)
    assert waited < 2.0
    sink.close()


def test_a_full_batch_is_written_on_the_call_that_fills_it(tmp_path: FilePath) -> None:
    target = tmp_path / "t.jsonl"
    sink = JsonlSink(target, interval=None, batch_size=3)
    sink.emit(_call(0))
    sink.emit(_call(1))
    assert target.read_bytes() == b""
    sink.emit(_call(2))
    assert _operations(target) == ["op0", "op1", "op2"]  # at once, no thread involved
    sink.emit(_call(3))
    sink.close()
    assert _operations(target) == ["op0", "op1", "op2", "op3"]


def test_close_writes_what_is_queued_and_write_queued_writes_it_now(tmp_path: FilePath) -> None:
    target = tmp_path / "t.jsonl"
    sink = JsonlSink(target, interval=60)
    sink.emit(_call(0))
    sink.write_queued()
    assert _operations(target) == ["op0"]
    sink.emit(_call(1))
    sink.close()
    assert _operations(target) == ["op0", "op1"]
    sink.close()  # twice is fine


def test_a_sink_dropped_unclosed_writes_what_it_queued(tmp_path: FilePath) -> None:
    target = tmp_path / "t.jsonl"
    sink = JsonlSink(target, interval=60)
    sink.emit(_call(0))  # starts the writer thread, which holds the sink weakly
    thread = sink._clock
    assert thread is not None and thread.is_alive()
    del sink
    gc.collect()
    assert _operations(target) == ["op0"]
    thread.join(5)
    assert not thread.is_alive()  # and the writer thread ended


def test_lines_queued_when_the_interpreter_exits_are_written(tmp_path: FilePath) -> None:
    target = tmp_path / "exit.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from builder.runtime.tracing import JsonlSink, TracedCall, Tracer, configure
        sink = JsonlSink({str(target)!r}, interval=3600)
        tracer = configure(sink)
        for n in range(5):
            tracer.emit(TracedCall(0.0, "demo", f"op{{n}}"))
        # neither closed nor dropped: the interpreter exits with the lines queued
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert _operations(target) == [f"op{n}" for n in range(5)]


def test_lines_keep_each_threads_order_and_none_is_lost(tmp_path: FilePath) -> None:
    target = tmp_path / "threads.jsonl"
    # Small batches and a short interval: callers and the writer thread write at once.
    tracer = Tracer(JsonlSink(target, interval=0.001, batch_size=7))
    payload = {"text": "x" * 3000}  # long lines: interleaved writes would corrupt them

    def work(worker: int) -> None:
        for n in range(300):
            tracer.emit(_call(n, input=payload, output={"worker": worker, "n": n}))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tracer.close()
    assert tracer.switched_off == []
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 8 * 300
    assert all(line["input"] == payload for line in lines)
    for worker in range(8):
        seen = [line["output"]["n"] for line in lines if line["output"]["worker"] == worker]
        assert seen == list(range(300))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_its_own_lines_not_its_parents_queue(tmp_path: FilePath) -> None:
    target = tmp_path / "fork.jsonl"
    sink = JsonlSink(target, interval=60)
    sink.emit(_call(0))  # queued in the parent when it forks

    def child() -> None:  # queue a line of its own and write it
        sink.emit(_call(1))
        sink.close()

    in_forked_child(child)
    assert _operations(target) == ["op1"]  # the child's only
    sink.close()
    assert _operations(target) == ["op1", "op0"]  # the parent's once


# -- failed writes -------------------------------------------------------------------------


class FailingFile:
    """Stands for the sink's file: each write fails while ``failing`` says so."""

    def __init__(self, real: Any, failing: list[bool]) -> None:
        self.real = real
        self.failing = failing
        self.writes = 0

    def write(self, data: bytes) -> int | None:
        self.writes += 1
        if self.failing[min(self.writes, len(self.failing)) - 1]:
            raise OSError(28, "No space left on device")
        written: int | None = self.real.write(data)
        return written

    def close(self) -> None:
        self.real.close()


def _failing_sink(tmp_path: FilePath, failing: list[bool], **kw: Any) -> JsonlSink:
    sink = JsonlSink(tmp_path / "t.jsonl", **kw)
    sink._file = FailingFile(sink._file, failing)  # type: ignore[assignment]
    return sink


def test_a_write_that_always_fails_switches_the_sink_off_after_three_calls(
    tmp_path: FilePath,
) -> None:
    sink = _failing_sink(tmp_path, [True], interval=0.01)
    tracer = Tracer(sink)
    tracer.emit(_call(0))  # queued: the writer thread's write fails
    _wait_for(lambda: sink._unreported is not None)
    with pytest.warns(RuntimeWarning, match="failed 3 times in a row") as caught:
        for n in range(1, SWITCH_OFF_AFTER + 1):
            assert tracer.active
            tracer.emit(_call(n))  # raises (at once now), counted
    assert tracer.switched_off == [sink] and not tracer.active
    assert "OSError" in str(caught[0].message)
    tracer.close()


def test_a_write_that_fails_with_flush_true_is_counted_on_its_call(tmp_path: FilePath) -> None:
    sink = _failing_sink(tmp_path, [True], flush=True)
    tracer = Tracer(sink)
    with pytest.warns(RuntimeWarning, match="switched off"):
        for n in range(SWITCH_OFF_AFTER):
            tracer.emit(_call(n))
    assert tracer.switched_off == [sink]
    assert isinstance(sink._file, FailingFile) and sink._file.writes == SWITCH_OFF_AFTER


def test_a_full_batch_that_fails_is_counted_on_the_call_that_filled_it(
    tmp_path: FilePath,
) -> None:
    sink = _failing_sink(tmp_path, [True, False], interval=None, batch_size=2)
    tracer = Tracer(sink)
    tracer.emit(_call(0))
    tracer.emit(_call(1))  # fills the batch: its write fails, counted on this call
    assert tracer._slots[0].failures == 1
    tracer.emit(_call(2))  # written at once (a write failed): it works, count reset
    assert tracer._slots[0].failures == 0
    sink.close()
    assert _operations(tmp_path / "t.jsonl") == ["op2"]  # op0 and op1 were lost


def test_a_sink_whose_write_failed_once_goes_back_to_batches(tmp_path: FilePath) -> None:
    # The writer thread's write fails; the next call reports it once (counted), is written
    # at once, and the sink batches again: three failures never accumulate.
    sink = _failing_sink(tmp_path, [True, False], interval=0.01)
    tracer = Tracer(sink)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a switch-off warning would fail the test
        tracer.emit(_call(0))
        _wait_for(lambda: sink._unreported is not None)
        tracer.emit(_call(1))  # raises the deferred error after writing op1 at once
        assert tracer._slots[0].failures == 1
        assert _operations(tmp_path / "t.jsonl") == ["op1"]
        tracer.emit(_call(2))  # queued again: a success
        assert tracer._slots[0].failures == 0 and not sink._direct
        for n in range(3, 6):
            tracer.emit(_call(n))
    tracer.close()
    assert tracer.switched_off == []
    assert _operations(tmp_path / "t.jsonl") == ["op1", "op2", "op3", "op4", "op5"]


def test_a_call_that_cannot_be_encoded_loses_its_line_only(tmp_path: FilePath) -> None:
    class Broken(TracedCall):
        def to_json(self) -> bytes:
            raise RuntimeError("cannot encode")

    target = tmp_path / "t.jsonl"
    sink = JsonlSink(target, interval=None, batch_size=3)
    tracer = Tracer(sink)
    tracer.emit(_call(0))
    tracer.emit(Broken(0.0, "demo", "broken"))
    tracer.emit(_call(2))  # the batch: two lines written, the error counted once
    assert _operations(target) == ["op0", "op2"]
    assert tracer._slots[0].failures == 1
    tracer.close()


def test_a_closed_sink_refuses_calls_and_that_counts(tmp_path: FilePath) -> None:
    for kw in ({}, {"flush": True}):
        sink = JsonlSink(tmp_path / "t.jsonl", **kw)
        sink.close()
        with pytest.raises(ValueError):
            sink.emit(_call(0))


def test_bad_settings_are_refused(tmp_path: FilePath) -> None:
    with pytest.raises(ValueError, match="interval"):
        JsonlSink(tmp_path / "t.jsonl", interval=0)
    with pytest.raises(ValueError, match="batch_size"):
        JsonlSink(tmp_path / "t.jsonl", batch_size=0)
