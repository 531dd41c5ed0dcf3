"""The base classes of generated clients: one sync, one async, sharing everything but I/O."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from typing import Any, Generic, TypeVar

import httpx

from builder.runtime import errors
from builder.runtime import tracing as _tracing
from builder.runtime.auth import credential_values
from builder.runtime.config import Config, redact_logs, scrub
from builder.runtime.operation import Operation, Service, styled_query, wire_text, wire_value
from builder.runtime.pagination import PageWalk
from builder.runtime.pipeline import SEND, SLEEP, BodyTooLarge, Pipeline, Plan
from builder.runtime.resilience import CircuitBreaker, RetryPolicy, TokenBucket
from builder.runtime.streaming import SSEDecoder
from builder.runtime.tracing import CallTrace, ClientTracing, StreamTrace, Tracer

__all__ = ["AsyncClient", "AsyncPager", "AsyncStream", "Pager", "Stream", "SyncClient"]

T = TypeVar("T")
C = TypeVar("C", bound="SyncClient | AsyncClient")
_JSON_HEADERS = {"Content-Type": "application/json"}


class _Core:
    """State and request building shared by the sync and async clients."""

    _service: Service
    _tracer: Tracer | None = None  # None: the process-wide tracer (tracing.get_tracer())
    _tracing: ClientTracing | None = None  # made on the first traced call

    def _setup(
        self,
        config: Config,
        *,
        timeout: float | None,
        retry: RetryPolicy | None,
        auth: object,
        tracer: Tracer | None = None,
    ) -> dict[str, Any]:
        service = self._service
        self.config = config
        if tracer is not None and not isinstance(tracer, Tracer):
            raise TypeError(f"tracer= takes a Tracer (e.g. Tracer(sink)), not {tracer!r}")
        self._tracer = tracer
        base_url = config.get("base_url") or service.base_url
        self._timeout = timeout if timeout is not None else service.timeout
        credentials = (service.auth if auth is None else _custom_auth()).credentials(config, auth)
        limiter = TokenBucket(*service.rate_limit) if service.rate_limit else None
        breaker = CircuitBreaker(*service.circuit_breaker) if service.circuit_breaker else None
        secrets = config.secret_values() + credential_values(credentials)
        if secrets:
            redact_logs(secrets)
        self._pipeline = Pipeline(
            service.name,
            retry or service.retry,
            limiter,
            breaker,
            service.quota_headers,
            secrets,
        )
        headers = {"User-Agent": f"connector-builder ({service.name})", **service.headers}
        headers.update(credentials.headers)
        return {
            "base_url": base_url,
            "headers": headers,
            "params": credentials.params or None,
            "cookies": credentials.cookies or None,
            "auth": credentials.auth,
            "timeout": self._timeout,
        }

    @property
    def circuit_breaker(self) -> CircuitBreaker | None:
        return self._pipeline.breaker

    def _trace_context(self) -> ClientTracing:
        context = self._tracing
        if context is None:
            service = self._service
            context = self._tracing = ClientTracing(
                service.name, service.provider, service.pricing, self._pipeline.secrets
            )
        return context

    def _build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        op: Operation[Any],
        path: Mapping[str, Any] | None,
        query: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        body: Any,
        url: str | None = None,
        cookies: Mapping[str, Any] | None = None,
    ) -> httpx.Request:
        params: Any = None
        if query:
            if op.styles:
                params = [
                    pair
                    for k, v in query.items()
                    if v is not None
                    for pair in styled_query(k, v, op.styles.get(k))
                ]
            else:
                params = {k: wire_value(v) for k, v in query.items() if v is not None}
        if headers:
            headers = {k: wire_text(v) for k, v in headers.items() if v is not None}
        if cookies:
            # Cookie parameters join the client's cookies (an API key sent as a cookie).
            pairs = dict(http.cookies.items())
            pairs.update((k, wire_text(v)) for k, v in cookies.items() if v is not None)
            jar = "; ".join(f"{k}={v}" for k, v in pairs.items())
            if jar:
                headers = {**(headers or {}), "Cookie": jar}
        content = data = files = None
        if body is not None:
            kind = op.body_kind
            if kind == "json":
                if isinstance(body, dict):
                    body = {k: v for k, v in body.items() if v is not None}
                content = _to_json(body, by_alias=True, exclude_none=True)
                headers = {**_JSON_HEADERS, **headers} if headers else _JSON_HEADERS
            elif kind in ("form", "multipart"):
                data, files = _form_fields(body, multipart=kind == "multipart")
            else:  # binary or text: the body as it is
                content = body.encode() if isinstance(body, str) else body
                default_type = (
                    "text/plain; charset=utf-8" if kind == "text" else "application/octet-stream"
                )
                headers = {"Content-Type": op.media_type or default_type, **(headers or {})}
        if url is not None:
            # A next link carries its own query; httpx would replace it by the client's
            # params (a query API key), so pass it explicitly and let httpx merge the two.
            next_url = httpx.URL(url)
            target: str | httpx.URL = next_url
            params = next_url.params
        else:
            target = op.url_path(path)
        return http.build_request(
            op.method,
            target,
            params=params,
            headers=headers,
            content=content,
            data=data,
            files=files,
            timeout=op.timeout if op.timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    def _decode(self, op: Operation[Any], response: httpx.Response) -> Any:
        kind = op.response_kind
        if kind == "json":
            try:
                if op.response is None:
                    return json.loads(response.content) if response.content else None
                return op.response.from_json(response.content)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError too
                raise self._pipeline.validation_error(op, response, exc) from None
        if kind == "text":
            return response.text
        if kind == "bytes":
            return response.content
        return None

    def _page_items(
        self, op: Operation[Any], walk: PageWalk, response: httpx.Response
    ) -> tuple[Any, list[Any], list[Any]]:
        try:
            body = json.loads(response.content) if response.content else None
            raw = walk.items(body)
            items = op.response.from_python(raw) if op.response is not None else raw
        except ValueError as exc:
            raise self._pipeline.validation_error(op, response, exc) from None
        return body, raw, items

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def _custom_auth() -> Any:
    from builder.runtime.auth import CustomAuth

    return CustomAuth()


def _adopt(
    http: httpx.Client | httpx.AsyncClient, options: dict[str, Any], *, explicit_timeout: bool
) -> None:
    """Give a caller's own httpx client what the connector needs: base URL (where it has
    none), credentials, default headers, and the timeout when one was passed explicitly."""
    if not str(http.base_url):
        http.base_url = options["base_url"]
    http.headers.update(options["headers"])
    if options["params"]:
        http.params = http.params.merge(options["params"])
    if options["cookies"]:
        http.cookies.update(options["cookies"])
    if options["auth"] is not None:
        http.auth = options["auth"]
    if explicit_timeout:
        http.timeout = httpx.Timeout(options["timeout"])


def _form_fields(body: Any, *, multipart: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Form fields (and, for multipart, files: bytes, file objects or (name, data, type))."""
    if not isinstance(body, Mapping):
        dump = getattr(body, "model_dump", None)
        body = dump(by_alias=True, exclude_none=True) if dump else {}
    data: dict[str, Any] = {}
    files: dict[str, Any] = {}
    for key, value in body.items():
        if value is None:
            continue
        if multipart and (isinstance(value, bytes | tuple) or hasattr(value, "read")):
            files[key] = value
        elif isinstance(value, list | tuple):
            data[key] = [wire_text(v) for v in value]
        elif isinstance(value, dict) or hasattr(value, "model_dump"):
            data[key] = _to_json(value, by_alias=True, exclude_none=True).decode()
        else:
            data[key] = wire_text(value)
    return data, (files or None) if multipart else None


