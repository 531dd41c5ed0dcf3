"""Where traced calls go: the sinks a :class:`~builder.runtime.tracing.Tracer` hands each
:class:`~builder.runtime.tracing.TracedCall` to.

:class:`MemorySink` keeps them; :class:`JsonlSink`, :class:`LoggingSink` and
:class:`OpenTelemetrySink` queue them and write lines, log records or spans in warm batches
off the call's path (:class:`_QueuedSink`: the queue, the writer thread, exit and fork).
This module does not import the tracer: a sink needs only the call it is given.
"""

from __future__ import annotations

import contextvars
import functools
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from builder.runtime.errors import ConfigError

if TYPE_CHECKING:
    from builder.runtime.tracing import TracedCall

    _LogEntry = tuple[TracedCall, threading.Thread, str | None, contextvars.Context]

__all__ = ["LOGGER_NAME", "JsonlSink", "LoggingSink", "MemorySink", "OpenTelemetrySink", "Sink"]

LOGGER_NAME = "connectors.tracing"  # the logger of LoggingSink (and of tracing's warnings)


class Sink(Protocol):
    """Anything with ``emit(call)``; a plain callable taking the call works too."""

    def emit(self, call: TracedCall) -> None: ...


class MemorySink:
    """Keeps the last ``max_size`` calls in memory (for tests, notebooks, debugging)."""

    def __init__(self, max_size: int = 10_000) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._calls: deque[TracedCall] = deque(maxlen=max_size)

    def emit(self, call: TracedCall) -> None:
        self._calls.append(call)

    @property
    def calls(self) -> list[TracedCall]:
        """The kept calls, oldest first."""
        return list(self._calls)

    def clear(self) -> None:
        self._calls.clear()

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[TracedCall]:
        return iter(list(self._calls))

    def __repr__(self) -> str:
        return f"MemorySink({len(self._calls)}/{self._calls.maxlen} calls)"


