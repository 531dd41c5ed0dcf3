"""NATS JetStream: publish with acknowledgements, consume through a durable pull consumer.

nats-py is asyncio-only, so each connector owns a private event loop running in a daemon
thread; the sync API hands coroutines to it and waits. ``close()`` drains the connection,
stops the loop and joins the thread.

Delivery:

- ``write(records)`` publishes every record and waits for JetStream's acknowledgement of
  each (the message is stored in the stream). Records without one — a timeout, no stream
  for the subject, a stream limit — are raised in a :class:`WriteError` in their order. A
  timed-out publish may still have been stored: with the ``msg_id_field`` option each
  message carries ``Nats-Msg-Id`` and JetStream drops a repeat within the stream's
  duplicate window (2 minutes by default), so retrying ``failed`` stores each record once.
- ``read()`` fetches from the durable consumer named by ``durable`` and acknowledges a
  message once the consumer asks for the next one (acks are sent in batches, at the latest
  every second and before each fetch). A consumer that stops early leaves the last
  message unacknowledged: it and the fetched but unread ones are given back to the stream
  (NAK) so the next reader gets them at once. If the process dies instead, JetStream
  redelivers them after the consumer's ``ack_wait`` (30 s by default). Without
  ``durable`` the consumer is ephemeral: each ``read()`` starts at the stream's beginning.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from builder.runtime.errors import (
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    TimeoutError,
    TransportError,
    WriteError,
)
from builder.runtime.transports.base import DataConnector, Message, records_of

__all__ = ["NatsConnector"]

T = TypeVar("T")

FETCH_BATCH = 256  # messages per pull request; each is in flight until acknowledged
PUBLISH_CHUNK = 3500  # messages published before waiting for their acks (nats-py allows 4000)
ACK_EVERY = 1.0  # seconds: the longest a consumed message waits for its ack to be sent
MSG_ID_HEADER = "Nats-Msg-Id"


class _LoopThread:
    """A private asyncio event loop in a daemon thread, driven from sync code."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s") from None

    def stop(self) -> None:
        """Cancel what is left on the loop, stop it and join its thread."""
        if not self._thread.is_alive():
            return
        try:
            self.run(_cancel_other_tasks(), timeout=5)
        except Exception:  # a task that will not die: stop the loop regardless
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class _Session:
    """An open connection: the loop thread, the client and its JetStream context."""

    def __init__(self, loop: _LoopThread, client: Any, timeout: float) -> None:
        self.loop = loop
        self.client = client
        self.jetstream = client.jetstream(timeout=timeout)
        self.timeout = timeout
        self.streams_ready: set[str] = set()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.loop.run(coroutine, self.timeout if timeout is None else timeout)

    def close(self) -> None:
        try:
            if not self.client.is_closed:
                self.run(self.client.drain())
        finally:
            self.loop.stop()