def _deadline(request: httpx.Request) -> float:
    """When the whole response must have arrived: httpx's timeouts bound each network
    operation (a body trickling in never trips them); the timeout bounds the call."""
    budget = (request.extensions.get("timeout") or {}).get("read")
    return time.monotonic() + budget if budget else float("inf")


class _Deadline(httpx.SyncByteStream):
    """A response body that raises ReadTimeout once the deadline passes, and BodyTooLarge
    once it outgrows the limit (so an endless or huge body never fills memory)."""

    def __init__(
        self, stream: Any, deadline: float, request: httpx.Request, limit: int | None = None
    ) -> None:
        self._stream, self._deadline, self._request = stream, deadline, request
        self._limit = limit if limit else float("inf")

    def __iter__(self) -> Iterator[bytes]:
        size = 0
        for chunk in self._stream:
            if time.monotonic() > self._deadline:
                raise httpx.ReadTimeout(
                    "the response took longer than the timeout", request=self._request
                )
            size += len(chunk)
            if size > self._limit:
                raise _too_large(self._limit, self._request)
            yield chunk

    def close(self) -> None:
        self._stream.close()


class _AsyncDeadline(httpx.AsyncByteStream):
    def __init__(
        self, stream: Any, deadline: float, request: httpx.Request, limit: int | None = None
    ) -> None:
        self._stream, self._deadline, self._request = stream, deadline, request
        self._limit = limit if limit else float("inf")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._stream:
            if time.monotonic() > self._deadline:
                raise httpx.ReadTimeout(
                    "the response took longer than the timeout", request=self._request
                )
            size += len(chunk)
            if size > self._limit:
                raise _too_large(self._limit, self._request)
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