class _QueuedSink:
    """What :class:`JsonlSink`, :class:`LoggingSink` and :class:`OpenTelemetrySink` share:
    each call queued by ``emit`` and handed on later with the others queued by then, in one
    warm loop (:meth:`_hand_on`), off the call's path.

    A call is handed on within ``interval`` seconds (1 s) of the first queued, as soon as
    ``batch_size`` (256) are queued, by :meth:`write_queued` (:meth:`Tracer.flush`), on
    :meth:`close`, when the sink is dropped unclosed and when the interpreter exits. In
    situ a call's tracing runs with cold caches (see :mod:`builder.runtime.tracing`): a line
    encoded and written, a log record or a span made on each call costs some 25–70 µs of
    CPU more than queueing it and handing on a batch (``tests/benchmarks/tracing_cost.py``).
    What a process killed outright (``SIGKILL``, ``os._exit``) had queued is lost. A call is
    handed on as it is then: a call changed after it was traced (:meth:`Tracer.record`
    returns it) is handed on changed.

    ``flush=True`` hands each call on at once, before the call returns.
    ``interval=None`` sets no time limit: calls are handed on ``batch_size`` at a time,
    by :meth:`write_queued`, on :meth:`close` and at exit.

    One thread at a time hands on, and a call's thread never waits for it: a thread that
    finds another handing on leaves its call to that one (which looks at the queue again
    before it stops, and takes what it finds or hurries the writer thread to it). So a
    logging handler or span processor that makes a traced call while it holds a lock of
    its own cannot deadlock with the thread handing on. A call's thread hands on one batch
    at most: what other threads queued meanwhile goes to the writer thread at once, so
    that no caller is kept for as long as the others call.

    A batch that fails (all of it, or some of its calls) is raised by the next ``emit``,
    so the tracer counts it towards switching the sink off (see :data:`SWITCH_OFF_AFTER`);
    until a batch succeeds again, each call is handed on at once (an exporter's, by the
    writer thread), so that every further failure is counted too. A child process made by
    ``fork`` starts with an empty queue: what the parent had queued is the parent's to
    hand on.

    A flush (:meth:`write_queued`, :meth:`close`, exit, a provider's ``force_flush``)
    queues a mark after the calls it waits for, and returns once the mark is met: it
    waits for those calls, not for an empty queue, which calls that keep coming could
    put off for as long as they come.
    """

    _thread_name: str

    # What is queued for a call: ``_entry(call)``, the call with what must be taken on its
    # thread; None queues the call itself (no call more on the call's path).
    _entry: Callable[[TracedCall], Any] | None = None

    def __init__(self, *, flush: bool, interval: float | None, batch_size: int) -> None:
        _check_batching(interval, batch_size)
        self.flush = flush
        self.interval = interval
        self.batch_size = batch_size
        self._queue: deque[Any] = deque()
        self._lock = threading.Lock()  # held by the one thread handing on
        self._state_lock = threading.Lock()  # for _unreported; never held around a hand-on
        # Hand on each call at once: flush=True, after a failed batch, once closed.
        self._direct = flush
        # No hand-on is due (the next queued call starts the clock); never with no interval.
        self._idle = interval is not None
        self._unreported: Exception | None = None  # a failed batch the writer thread met
        self._closed = False
        self._clock: threading.Thread | None = None
        self._clock_lock = threading.Lock()
        self._wake = threading.Event()  # a call is queued: hand on within interval
        self._stop = threading.Event()  # closed: hand on now and end
        self._hurry = threading.Event()  # hand on now, not at the end of the interval
        self._flushes = 0  # flush marks queued, not met yet (under _state_lock)
        _sinks.add(self)
        _watch_exit_and_fork()

    def _queued(self, call: TracedCall) -> Any:
        entry = self._entry
        return call if entry is None else entry(call)

    def _hand_on(self, entries: list[Any]) -> Exception | None:
        """Hand on ``entries`` in order, each whatever the others do; the last failure is
        returned, not raised."""
        raise NotImplementedError

    def emit(self, call: TracedCall) -> None:
        if self._direct:
            self._emit_now(call)
            return
        queue = self._queue
        entry = self._entry
        # Atomic: threads need no lock to queue, and keep their order.
        queue.append(call if entry is None else entry(call))
        if self._idle:
            self._start_clock()
        # Full, or closed since _direct was read (the call must not wait for a clock).
        if len(queue) >= self.batch_size or self._direct:
            self._hand_on_full()

    def _hand_on_full(self) -> None:
        """A full batch is queued (or the sink closed since the call read ``_direct``, or
        a batch failed): hand it on, on the call's thread."""
        self._hand_on_queued(wait=False)

    def _emit_now(self, call: TracedCall) -> None:
        if self.flush or self._closed:
            # No lock: the library handed on to is thread-safe (a JSONL sink locks its
            # write), and a handler that traces a call while it holds its lock must not
            # wait for ours. Once closed (or at exit) no call is queued: each is handed on
            # by its own thread (a closed file raises), none is left to a thread that ends.
            error = self._hand_on([self._queued(call)])
            if error is not None:
                raise error
            return
        # After a failed batch: this call now, and the error not reported.
        with self._state_lock:
            error, self._unreported = self._unreported, None
        self._queue.append(self._queued(call))
        self._hand_on_full()  # raises if it fails again (an exporter's: the next call)
        if error is not None:
            raise error  # the batch the writer thread lost, counted once

    def _start_clock(self) -> None:
        """The first call queued since a hand-on: have the writer thread hand it on within
        ``interval`` (the thread is started on first use, and again in a forked child)."""
        self._idle = False
        with self._clock_lock:
            if self._clock is None:
                self._clock = threading.Thread(
                    target=_write_after,
                    args=(weakref.ref(self), self._wake, self._stop, self._hurry, self.interval),
                    name=f"{self._thread_name} writer",
                    daemon=True,
                )
                self._clock.start()
                _register_exit()  # after what was set up before the first call
        self._wake.set()

    def _hurry_writer(self) -> None:
        """Have the writer thread hand on what is queued, now (started if need be)."""
        self._start_clock()
        self._hurry.set()

    def _hand_on_queued(
        self, *, wait: bool, deferred: bool = False, until: _FlushMark | None = None
    ) -> None:
        """Hand on the queued calls, in order. ``wait``: wait for the thread handing on
        now, if any (the writer thread); else leave the queue to it. ``until``: a flush's
        mark, queued after the calls it waits for: hand on until it is met, by this
        thread or the one handing on now (not until the queue is empty: calls may keep
        coming). A failure is raised, or kept for the next ``emit`` to raise (``deferred``).
        """
        lock, queue = self._lock, self._queue
        failed: Exception | None = None
        if until is None:
            if not lock.acquire(blocking=wait):
                return  # the thread handing on looks at the queue again before it stops
        else:
            while not lock.acquire(blocking=False):
                if until.wait(_FLUSH_POLL):  # met by the thread handing on
                    return
        while True:
            try:
                # Idle before the queue is taken: a call queued after this starts a new
                # clock; one queued before is in this batch.
                if self.interval is not None:
                    self._idle = True
                error = self._hand_on_taken(_take(queue), until)
                failed = failed or error
                if failed is None:
                    self._direct = self.flush or self._closed or self._unreported is not None
                else:
                    self._direct = True  # until a batch succeeds: each call at once
            finally:
                lock.release()
            if until is not None and until.is_set() and not self._closed:
                if queue:  # calls left to this thread meanwhile: the writer's now, at once
                    self._hurry_writer()
                break  # (once closed no call is queued: the few that raced it are taken)
            # What was queued meanwhile: its calls may have left it to this thread.
            if not queue:
                break
            if not wait and not self._closed:
                # A call's thread hands on one batch, its share: the calls other threads
                # queued meanwhile go to the writer thread, at once, however fast they come
                # (the throughput is the same, one thread handing on at a time; no caller
                # is kept for as long as the others keep calling).
                self._hurry_writer()
                break
            if not lock.acquire(blocking=False):
                break  # (another thread hands on now, and looks at the queue again)
        if failed is None:
            return
        if deferred:
            with self._state_lock:
                self._unreported = failed
            return
        raise failed

    def _hand_on_taken(
        self, entries: list[Any], until: _FlushMark | None = None
    ) -> Exception | None:
        """Hand on ``entries`` (taken from the queue, under ``_lock``), setting each flush
        mark among them once the calls before it are handed on; the first failure is
        returned. The calls after ``until``, the flush of this thread, go back to the
        front of the queue for the writer thread: the flush returns without them."""
        error: Exception | None = None
        if self._flushes:  # a flush is under way: its mark may be in this batch
            last = len(entries) - 1
            while last >= 0 and entries[last].__class__ is not _FlushMark:
                last -= 1
            if last >= 0:
                before = entries[: last + 1]
                marks = _marks_in(before)
                error = self._hand_on_some(before)
                self._met(marks)
                entries = entries[last + 1 :]
                if entries and until is not None and until.is_set() and not self._closed:
                    self._queue.extendleft(reversed(entries))
                    return error
        later = self._hand_on_some(entries)
        return error or later

    def _hand_on_some(self, entries: list[Any]) -> Exception | None:
        if not entries:
            return None
        try:
            return self._hand_on(entries)
        except Exception as exc:  # the sink's own bug: the batch is lost
            return exc

    def _met(self, marks: list[_FlushMark]) -> None:
        with self._state_lock:  # (not below 0: a child forked mid-batch meets its parent's)
            self._flushes = max(0, self._flushes - len(marks))
        for mark in marks:
            mark.set()

    def _flush_queued(self, *, deferred: bool = False) -> None:
        """Hand on every call queued before now, whatever is queued meanwhile."""
        mark = _FlushMark()
        with self._state_lock:
            self._flushes += 1  # before the mark is queued: whoever takes it looks for it
        self._queue.append(mark)
        self._hand_on_queued(wait=True, deferred=deferred, until=mark)

    def write_queued(self) -> None:
        """Hand on what is queued now (an error of a batch this thread hands on is
        raised); calls queued meanwhile are not waited for."""
        self._flush_queued()

    def close(self) -> None:
        """Hand on what is queued, and each later call at once (an error of that batch
        is raised); then release what the sink holds (a file)."""
        self._closed = True
        self._direct = True  # a call queued from now on hands itself on
        self._stop.set()
        self._hurry.set()
        self._wake.set()  # the writer thread ends
        error: Exception | None = None
        try:
            # Once closed, the flush goes on past its mark while calls are queued: only
            # the few that read the sink open before it closed can be (the others are
            # handed on by their own threads).
            self._flush_queued()
        except Exception as exc:
            error = exc
        try:
            self._hand_on_queued(wait=True)  # queued while another thread met the mark
        except Exception as exc:
            error = error or exc
        finally:
            with self._lock:
                self._release()
        if error is not None:
            raise error

    def _release(self) -> None:
        """Release what the sink holds, on close (called again by a second close)."""

    def __del__(self) -> None:
        # Dropped unclosed (the writer thread holds it weakly): hand on what it queued.
        try:
            if not self._closed:
                self.close()
        except Exception:  # nothing to report to at this point
            pass