class NatsConnector(DataConnector):
    """Source and sink over a NATS JetStream stream."""

    _name = "nats"

    # -- connection --------------------------------------------------------------------

    def _connect(self) -> _Session:
        import nats

        timeout = float(self.config.get("timeout") or 10.0)
        loop = _LoopThread(f"nats-{self._name}")
        try:
            client = loop.run(self._open(nats, timeout), timeout + 1)
        except BaseException:
            loop.stop()
            raise
        return _Session(loop, client, timeout)

    async def _open(self, nats: Any, timeout: float) -> Any:
        """Connect, failing fast on an authorization error instead of retrying for ever."""
        servers = [s.strip() for s in str(self.config.get("servers") or "").split(",") if s.strip()]
        errors: list[BaseException] = []
        refused = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            # nats-py retries every failure while connecting; remember why it failed.
            if isinstance(exc, nats.errors.AuthorizationError) or "Authorization" in str(exc):
                refused.set()
                errors.insert(0, exc)  # the reason to report, whatever follows it
            else:
                errors.append(exc)

        auth: dict[str, Any] = {}
        user = self.config.reveal("user") if "user" in self.config else None
        if user:
            auth["user"] = user
            auth["password"] = self.config.reveal("password") or ""
        token = self.config.reveal("token") if "token" in self.config else None
        if token:
            auth["token"] = token
        connecting = asyncio.ensure_future(
            nats.connect(
                servers or "nats://127.0.0.1:4222",
                connect_timeout=min(timeout, 2.0),
                reconnect_time_wait=0.5,
                max_reconnect_attempts=60,  # ~30 s of outage tolerated once connected
                error_cb=on_error,
                **auth,
            )
        )
        refusal = asyncio.ensure_future(refused.wait())
        await asyncio.wait({connecting, refusal}, timeout=timeout, return_when="FIRST_COMPLETED")
        refusal.cancel()
        if connecting.done() and connecting.exception() is None:
            return connecting.result()
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        reason = connecting.exception() if not connecting.cancelled() else None
        if refused.is_set() or reason is None:
            reason = errors[0] if refused.is_set() else (errors[-1] if errors else None)
        if reason is None:
            raise ConnectionFailedError(
                f"could not connect within {timeout:g} s", connector=self._name
            )
        raise self._error(reason, ConnectionFailedError) from None

    def _close(self, connection: Any) -> None:
        connection.close()

    def _stream_and_subject(self, subject: str | None) -> tuple[str, str]:
        (stream,) = self._require("stream")
        subject = subject or self.config.get("subject") or stream
        return str(stream), str(subject)

    def _ensure_stream(self, session: _Session, stream: str, subject: str) -> None:
        """Create the stream, capturing ``subject``, unless it exists."""
        if stream in session.streams_ready:
            return
        import nats.js.errors

        async def ensure() -> None:
            try:
                await session.jetstream.stream_info(stream)
            except nats.js.errors.NotFoundError:
                await session.jetstream.add_stream(name=stream, subjects=[subject])

        self._call(session, ensure(), "stream")
        session.streams_ready.add(stream)

    def _call(
        self,
        session: _Session,
        coroutine: Coroutine[Any, Any, T],
        operation: str,
        timeout: float | None = None,
    ) -> T:
        try:
            return session.run(coroutine, timeout)
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._error(exc, TransportError, operation=operation) from None

    # -- sink ----------------------------------------------------------------------------

    def write(self, records: Any, *, subject: str | None = None) -> int:
        """Publish each record to ``subject`` (default: the ``subject`` setting) and wait
        for JetStream to store it; returns how many were stored.

        A record may be a :class:`Message`: its ``value`` is the payload, its ``headers``
        are sent, its ``key`` as ``Nats-Msg-Id`` and its ``topic``, if not empty, is the
        subject (one of the stream's).
        """
        pending = records_of(records)
        return self._write_reported(pending, lambda batch: self._write(batch, subject))

    def _write(self, pending: list[Any], subject: str | None) -> int:
        stream, subject = self._stream_and_subject(subject)
        try:
            outgoing = [self._outgoing(record, subject) for record in pending]
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise WriteError(
                f"a record could not be encoded, nothing was written: {exc}",
                written=0,
                failed=pending,
                connector=self._name,
                operation="write",
            ) from None
        session = self.connection
        self._ensure_stream(session, stream, subject)
        outcomes: list[BaseException | None] = []
        for start in range(0, len(outgoing), PUBLISH_CHUNK):
            end = start + PUBLISH_CHUNK
            chunk = self._call(
                session,
                self._publish_all(session, stream, outgoing[start:end]),
                "write",
                session.timeout + 5,  # publishing is quick; the acks get the whole timeout
            )
            outcomes.extend(chunk)
            if any(chunk):  # the server is refusing or gone: do not send the rest
                not_sent = ConnectorError("not sent: an earlier message was not acknowledged")
                outcomes.extend(not_sent for _ in outgoing[end:])
                break
        metrics = self.metrics
        metrics.batches += 1
        written = 0
        failed: list[Any] = []
        first_error: BaseException | None = None
        for record, (_, payload, _), outcome in zip(pending, outgoing, outcomes, strict=True):
            if outcome is None:
                written += 1
                metrics.bytes_written += len(payload)
            else:
                failed.append(record)
                first_error = first_error or outcome
        metrics.records_written += written
        if failed:
            assert first_error is not None
            reason = self._error(first_error).message
            raise WriteError(
                f"JetStream stored {written} of {len(pending)} messages; "
                f"{len(failed)} were not acknowledged ({reason})",
                written=written,
                failed=failed,
                connector=self._name,
                operation="write",
            )
        return written

    def _outgoing(self, record: Any, subject: str) -> tuple[str, bytes, dict[str, str] | None]:
        """(subject, payload, headers) of one record."""
        if isinstance(record, Message):
            headers = {str(k): str(v) for k, v in record.headers.items()}
            if record.key is not None:
                headers[MSG_ID_HEADER] = str(record.key)
            return record.topic or subject, self.payloads.encode(record.value), headers or None
        id_field = self._options.get("msg_id_field")
        if not id_field:
            return subject, self.payloads.encode(record), None
        msg_id = record[id_field] if isinstance(record, dict) else getattr(record, id_field)
        return subject, self.payloads.encode(record), {MSG_ID_HEADER: str(msg_id)}

    async def _publish_all(
        self,
        session: _Session,
        stream: str,
        outgoing: list[tuple[str, bytes, dict[str, str] | None]],
    ) -> list[BaseException | None]:
        """Publish without waiting between messages, then wait for every ack; each
        message's outcome is None (stored) or why it was not."""
        jetstream = session.jetstream
        outcomes: list[BaseException | None] = [None] * len(outgoing)
        acks: list[tuple[int, asyncio.Future[Any]]] = []
        for index, (subject, payload, headers) in enumerate(outgoing):
            try:
                # No wait_stall: a chunk stays below nats-py's limit of pending acks.
                ack = await jetstream.publish_async(
                    subject, payload, stream=stream, headers=headers
                )
            except Exception as exc:  # not sent: this one and the rest fail
                for rest in range(index, len(outgoing)):
                    outcomes[rest] = exc
                break
            acks.append((index, ack))
        if acks:
            done, not_done = await asyncio.wait([a for _, a in acks], timeout=session.timeout)
            for future in not_done:
                future.cancel()
            for index, ack in acks:
                if ack not in done:
                    outcomes[index] = TimeoutError(f"no acknowledgement in {session.timeout:g} s")
                elif ack.exception() is not None:
                    outcomes[index] = ack.exception()
        return outcomes

    # -- source --------------------------------------------------------------------------

    def read(self, *, follow: bool = False) -> Iterator[Message[Any]]:
        """Messages of the stream (on ``subject``, if set), oldest unacknowledged first.

        Ends once none arrives within ``idle_timeout`` seconds, unless ``follow``.
        """
        return self._counted(self._messages(follow))

    def _messages(self, follow: bool) -> Iterator[Message[Any]]:
        stream, subject = self._stream_and_subject(None)
        idle = float(self.config.get("idle_timeout") or 1.0)
        session = self.connection
        self._ensure_stream(session, stream, subject)
        puller = _Puller(session, stream, self.config.get("durable") or None, subject)
        self._call(session, puller.start(), "read")
        fetched: deque[Any] = deque()
        consumed: list[Any] = []  # the consumer moved past these: to be acknowledged
        current: Any = None  # handed out, not yet moved past
        last_ack = time.monotonic()
        try:
            while True:
                if not fetched:
                    # One trip to the loop thread: ack what was consumed, then pull.
                    acknowledge, consumed, last_ack = consumed, [], time.monotonic()
                    batch = self._call(
                        session,
                        puller.fetch(FETCH_BATCH, idle, acknowledge=acknowledge),
                        "read",
                        idle + session.timeout,
                    )
                    if not batch:
                        if follow:
                            continue
                        return
                    fetched.extend(batch)
                current = fetched.popleft()
                message = self._message(current)
                yield message
                consumed.append(current)
                current = None
                if time.monotonic() - last_ack >= ACK_EVERY:
                    acknowledge, consumed, last_ack = consumed, [], time.monotonic()
                    self._call(session, puller.settle(acknowledge, []), "read")
        finally:
            if current is not None:
                fetched.appendleft(current)
            if self._connection is session and not session.client.is_closed:
                try:
                    session.run(puller.stop(consumed, list(fetched)))
                except Exception:  # the server redelivers them after ack_wait
                    pass

    def _message(self, msg: Any) -> Message[Any]:
        sequence, timestamp = _sequence_and_time(msg)
        # Nats-Expected-* are the publisher's checks, not the message's own headers.
        headers = (
            {k: v for k, v in msg.headers.items() if not k.startswith("Nats-Expected")}
            if msg.headers
            else {}
        )
        self.metrics.bytes_read += len(msg.data)
        try:
            value = self.payloads.decode(msg.data)
        except Exception as exc:  # counted as an error by _counted
            raise self._error(exc, ResponseValidationError, operation="read") from None
        return Message(
            value=value,
            topic=msg.subject,
            id=sequence,
            key=headers.get(MSG_ID_HEADER),
            headers=headers,
            timestamp=timestamp,
        )