def _too_large(limit: float, request: httpx.Request) -> BodyTooLarge:
    return BodyTooLarge(f"the response body is larger than {int(limit):,} bytes", request=request)


_serializer: Any = None


def _to_json(value: Any, **options: Any) -> bytes:
    """pydantic-core's serializer (models, dates, UUIDs...), imported on first use."""
    global _serializer
    if _serializer is None:
        from pydantic_core import to_json

        _serializer = to_json
    return _serializer(value, **options)  # type: ignore[no-any-return]


class SyncClient(_Core):
    """Base of generated synchronous clients."""

    def __init__(
        self,
        config: Config,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        auth: object = None,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        options = self._setup(config, timeout=timeout, retry=retry, auth=auth, tracer=tracer)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(transport=transport, **options)
        if http_client is not None:
            _adopt(http_client, options, explicit_timeout=timeout is not None)

    def _run(self, plan: Plan, streamed: bool = False) -> httpx.Response:
        send = self._http.send
        limit = self._service.max_response_bytes
        try:
            action, arg = next(plan)
            while True:
                if action is SEND:
                    try:
                        if streamed:
                            response = send(arg, stream=True)
                        else:
                            deadline = _deadline(arg)
                            response = send(arg, stream=True)
                            try:
                                response.stream = _Deadline(response.stream, deadline, arg, limit)
                                response.read()
                            except BaseException:
                                response.close()  # its connection is not left to the collector
                                raise
                    except httpx.HTTPError as exc:
                        action, arg = plan.throw(exc)
                        continue
                    action, arg = plan.send(response)
                elif action is SLEEP:
                    time.sleep(arg)
                    action, arg = plan.send(None)
                else:  # READ: an error response of a stream, read before it is reported
                    arg.stream = _Deadline(arg.stream, _deadline(arg.request), arg.request, limit)
                    try:
                        arg.read()
                    except BaseException as exc:
                        arg.close()  # too large, too slow, cut or cancelled: not reused
                        if not isinstance(exc, httpx.HTTPError):
                            raise
                        # (an HTTP error: the status is reported without its body)
                    action, arg = plan.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except BaseException:
            # Failed, cancelled or interrupted, wherever the plan was (sending, waiting,
            # reading an error body): closed now, so that it releases what it holds (a
            # half-open circuit's trial) at once rather than when it is collected.
            plan.close()
            raise

    def _call(
        self,
        op: Operation[T],
        path: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        body: Any = None,
        cookies: Mapping[str, Any] | None = None,
    ) -> T:
        tracer = self._tracer or _tracing._process_tracer
        if tracer.active:
            return self._traced_call(tracer, op, path, query, headers, body, cookies)
        request = self._build(self._http, op, path, query, headers, body, cookies=cookies)
        response = self._run(self._pipeline.plan(op, request))
        return self._decode(op, response)  # type: ignore[no-any-return]

    def _traced_call(
        self,
        tracer: Tracer,
        op: Operation[T],
        path: Mapping[str, Any] | None,
        query: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        body: Any,
        cookies: Mapping[str, Any] | None,
    ) -> T:
        trace = CallTrace(tracer, self._tracing or self._trace_context(), op, path, query, body)
        try:
            request = self._build(self._http, op, path, query, headers, body, cookies=cookies)
            trace.request = request
            response = self._run(self._pipeline.plan(op, request, tally=trace.tally))
            result = self._decode(op, response)
        except BaseException as exc:
            trace.failed(exc)
            raise
        trace.succeeded(response, result)
        return result  # type: ignore[no-any-return]

    def _paginate(
        self,
        op: Operation[T],
        path: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        cookies: Mapping[str, Any] | None = None,
    ) -> Pager[T]:
        return Pager(self, op, path, dict(query or {}), headers, cookies)

    def _stream(
        self,
        op: Operation[T],
        path: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        body: Any = None,
        cookies: Mapping[str, Any] | None = None,
    ) -> Stream[T]:
        tracer = self._tracer or _tracing._process_tracer
        if tracer.active:
            return self._traced_stream(tracer, op, path, query, headers, body, cookies)
        request = self._build(self._http, op, path, query, headers, body, cookies=cookies)
        response = self._run(self._pipeline.plan(op, request, streamed=True), streamed=True)
        return Stream(self, op, response)

    def _traced_stream(
        self,
        tracer: Tracer,
        op: Operation[T],
        path: Mapping[str, Any] | None,
        query: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        body: Any,
        cookies: Mapping[str, Any] | None,
    ) -> Stream[T]:
        trace = StreamTrace(tracer, self._tracing or self._trace_context(), op, path, query, body)
        try:
            request = self._build(self._http, op, path, query, headers, body, cookies=cookies)
            trace.request = request
            plan = self._pipeline.plan(op, request, streamed=True, tally=trace.tally)
            response = self._run(plan, streamed=True)
        except BaseException as exc:
            trace.failed(exc)
            raise
        trace.status_code = response.status_code  # StreamTrace.opened, written out
        return Stream(self, op, response, trace)

    def close(self) -> None:
        """Close the connection pool (only when this client created it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(_Core):
    """Base of generated asynchronous clients."""

    def __init__(
        self,
        config: Config,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        auth: object = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        options = self._setup(config, timeout=timeout, retry=retry, auth=auth, tracer=tracer)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, **options)
        if http_client is not None:
            _adopt(http_client, options, explicit_timeout=timeout is not None)

    async def _run(self, plan: Plan, streamed: bool = False) -> httpx.Response:
        send = self._http.send
        limit = self._service.max_response_bytes
        try:
            action, arg = next(plan)
            while True:
                if action is SEND:
                    try:
                        if streamed:
                            response = await send(arg, stream=True)
                        else:
                            deadline = _deadline(arg)
                            response = await send(arg, stream=True)
                            try:
                                response.stream = _AsyncDeadline(
                                    response.stream, deadline, arg, limit
                                )
                                await response.aread()
                            except BaseException:
                                await response.aclose()  # not left to the collector
                                raise
                    except httpx.HTTPError as exc:
                        action, arg = plan.throw(exc)
                        continue
                    action, arg = plan.send(response)
                elif action is SLEEP:
                    import asyncio  # only when waiting: asyncio costs ~15 ms to import

                    await asyncio.sleep(arg)
                    action, arg = plan.send(None)
                else:  # READ: see SyncClient._run
                    request = arg.request
                    arg.stream = _AsyncDeadline(arg.stream, _deadline(request), request, limit)
                    try:
                        await arg.aread()
                    except BaseException as exc:
                        await arg.aclose()
                        if not isinstance(exc, httpx.HTTPError):
                            raise
                    action, arg = plan.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except BaseException:
            plan.close()  # see SyncClient._run
            raise

    async def _call(
        self,
        op: Operation[T],
        path: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        body: Any = None,
        cookies: Mapping[str, Any] | None = None,
    ) -> T:
        tracer = self._tracer or _tracing._process_tracer
        if tracer.active:
            return await self._traced_call(tracer, op, path, query, headers, body, cookies)
        request = self._build(self._http, op, path, query, headers, body, cookies=cookies)
        response = await self._run(self._pipeline.plan(op, request))
        return self._decode(op, response)  # type: ignore[no-any-return]

    async def _traced_call(
        self,
        tracer: Tracer,
        op: Operation[T],
        path: Mapping[str, Any] | None,
        query: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        body: Any,
        cookies: Mapping[str, Any] | None,
    ) -> T:
        trace = CallTrace(tracer, self._tracing or self._trace_context(), op, path, query, body)
        try:
            request = self._build(self._http, op, path, query, headers, body, cookies=cookies)
            trace.request = request
            response = await self._run(self._pipeline.plan(op, request, tally=trace.tally))
            result = self._decode(op, response)
        except BaseException as exc:
            trace.failed(exc)
            raise
        trace.succeeded(response, result)
        return result  # type: ignore[no-any-return]

    def _paginate(
        self,
        op: Operation[T],
        path: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        cookies: Mapping[str, Any] | None = None,
    ) -> AsyncPager[T]:
        return AsyncPager(self, op, path, dict(query or {}), headers, cookies)

    async def _stream(
        self,
        op: Operation[T],
        path: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        body: Any = None,
        cookies: Mapping[str, Any] | None = None,
    ) -> AsyncStream[T]:
        tracer = self._tracer or _tracing._process_tracer
        if tracer.active:
            return await self._traced_stream(tracer, op, path, query, headers, body, cookies)
        request = self._build(self._http, op, path, query, headers, body, cookies=cookies)
        response = await self._run(self._pipeline.plan(op, request, streamed=True), streamed=True)
        return AsyncStream(self, op, response)

    async def _traced_stream(
        self,
        tracer: Tracer,
        op: Operation[T],
        path: Mapping[str, Any] | None,
        query: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        body: Any,
        cookies: Mapping[str, Any] | None,
    ) -> AsyncStream[T]:
        trace = StreamTrace(tracer, self._tracing or self._trace_context(), op, path, query, body)
        try:
            request = self._build(self._http, op, path, query, headers, body, cookies=cookies)
            trace.request = request
            plan = self._pipeline.plan(op, request, streamed=True, tally=trace.tally)
            response = await self._run(plan, streamed=True)
        except BaseException as exc:
            trace.failed(exc)
            raise
        trace.status_code = response.status_code  # StreamTrace.opened, written out
        return AsyncStream(self, op, response, trace)

    async def aclose(self) -> None:
        """Close the connection pool (only when this client created it)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Pages(Generic[C]):
    """What a pager remembers: the client, the operation and the first request's parts."""

    def __init__(
        self,
        client: C,
        op: Operation[Any],
        path: Mapping[str, Any] | None,
        query: dict[str, Any],
        headers: Mapping[str, Any] | None,
        cookies: Mapping[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._op = op
        self._path = path
        self._query = query
        self._headers = headers
        self._cookies = cookies

    def _trace(self, tracer: Tracer, walk: PageWalk) -> CallTrace:
        """The trace of the walk's next page request (one per page)."""
        client = self._client
        if walk.url is not None:  # a next link replaces path and query
            return CallTrace(tracer, client._trace_context(), self._op, None, None, None, walk.url)
        return CallTrace(tracer, client._trace_context(), self._op, self._path, walk.query, None)

    def _request(self, walk: PageWalk) -> httpx.Request:
        """The request for the walk's next page."""
        client = self._client
        return client._build(
            client._http,
            self._op,
            self._path,
            walk.query,
            self._headers,
            None,
            walk.url,
            self._cookies,
        )


class Pager(_Pages[SyncClient], Generic[T]):
    """A lazy iterator over every item of every page; ``pages()`` yields whole pages.

    Nothing is requested until iteration starts; each page is fetched when it is needed.
    """

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page

    def pages(self) -> Iterator[list[T]]:
        client, op = self._client, self._op
        walk = PageWalk(op.pagination, dict(self._query))
        while True:
            tracer = client._tracer or _tracing._process_tracer
            if tracer.active:
                trace = self._trace(tracer, walk)
                try:
                    trace.request = request = self._request(walk)
                    response = client._run(client._pipeline.plan(op, request, tally=trace.tally))
                    body, raw, items = client._page_items(op, walk, response)
                except BaseException as exc:
                    trace.failed(exc)
                    raise
                trace.succeeded(response, items, body)
            else:
                request = self._request(walk)
                response = client._run(client._pipeline.plan(op, request))
                body, raw, items = client._page_items(op, walk, response)
            yield items
            if not walk.advance(response, body, raw):
                return


class AsyncPager(_Pages["AsyncClient"], Generic[T]):
    """The async counterpart of :class:`Pager`: ``async for item in pager``."""

    async def __aiter__(self) -> AsyncIterator[T]:
        pages = self.pages()
        try:
            async for page in pages:
                for item in page:
                    yield item
        finally:
            await pages.aclose()  # (a sync generator is closed when freed; this one is not)

    async def pages(self) -> AsyncGenerator[list[T], None]:
        client, op = self._client, self._op
        walk = PageWalk(op.pagination, dict(self._query))
        while True:
            tracer = client._tracer or _tracing._process_tracer
            if tracer.active:
                trace = self._trace(tracer, walk)
                try:
                    trace.request = request = self._request(walk)
                    plan = client._pipeline.plan(op, request, tally=trace.tally)
                    response = await client._run(plan)
                    body, raw, items = client._page_items(op, walk, response)
                except BaseException as exc:
                    trace.failed(exc)
                    raise
                trace.succeeded(response, items, body)
            else:
                request = self._request(walk)
                response = await client._run(client._pipeline.plan(op, request))
                body, raw, items = client._page_items(op, walk, response)
            yield items
            if not walk.advance(response, body, raw):
                return


class _StreamDecoding:
    """Turns lines of a streamed body into typed chunks; shared by both stream classes."""

    def __init__(
        self,
        client: _Core,
        op: Operation[Any],
        response: httpx.Response,
        trace: StreamTrace | None = None,
    ) -> None:
        assert op.stream is not None
        self._client = client
        self._op = op
        self._format = op.stream
        self._response = response
        self._sse = SSEDecoder() if op.stream.framing == "sse" else None
        self.finished = False
        self.trace = trace
        # Decodes a chunk and reads it into the trace, in one call (a usage map without
        # named events); else reads each decoded chunk into it; None: nothing to read.
        self._decode = trace.decode_read if trace is not None else None
        self._on_chunk = trace.read_event if trace is not None else None
        self._from_json = op.stream.item.json_reader()
        self.event: str | None = None  # the SSE event name of the last chunk
        self.error_event = False  # the stream failed with a declared error event

    def line(self, line: str) -> tuple[bool, Any]:
        """(stop, chunk): chunk is None when the line completes no chunk."""
        fmt = self._format
        if self._sse is not None:
            event = self._sse.feed(line)
            if event is None or not event.data:
                return False, None
            data = event.data
            if fmt.done is not None and data == fmt.done:
                self.finished = True
                return True, None
            if event.event in fmt.error_events:
                self.error_event = True
                detail = scrub(data[:500], self._client._pipeline.secrets)
                raise self._error(f"the service sent an {event.event!r} event: {detail}")
            if fmt.events and event.event not in fmt.events:
                if self.trace is not None:
                    self.trace.skipped_event(event.event, data)
                return False, None
            name: str | None = event.event
        else:
            data = line.strip()
            if not data:
                return False, None
            name = None
        decode = self._decode
        try:
            chunk = (
                self._from_json(data.encode()) if decode is None else decode(self.trace, name, data)
            )
        except ValueError as exc:
            raise self._client._pipeline.validation_error(
                self._op, self._response, exc, data
            ) from None
        if self._on_chunk is not None:
            self._on_chunk(self.trace, name, chunk)
        self.event = name
        return False, chunk

    def end(self) -> None:
        """Called when the body ends: a cut stream is an error, not a short answer."""
        if self.finished:
            return
        if self._sse is not None and self._sse.mid_event:
            raise self._error("the stream ended in the middle of an event")
        if self._format.done is not None:
            raise self._error(f"the stream ended before its end marker {self._format.done!r}")
        self.finished = True

    def _error(self, message: str) -> errors.StreamError:
        return errors.StreamError(
            message, connector=self._client._pipeline.connector, operation=self._op.name
        )

    def transport_error(self, exc: httpx.HTTPError) -> errors.StreamError:
        return self._error(f"the stream broke: {exc or type(exc).__name__}")

    def stop(self, exc: BaseException | None) -> None:
        """The stream is over (``exc``: None ended, GeneratorExit abandoned, else failed)."""
        if self.trace is not None:
            self.trace.stop(exc)


# What a stream's body may still hold after its end marker (or an error event) and be
# read, not dropped: the rest is normally the body's own end (HTTP/1.1's last chunk), and a
# response closed before its end closes its connection, so that the next request opens (and
# handshakes) a new one. Bounded in size and in time: a server that lingers after its end
# marker costs the caller at most _DRAIN_SECONDS, then its connection.
_DRAIN_LIMIT = 64 * 1024
_DRAIN_SECONDS = 0.25


def _drain(response: httpx.Response, lines: Iterator[str]) -> None:
    """Read the body to its end after the end marker, so its connection goes back to the
    pool; a server that sends more than ``_DRAIN_LIMIT`` after it, takes longer than
    ``_DRAIN_SECONDS``, or fails, has its connection closed instead (the stream itself
    has ended well)."""
    if response.http_version != "HTTP/1.1":
        return  # HTTP/2 ends a stream, not its connection (which other streams may share)
    size = 0
    try:
        with _reads_within(response, _DRAIN_SECONDS):
            for line in lines:
                size += len(line) + 1
                if size > _DRAIN_LIMIT:
                    return
    except httpx.HTTPError:
        return


@contextlib.contextmanager
def _reads_within(response: httpx.Response, seconds: float) -> Iterator[None]:
    """Within the block, each network read of ``response``'s connection waits at most
    until ``seconds`` from now. (httpcore takes a body's read timeout once, when the body
    starts; the network stream it reads through is in the response's extensions, and its
    ``read(max_bytes, timeout)`` is looked up on each read.) Without one (a mock
    transport), reads are as they are."""
    stream = response.extensions.get("network_stream")
    read = getattr(stream, "read", None)
    if read is None:
        yield
        return
    deadline = time.monotonic() + seconds

    def bounded(max_bytes: int, timeout: float | None = None) -> bytes:
        left = max(deadline - time.monotonic(), 0.001)
        return read(max_bytes, left if timeout is None else min(timeout, left))  # type: ignore[no-any-return]

    try:
        stream.read = bounded  # type: ignore[union-attr]
    except AttributeError:  # a stream class with slots: unbounded, as before
        yield
        return
    try:
        yield
    finally:
        del stream.read  # type: ignore[union-attr]


async def _async_drain(response: httpx.Response, lines: AsyncIterator[str]) -> None:
    """:func:`_drain` for an async body."""
    import asyncio

    if response.http_version != "HTTP/1.1":
        return
    size = 0
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for line in lines:
                size += len(line) + 1
                if size > _DRAIN_LIMIT:
                    return
    except (httpx.HTTPError, TimeoutError):
        return


class Stream(Generic[T]):
    """Typed chunks of a streamed response; closes the connection when done or closed."""

    def __init__(
        self,
        client: SyncClient,
        op: Operation[Any],
        response: httpx.Response,
        trace: StreamTrace | None = None,
    ) -> None:
        self.response = response
        self._decoding = _StreamDecoding(client, op, response, trace)

    def __iter__(self) -> Iterator[T]:
        decoding = self._decoding
        response = self.response
        lines = response.iter_lines()
        try:
            for line in lines:
                stop, chunk = decoding.line(line)
                if chunk is not None:
                    yield chunk
                if stop:
                    decoding.stop(None)
                    _drain(response, lines)
                    return
            decoding.end()
            decoding.stop(None)
        except httpx.HTTPError as exc:
            error = decoding.transport_error(exc)
            decoding.stop(error)
            raise error from None
        except BaseException as exc:  # a stream error, a cancellation, or GeneratorExit
            decoding.stop(exc)
            if decoding.error_event:  # the service ends the body after it: keep the connection
                _drain(response, lines)
            raise
        finally:
            response.close()

    def close(self) -> None:
        self.response.close()
        self._decoding.stop(GeneratorExit())  # closed early, unless it had ended

    def __del__(self) -> None:
        # Dropped before it was read or closed (once it is read, its generator holds it,
        # and closes the response when done): its connection goes back to the pool now,
        # not never.
        response = self.__dict__.get("response")
        if response is not None and not response.is_closed:
            response.close()

    @property
    def event(self) -> str | None:
        """The SSE event name of the chunk last yielded (None for NDJSON)."""
        return self._decoding.event

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_closing: set[Any] = set()  # closes under way (an asyncio task is kept while it runs)


def _close_soon(response: httpx.Response) -> None:
    import asyncio

    task = asyncio.ensure_future(response.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class AsyncStream(Generic[T]):
    """The async counterpart of :class:`Stream`."""

    def __init__(
        self,
        client: AsyncClient,
        op: Operation[Any],
        response: httpx.Response,
        trace: StreamTrace | None = None,
    ) -> None:
        self.response = response
        self._decoding = _StreamDecoding(client, op, response, trace)
        import asyncio  # (imported by every async client already: a look-up)

        self._loop = asyncio.get_running_loop()  # where a stream dropped unread is closed

    async def __aiter__(self) -> AsyncIterator[T]:
        decoding = self._decoding
        response = self.response
        lines = response.aiter_lines()
        try:
            async for line in lines:
                stop, chunk = decoding.line(line)
                if chunk is not None:
                    yield chunk
                if stop:
                    decoding.stop(None)
                    await _async_drain(response, lines)
                    return
            decoding.end()
            decoding.stop(None)
        except httpx.HTTPError as exc:
            error = decoding.transport_error(exc)
            decoding.stop(error)
            raise error from None
        except BaseException as exc:  # a stream error, a cancellation, or GeneratorExit
            decoding.stop(exc)
            if decoding.error_event:
                await _async_drain(response, lines)
            raise
        finally:
            # httpx's line reader (a chain of async generators) closed here, not left to
            # the event loop's clean-up of unfinished generators.
            await lines.aclose()  # type: ignore[attr-defined]
            await response.aclose()

    async def aclose(self) -> None:
        await self.response.aclose()
        self._decoding.stop(GeneratorExit())  # closed early, unless it had ended

    def __del__(self) -> None:
        # Dropped before it was read or closed: closed on its event loop, soon (an async
        # response cannot be closed here), so that its connection goes back to the pool.
        response = self.__dict__.get("response")
        loop = self.__dict__.get("_loop")
        if response is None or response.is_closed or loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(_close_soon, response)
        except RuntimeError:  # the loop closed meanwhile
            pass

    @property
    def event(self) -> str | None:
        """The SSE event name of the chunk last yielded (None for NDJSON)."""
        return self._decoding.event

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