class _FlushMark(threading.Event):
    """Queued by a flush after the calls it waits for; set once they are handed on (or
    dropped from a full queue)."""


_FLUSH_POLL = 0.01  # s: how often a waiting flush tries the lock (its mark may be queued
# after the holder's last take, or the holder may have died)


def _marks_in(entries: list[Any]) -> list[_FlushMark]:
    """Take the flush marks out of ``entries`` (in place); return them."""
    marks = [entry for entry in entries if entry.__class__ is _FlushMark]
    if marks:
        entries[:] = [entry for entry in entries if entry.__class__ is not _FlushMark]
    return marks


def _take(queue: deque[Any]) -> list[Any]:
    """What is queued now, oldest first (calls dropped from a full queue meanwhile are
    not waited for)."""
    taken: list[Any] = []
    take, pop = taken.append, queue.popleft
    try:
        for _ in range(len(queue)):
            take(pop())
    except IndexError:
        pass
    return taken


def _check_batching(interval: float | None, batch_size: int) -> None:
    if interval is not None and not interval > 0:
        raise ValueError("interval must be a positive number of seconds, or None")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")


class JsonlSink(_QueuedSink):
    """Appends one JSON line per call to a file; safe across threads and across ``fork``.

    By default the calls are queued and their lines encoded in one loop and written with
    one system call (see :class:`_QueuedSink` for when): what log shippers do, a reader
    sees each line within a second. ``flush=True`` encodes and writes each line on its
    call: every line is in the file (the operating system's cache) as soon as its call is
    over, for some 20–35 µs more of CPU per call. ``interval=None`` writes full batches
    only (the fewest system calls, for a steady, high call rate). A write that fails loses
    its lines, and is raised by the next ``emit``. Once closed, the sink raises on every
    call.
    """

    def __init__(
        self,
        path: str | Any,
        *,
        flush: bool = False,
        interval: float | None = 1.0,
        batch_size: int = 256,
    ) -> None:
        _check_batching(interval, batch_size)  # before the file is made
        self.path = path
        self._thread_name = f"JsonlSink ({path})"
        try:
            # Unbuffered: each write is one system call, and a fork copies no pending bytes.
            self._file = open(path, "ab", buffering=0)  # closed by close()
        except OSError as exc:
            raise ConfigError(f"cannot open the trace file {path}: {exc.strerror}") from None
        self._file_lock = threading.Lock()  # one write at a time, and none after close
        self._file_closed = False
        super().__init__(flush=flush, interval=interval, batch_size=batch_size)

    def _hand_on(self, entries: list[TracedCall]) -> Exception | None:
        error: Exception | None = None
        lines = []
        for call in entries:  # one loop: the encoder's code and data stay in cache
            try:
                lines.append(call.to_json())
            except Exception as exc:  # that line is lost, the others are written
                error = exc
        if lines:
            lines.append(b"")
            with self._file_lock:
                try:
                    if self._file_closed:
                        return ValueError(f"the trace file {self.path} is closed")
                    _write_all(self._file, b"\n".join(lines))
                except Exception as exc:
                    error = exc
        return error

    def _release(self) -> None:
        with self._file_lock:
            self._file_closed = True
            self._file.close()

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r})"