def _sequence_and_time(msg: Any) -> tuple[int, float]:
    """The stream sequence and the time stored of a JetStream message, read from its ack
    subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<cseq>.<ns>.<pending>``, or
    the newer form with a domain and an account hash before the stream (and a token at
    the end). nats-py's ``msg.metadata`` parses the same, at a sixth of the speed."""
    tokens = msg.reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[7]) / 1e9
    if len(tokens) >= 11:
        return int(tokens[7]), int(tokens[9]) / 1e9
    metadata = msg.metadata  # any other form: let nats-py make sense of it
    return metadata.sequence.stream, metadata.timestamp.timestamp()


class _Puller:
    """Pulls from a JetStream consumer without ever leaving a request waiting on the server.

    A waiting pull request that outlives its reader would take the messages the reader
    gives back (NAK) and send them to an inbox nobody reads, delaying them by ``ack_wait``.
    So each pull asks either for what is there now (``no_wait``) or, when nothing is, for
    one message with an expiry, and both end before ``fetch`` returns.
    """

    def __init__(self, session: _Session, stream: str, durable: str | None, subject: str) -> None:
        self.session = session
        self.stream = stream
        self.durable = durable
        self.subject = subject
        self.consumer = durable or ""
        self.inbox = ""
        self.subscription: Any = None

    async def start(self) -> None:
        import nats.js.errors

        manager = self.session.jetstream
        try:
            if self.durable is None:
                raise nats.js.errors.NotFoundError
            await manager.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            info = await manager.add_consumer(
                self.stream,
                durable_name=self.durable,
                ack_policy="explicit",
                filter_subject=self.subject,
                # An ephemeral consumer goes away once nobody has pulled for a while.
                inactive_threshold=None if self.durable else 60.0,
            )
            self.consumer = info.name
        client = self.session.client
        self.inbox = client.new_inbox()
        self.subscription = await client.subscribe(self.inbox)

    async def fetch(self, batch: int, wait: float, acknowledge: list[Any]) -> list[Any]:
        """Ack ``acknowledge``; then up to ``batch`` messages that are there now, else the
        first to arrive within ``wait`` seconds; an empty list if none does."""
        for msg in acknowledge:  # sent before the pull, so the server has them first
            await msg.ack()
        messages = await self._pull({"batch": batch, "no_wait": True}, batch, self.session.timeout)
        if messages:
            return messages
        expires = max(int(wait * 1e9), 1_000_000)
        return await self._pull({"batch": 1, "expires": expires}, 1, wait + self.session.timeout)

    async def _pull(self, request: dict[str, Any], batch: int, deadline: float) -> list[Any]:
        import json

        client = self.session.client
        await client.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}",
            json.dumps(request).encode(),
            reply=self.inbox,
        )
        messages: list[Any] = []
        end = time.monotonic() + deadline
        while len(messages) < batch:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the pull request got no answer within {deadline:g} s")
            try:
                msg = await self.subscription.next_msg(timeout=remaining)
            except builtins.TimeoutError:  # nats-py's timeout is a subclass
                raise TimeoutError(
                    f"the pull request got no answer within {deadline:g} s"
                ) from None
            status = (msg.headers or {}).get("Status") if not msg.data else None
            if status is None:
                messages.append(msg)
            elif status in ("404", "408"):  # no messages / the request expired: it is over
                break
            elif status != "100":  # 100 is a heartbeat; anything else is a failure
                description = msg.headers.get("Description", "")
                raise TransportError(f"JetStream answered the pull with {status} {description}")
        return messages

    async def settle(self, acknowledge: list[Any], give_back: list[Any]) -> None:
        """Ack what was consumed and NAK what was not (so it is redelivered at once); the
        server has both when this returns."""
        for msg in acknowledge:
            await msg.ack()
        for msg in give_back:
            await msg.nak()
        await self.session.client.flush(timeout=max(1, int(self.session.timeout)))

    async def stop(self, acknowledge: list[Any], give_back: list[Any]) -> None:
        try:
            await self.settle(acknowledge, give_back)
        finally:
            if self.subscription is not None:
                await self.subscription.unsubscribe()
            if self.durable is None and self.consumer:
                await self.session.jetstream.delete_consumer(self.stream, self.consumer)