def _write_all(file: Any, data: bytes) -> None:
    """Write ``data`` to an unbuffered file (a regular file takes it all in one call)."""
    while data:
        written = file.write(data)
        if written is None:  # a non-blocking file that cannot take more now
            raise BlockingIOError(f"the trace file took no bytes of {len(data)}")
        data = data[written:]


def _write_after(
    sink_ref: weakref.ref[_QueuedSink],
    wake: threading.Event,
    stop: threading.Event,
    hurry: threading.Event,
    interval: float | None,
) -> None:
    """A queued sink's writer thread: once a call is queued, wait ``interval`` (or until
    the sink is closed, or hurried) and hand on what is queued. It holds the sink weakly,
    between batches."""
    while True:
        wake.wait()
        wake.clear()  # before the batch: a call queued after it sets it again
        if hurry.wait(interval) and not stop.is_set():
            hurry.clear()  # before the batch, as wake
        sink = sink_ref()
        if sink is None:
            return
        sink._hand_on_queued(wait=True, deferred=True)
        closed = sink._closed or stop.is_set()
        del sink
        if closed:
            return


_sinks: weakref.WeakSet[_QueuedSink] = weakref.WeakSet()  # what exit and fork visit
_watching = False


def _watch_exit_and_fork() -> None:
    """Hand on the queues at exit, and forget them in a forked child."""
    global _watching
    _register_exit()
    if _watching:
        return
    _watching = True
    import os

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_after_fork)


def _register_exit() -> None:
    """(Re-)register the exit handler, with each sink made and each writer thread started:
    exit handlers run last registered first, so it runs before those of what was set up
    before then (a tracer provider's shutdown, the ``logging`` module's)."""
    import atexit

    atexit.unregister(_write_at_exit)
    atexit.register(_write_at_exit)


def _write_at_exit() -> None:
    """At interpreter exit: hand on what every sink holds; a call traced later (by an exit
    handler that runs after this one) is handed on at once."""
    for sink in list(_sinks):
        try:
            sink._closed = True  # no more queueing (a JSONL file stays open)
            sink._direct = True
            sink.write_queued()  # an exporter flushed too
        except Exception:  # the process is ending: nothing to report to
            pass


def _forget_after_fork() -> None:
    """In a child made by fork: a queue and locks of its own, no writer thread yet."""
    for sink in list(_sinks):
        sink._lock = threading.Lock()
        sink._state_lock = threading.Lock()
        sink._clock_lock = threading.Lock()
        if isinstance(sink, JsonlSink):
            sink._file_lock = threading.Lock()
        sink._queue.clear()  # the parent hands on what it had queued
        sink._clock = None
        sink._wake = threading.Event()
        sink._stop = threading.Event()
        sink._hurry = threading.Event()
        sink._idle = sink.interval is not None
        sink._unreported = None  # a batch the parent lost is the parent's to report
        sink._flushes = 0  # the parent's flushes wait on the parent's queue
        if isinstance(sink, OpenTelemetrySink):
            sink._dropped = 0  # the parent's to report, as its queue
        sink._direct = sink.flush or sink._closed


class LoggingSink(_QueuedSink):
    """Logs one line per call (``connectors.tracing`` by default), the call itself in the
    record's ``traced_call`` attribute for handlers that want every field.

    The records are made and handled in batches by default (see :class:`_QueuedSink`),
    each as the call's own thread would have made it when the call ended: its time is
    the call's end; its thread (and on Python 3.12+ its asyncio task) the call's; and it
    is made and handled in the call's ``contextvars`` context, so that filters and record
    factories that read context (a request id, the current span's trace id) see the
    call's. No caller is looked up: the source fields say ``(unknown file)``, as
    ``logging`` does when it has none. A logger not enabled for ``level`` when the call
    ends costs nothing more. ``flush=True`` logs each record on its call: for handlers
    that must see it before the call returns (``caplog``, a handler that raises on error).
    A ``logging.LoggerAdapter`` is taken as its logger, with its ``extra``.
    """

    def __init__(
        self,
        logger: Any = None,
        level: int | str = "INFO",
        *,
        flush: bool = False,
        interval: float | None = 1.0,
        batch_size: int = 256,
    ) -> None:
        import logging

        if logger is None or isinstance(logger, str):
            logger = logging.getLogger(logger or LOGGER_NAME)
        self._extra: Mapping[str, Any] = {}
        if isinstance(logger, logging.LoggerAdapter):
            self._extra = dict(logger.extra or {})
            logger = logger.logger
        if not isinstance(logger, logging.Logger):
            raise ConfigError(f"LoggingSink needs a logging.Logger, not {logger!r}")
        self.logger = logger
        self.level = logging.getLevelName(level) if isinstance(level, str) else level
        if not isinstance(self.level, int):
            raise ConfigError(f"unknown logging level {level!r}")
        self._thread_name = "LoggingSink"
        super().__init__(flush=flush, interval=interval, batch_size=batch_size)

    def emit(self, call: TracedCall) -> None:
        if self.logger.isEnabledFor(self.level):
            super().emit(call)

    def _entry(self, call: TracedCall) -> _LogEntry:
        return call, threading.current_thread(), _task_name(), contextvars.copy_context()

    def _hand_on(self, entries: list[_LogEntry]) -> Exception | None:
        error: Exception | None = None
        log_one = self._log_one
        for call, thread, task, context in entries:
            try:
                context.run(log_one, call, thread, task)
            except Exception as exc:  # that record is lost, the others are logged
                error = exc
        return error

    def _log_one(self, call: TracedCall, thread: threading.Thread, task: str | None) -> None:
        logger = self.logger
        extra = {**self._extra, "traced_call": call} if self._extra else {"traced_call": call}
        record = logger.makeRecord(
            logger.name, self.level, "(unknown file)", 0, "%s", (_log_line(call),), None,
            "(unknown function)", extra,
        )  # fmt: skip
        ended = call.timestamp + call.latency
        record.relativeCreated -= (record.created - ended) * 1000
        record.created = ended
        record.msecs = int((ended - int(ended)) * 1000) + 0.0
        record.thread = thread.ident
        record.threadName = thread.name
        record.taskName = task
        logger.handle(record)

    def __repr__(self) -> str:
        return f"LoggingSink({self.logger.name!r})"


def _task_name() -> str | None:
    """The name of the asyncio task running on this thread, if any (``taskName``)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None or asyncio._get_running_loop() is None:
        return None
    task = asyncio.current_task()
    return None if task is None else task.get_name()


def _log_line(call: TracedCall) -> str:
    """A call in one line: ``openai.create_chat_completion 412.0 ms model=... tokens=...``."""
    parts = [f"{call.connector}.{call.operation}", f"{call.latency * 1000:.1f} ms"]
    if call.model:
        parts.append(f"model={call.model}")
    if call.tokens_input is not None or call.tokens_output is not None:
        parts.append(f"tokens={call.tokens_input}/{call.tokens_output}")
    if call.cost is not None:
        parts.append(f"cost=${call.cost:.6f}")
    if call.status_code is not None:
        parts.append(f"status={call.status_code}")
    if call.abandoned:
        parts.append("abandoned")
    if call.error is not None:
        parts.append(f"error={call.error.type}: {call.error.message}")
    return " ".join(parts)


class OpenTelemetrySink(_QueuedSink):
    """Turns each call into a finished OpenTelemetry span (kind CLIENT), with the call's
    attributes, its start time and its latency; an error sets the span's status.

    The span's name is ``"{operation} {request model}"`` for a model call (the GenAI
    conventions' ``{gen_ai.operation.name} {gen_ai.request.model}``), else
    ``"{connector}.{operation}"``. Its parent is the span current when the call ended (for
    a stream, where it was consumed), taken on the call's thread. Request and response
    content is opt-in, as in the GenAI conventions: ``capture_content=True`` adds
    ``connector_builder.input`` and ``connector_builder.output`` as JSON text.

    Two ways to send the spans:

    * **Through a tracer provider** (``tracer_provider``, else the global one): each span
      is made with the SDK's ``start_span`` and ends in the provider's processors (its
      sampler, processors and limits apply). The SDK alone takes some 15–23 µs of CPU per
      span, warm. The spans are made in batches (see :class:`_QueuedSink`), up to
      ``interval`` after their calls; the provider's ``force_flush()`` makes the queued
      spans first (the sink wraps it), so a serverless handler's closing ``force_flush()``
      sends them all. Call :meth:`Tracer.close` before the provider's ``shutdown()``.
    * **Straight to an exporter** (``exporter``: an SDK ``SpanExporter``, such as the OTLP
      one; ``resource`` defaults to ``Resource.create()``): the sink is the batch span
      processor. It makes each call's finished ``ReadableSpan`` itself, some 3 µs more
      than the memory sink per call, and its writer thread exports them, at most
      ``batch_size`` to an ``export``, with instrumentation suppressed. A span is sampled
      as its parent is (a root span always); ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``
      applies; no sampler, processor or id generator of a provider is involved
      (``OTEL_TRACES_SAMPLER`` and ``OTEL_SDK_DISABLED`` are not read). A call never
      exports: a full batch wakes the writer thread, and at most ``max_queued`` calls
      wait for a slow exporter (the oldest are dropped, and counted in a warning). A
      failed export is logged on ``connectors.tracing`` and its spans lost, as the SDK's
      processor does; it does not count towards switching the sink off (the exporter
      retries on its own). :meth:`Tracer.flush` and exit export the queue and flush the
      exporter; :meth:`Tracer.close` shuts it down, after which the sink raises.

    ``flush=True`` makes each span on its call (and exports it, in exporter mode).
    """

    def __init__(
        self,
        tracer_provider: Any = None,
        *,
        exporter: Any = None,
        resource: Any = None,
        capture_content: bool = False,
        flush: bool = False,
        interval: float | None = 1.0,
        batch_size: int = 256,
        max_queued: int = 4096,
    ) -> None:
        try:
            from opentelemetry import context, trace
        except ImportError:
            raise ConfigError(
                "OpenTelemetrySink needs the OpenTelemetry API: pip install opentelemetry-sdk"
            ) from None
        _check_batching(interval, batch_size)
        if exporter is not None and max_queued < batch_size:
            raise ValueError("max_queued must be at least batch_size")
        self._trace = trace
        self._current_context = context.get_current
        self._given_provider = tracer_provider
        self._hooked: Any = None  # the provider whose force_flush hands on the queue
        self._exporter = exporter
        self._export: _SpanExport | None = None
        if exporter is not None:
            if tracer_provider is not None:
                raise ConfigError("OpenTelemetrySink takes a tracer_provider or an exporter")
            self._export = _SpanExport(exporter, resource, trace)
        elif resource is not None:
            raise ConfigError(
                "OpenTelemetrySink: resource= goes with exporter= (a provider has its own)"
            )
        else:
            self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self.capture_content = capture_content
        self.max_queued = max_queued
        self._dropped = 0  # calls dropped from a full queue, not reported yet
        self._thread_name = "OpenTelemetrySink"
        super().__init__(flush=flush, interval=interval, batch_size=batch_size)
        if exporter is None:
            self._hook_force_flush()

    def _hook_force_flush(self) -> None:
        """Have the provider's ``force_flush`` hand on the queue first (an SDK provider;
        the global one is looked up again until it is one)."""
        provider = self._given_provider or self._trace.get_tracer_provider()
        if provider is self._hooked or self.flush:
            return
        if callable(getattr(provider, "force_flush", None)) and hasattr(
            provider, "add_span_processor"
        ):  # an SDK provider (the API's default one has no spans to flush)
            _hand_on_at_force_flush(self, provider)
            self._hooked = provider

    def _start_clock(self) -> None:
        if self._hooked is None and self._export is None:
            self._hook_force_flush()  # a global provider set after the sink was made
        super()._start_clock()

    def _hand_on_full(self) -> None:
        if self._export is None or self.flush or self._closed:
            super()._hand_on_full()
            return
        # An export may wait on the network: the writer thread does it, also without an
        # interval (and after a span failed to build: its failure is raised by the next
        # call), and the calls queued meanwhile are bounded.
        queue = self._queue
        if len(queue) > self.max_queued:
            marks: list[Any] = []
            with self._state_lock:  # one thread drops at a time: none drops too many
                try:
                    while len(queue) > self.max_queued:
                        dropped = queue.popleft()
                        if dropped.__class__ is _FlushMark:  # what it waits for is gone
                            marks.append(dropped)
                        else:
                            self._dropped += 1
                except IndexError:  # the writer thread took the queue meanwhile
                    pass
            if marks:
                self._met(marks)
        self._hurry_writer()

    def _entry(self, call: TracedCall) -> tuple[TracedCall, Any]:
        return call, self._current_context()

    def _name_and_attributes(self, call: TracedCall) -> tuple[str, dict[str, Any]]:
        from builder.runtime.tracing import _dumps  # loaded by now: the calls come from it

        model = call.request_model or call.response_model
        name = f"{call.operation} {model}" if model else f"{call.connector}.{call.operation}"
        attributes = call.attributes()
        if self.capture_content:
            attributes["connector_builder.input"] = _dumps(call.input).decode()
            attributes["connector_builder.output"] = _dumps(call.output).decode()
        return name, attributes

    def _hand_on(self, entries: list[tuple[TracedCall, Any]]) -> Exception | None:
        if self._export is not None:
            return self._export_spans(entries)
        trace = self._trace
        start_span, client = self._tracer.start_span, trace.SpanKind.CLIENT
        error: Exception | None = None
        for call, parent in entries:
            try:
                name, attributes = self._name_and_attributes(call)
                start = int(call.timestamp * 1e9)
                span = start_span(
                    name, parent, kind=client, start_time=start, attributes=attributes
                )
                if call.error is not None:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, call.error.message))
                span.end(end_time=start + int(call.latency * 1e9))
            except Exception as exc:  # that span is lost, the others are made
                error = exc
        return error

    def _export_spans(self, entries: list[tuple[TracedCall, Any]]) -> Exception | None:
        export = self._export
        assert export is not None
        if export.shut:
            return ValueError("the OpenTelemetrySink is closed (its exporter is shut down)")
        with self._state_lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            _logger().warning(
                "OpenTelemetrySink: %d calls dropped, more than max_queued=%d waited for "
                "the exporter",
                dropped,
                self.max_queued,
            )
        spans: list[Any] = []
        error: Exception | None = None
        span_for, describe = export.span, self._name_and_attributes
        for call, context in entries:
            try:
                span = span_for(call, context, describe)
                if span is not None:
                    spans.append(span)
            except Exception as exc:  # that span is lost, the others are exported
                error = exc
        size = self.batch_size
        for start in range(0, len(spans), size):
            export.send(spans[start : start + size])
        return error

    def write_queued(self) -> None:
        """Hand on what is queued now; in exporter mode, then flush the exporter."""
        try:
            super().write_queued()
        finally:
            if self._export is not None:
                self._export.flush()

    def _release(self) -> None:
        if self._export is not None:
            self._export.shutdown()
        sinks = None if self._hooked is None else _flushed_with.get(self._hooked)
        if sinks is not None:
            sinks.discard(self)

    def __repr__(self) -> str:
        if self._exporter is not None:
            return f"OpenTelemetrySink(exporter={self._exporter!r})"
        return "OpenTelemetrySink()"


_SCOPE = "connector-builder"  # the instrumentation scope of the spans


def _logger() -> Any:
    import logging

    return logging.getLogger(LOGGER_NAME)


class _SpanExport:
    """An :class:`OpenTelemetrySink`'s exporter mode: a call made into a finished SDK
    ``ReadableSpan`` (what a provider's span is once ended), and spans sent to the
    exporter."""

    def __init__(self, exporter: Any, resource: Any, trace: Any) -> None:
        if not callable(getattr(exporter, "export", None)):
            raise ConfigError(f"OpenTelemetrySink needs a SpanExporter, not {exporter!r}")
        try:
            from opentelemetry import context
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
            from opentelemetry.sdk.trace.export import SpanExportResult
            from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        except ImportError:
            raise ConfigError(
                "OpenTelemetrySink(exporter=...) needs the OpenTelemetry SDK: "
                "pip install opentelemetry-sdk"
            ) from None
        self.exporter = exporter
        self.shut = False
        self._failure = SpanExportResult.FAILURE
        self._readable = ReadableSpan
        self._resource = Resource.create() if resource is None else resource
        self._scope = InstrumentationScope(_SCOPE)
        self._limit = SpanLimits().max_span_attribute_length  # None: no limit
        self._context = context  # an export runs with instrumentation suppressed
        self._suppress = getattr(context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
        ids = RandomIdGenerator()
        self._new_trace_id, self._new_span_id = ids.generate_trace_id, ids.generate_span_id
        self._span_context = trace.SpanContext
        # Sampled, and (SDK 1.39+: W3C Trace Context level 2) whether the trace id is random.
        flags = trace.TraceFlags
        self._random = getattr(flags, "RANDOM_TRACE_ID", 0)
        self._child_flags = (flags(flags.SAMPLED), flags(flags.SAMPLED | self._random))
        self._root_flags = self._child_flags[1 if self._random else 0]
        self._current_span, self._client = trace.get_current_span, trace.SpanKind.CLIENT
        self._unset = trace.Status(trace.StatusCode.UNSET)
        self._status, self._error = trace.Status, trace.StatusCode.ERROR

    def span(
        self,
        call: TracedCall,
        context: Any,
        describe: Callable[[TracedCall], tuple[str, dict[str, Any]]],
    ) -> Any:
        """The finished span of ``call``, emitted in ``context``; None when its parent
        is not sampled."""
        parent = self._current_span(context).get_span_context()
        if parent.is_valid:
            if not parent.trace_flags.sampled:
                return None
            flags = self._child_flags[1 if parent.trace_flags & self._random else 0]
            span_context = self._span_context(
                parent.trace_id, self._new_span_id(), False, flags, parent.trace_state
            )
        else:
            parent = None
            span_context = self._span_context(
                self._new_trace_id(), self._new_span_id(), False, self._root_flags
            )
        name, attributes = describe(call)
        if self._limit is not None:
            attributes = _truncated(attributes, self._limit)
        error = call.error
        start = int(call.timestamp * 1e9)
        return self._readable(
            name,
            span_context,
            parent,
            self._resource,
            attributes,
            kind=self._client,
            status=self._unset if error is None else self._status(self._error, error.message),
            start_time=start,
            end_time=start + int(call.latency * 1e9),
            instrumentation_scope=self._scope,
        )

    def send(self, spans: list[Any]) -> None:
        """Export ``spans``; a failure loses them and is logged (not raised)."""
        # As the SDK's processors do: an instrumented HTTP client makes no span of this.
        context, suppress = self._context, self._suppress
        token = context.attach(context.set_value(suppress, True)) if suppress else None
        try:
            if self.exporter.export(spans) == self._failure:
                _logger().warning(
                    "OpenTelemetrySink: the exporter failed to export %d spans", len(spans)
                )
        except Exception:
            _logger().warning(
                "OpenTelemetrySink: the exporter raised; %d spans lost", len(spans), exc_info=True
            )
        finally:
            if token is not None:
                context.detach(token)

    def flush(self) -> None:
        force_flush = getattr(self.exporter, "force_flush", None)
        if force_flush is not None and not self.shut:
            force_flush()

    def shutdown(self) -> None:
        if not self.shut:
            self.shut = True
            self.exporter.shutdown()


def _truncated(attributes: dict[str, Any], limit: int) -> dict[str, Any]:
    """``attributes`` with strings (and strings in sequences) cut to ``limit`` characters,
    as the SDK's attribute limits cut them."""
    for key, value in attributes.items():
        if isinstance(value, str):
            if len(value) > limit:
                attributes[key] = value[:limit]
        elif isinstance(value, tuple):
            attributes[key] = tuple(
                v[:limit] if isinstance(v, str) and len(v) > limit else v for v in value
            )
    return attributes


# Per SDK provider, the sinks its force_flush hands on first (one wrapper per provider).
_flushed_with: weakref.WeakKeyDictionary[Any, weakref.WeakSet[OpenTelemetrySink]] = (
    weakref.WeakKeyDictionary()
)


def _hand_on_at_force_flush(sink: OpenTelemetrySink, provider: Any) -> None:
    """Have ``provider.force_flush()`` hand on ``sink``'s queue, then flush as it would.

    The provider's own method is wrapped on the instance, once: a span processor of ours
    would be flushed last, after the processors the new spans go to, and flushing them
    again from inside the provider's flush deadlocks a ``ConcurrentMultiSpanProcessor``
    whose threads are all busy with that flush."""
    sinks = _flushed_with.get(provider)
    if sinks is None:
        sinks = _flushed_with[provider] = weakref.WeakSet()
        flush = provider.force_flush

        @functools.wraps(flush)
        def force_flush(timeout_millis: int = 30000) -> bool:
            for queued in list(sinks):  # (a batch under way too: a failure is raised
                queued._flush_queued(deferred=True)  # by the sink's next call)
            return bool(flush(timeout_millis))

        provider.force_flush = force_flush
    sinks.add(sink)
