"""Amazon S3 and S3-compatible stores (MinIO, Ceph, R2, moto) over httpx, signed with SigV4.

No SDK: the few S3 calls a Source/Sink needs are plain HTTP requests signed by
:mod:`builder.runtime.sigv4`, with XML responses parsed by defusedxml (imported on first
use, as is everything else a connector does not need at import time).

Keys are relative to the ``prefix`` setting: with ``prefix="exports/"``,
``write([{"key": "a.json", ...}])`` stores ``exports/a.json`` and ``read()`` yields it as
``a.json``, so records move between prefixes, buckets and stores unchanged.

Custom endpoints use path-style addressing (``http://host:9000/bucket/key``); AWS endpoints
use virtual-hosted style (``https://bucket.s3.amazonaws.com/key``) when the bucket name
allows it.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote_plus, urlsplit

import httpx

from builder.runtime.config import scrub
from builder.runtime.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    ConnectionFailedError,
    ConnectorError,
    HTTPStatusError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ResponseValidationError,
    ServerError,
    TimeoutError,
    WriteError,
)
from builder.runtime.resilience import RetryPolicy, parse_retry_after
from builder.runtime.sigv4 import EMPTY_SHA256, SigV4Signer, uri_encode
from builder.runtime.transports.base import DataConnector, records_of

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

__all__ = [
    "S3AuthenticationError",
    "S3BadRequestError",
    "S3ConflictError",
    "S3Connector",
    "S3Error",
    "S3NotFoundError",
    "S3PermissionDeniedError",
    "S3RateLimitedError",
    "S3ServerError",
]

_MIB = 1024 * 1024
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_MAX_PARTS = 10000
_NAMED_IN_MESSAGE = 5  # keys named in a WriteError's message (all are in .failed)


# --------------------------------------------------------------------------------------- #
# Errors: S3's error code decides the class, its HTTP status the fallback
# --------------------------------------------------------------------------------------- #


class S3Error(HTTPStatusError):
    """An error S3 answered with; ``code`` is S3's error code (``NoSuchKey``, ...)."""

    def __init__(self, message: str, *, code: str = "", request_id: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.code = code
        self.request_id = request_id


class S3BadRequestError(S3Error, BadRequestError):
    """400: S3 rejected the request (``InvalidArgument``, ``EntityTooSmall``, ...)."""


class S3AuthenticationError(S3Error, AuthenticationError):
    """The credentials are wrong (``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
    ``ExpiredToken``); S3 answers these with 403 too."""


class S3PermissionDeniedError(S3Error, PermissionDeniedError):
    """403 ``AccessDenied``: the credentials may not do this."""


class S3NotFoundError(S3Error, NotFoundError):
    """404: ``NoSuchKey``, ``NoSuchBucket`` or ``NoSuchUpload``."""


class S3ConflictError(S3Error, ConflictError):
    """409: ``BucketAlreadyExists``, ``OperationAborted``, ..."""


class S3RateLimitedError(S3Error, RateLimitedError):
    """``SlowDown`` (503) or 429: too many requests."""


class S3ServerError(S3Error, ServerError):
    """5xx: S3 failed (``InternalError``, ``ServiceUnavailable``)."""


_BY_CODE: dict[str, type[S3Error]] = {
    "NoSuchKey": S3NotFoundError,
    "NoSuchBucket": S3NotFoundError,
    "NoSuchUpload": S3NotFoundError,
    "AccessDenied": S3PermissionDeniedError,
    "AllAccessDisabled": S3PermissionDeniedError,
    "InvalidAccessKeyId": S3AuthenticationError,
    "SignatureDoesNotMatch": S3AuthenticationError,
    "ExpiredToken": S3AuthenticationError,
    "InvalidToken": S3AuthenticationError,
    "TokenRefreshRequired": S3AuthenticationError,
    "RequestTimeTooSkewed": S3AuthenticationError,
    "SlowDown": S3RateLimitedError,
    "Throttling": S3RateLimitedError,
    "BucketAlreadyExists": S3ConflictError,
    "BucketAlreadyOwnedByYou": S3ConflictError,
    "BucketNotEmpty": S3ConflictError,
    "OperationAborted": S3ConflictError,
    "InternalError": S3ServerError,
    "ServiceUnavailable": S3ServerError,
}
_BY_STATUS: dict[int, type[S3Error]] = {
    400: S3BadRequestError,
    401: S3AuthenticationError,
    403: S3PermissionDeniedError,
    404: S3NotFoundError,
    409: S3ConflictError,
    429: S3RateLimitedError,
}
# Worth another try: the service said it failed, or asked us to slow down.
_RETRY_CODES = frozenset(
    {"SlowDown", "Throttling", "InternalError", "ServiceUnavailable", "RequestTimeout"}
)
# A request that may have reached S3 is sent again after a dropped connection only if
# repeating it cannot do harm.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})


def _error_class(status: int, code: str) -> type[S3Error]:
    found = _BY_CODE.get(code)
    if found is not None:
        return found
    if status >= 500:
        return S3ServerError
    return _BY_STATUS.get(status, S3Error)


# --------------------------------------------------------------------------------------- #
# XML
# --------------------------------------------------------------------------------------- #


def _parse_xml(body: bytes) -> Element:
    """``body`` parsed without entity expansion or DTDs (defusedxml, imported now)."""
    from defusedxml.ElementTree import fromstring  # type: ignore[import-untyped]

    root: Element = fromstring(body)
    return root


def _text(element: Element, name: str) -> str:
    """The text of child ``name`` in any namespace (S3 answers in its own), or ''."""
    child = element.find(f"{{*}}{name}")
    return "" if child is None or child.text is None else child.text


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _segment(part: str) -> str:
    """One path segment of a key, encoded; ``.`` and ``..`` are keys' names in S3, but an
    HTTP client would resolve them away, so their dots are percent-encoded."""
    if part in (".", ".."):
        return part.replace(".", "%2E")
    return uri_encode(part)


def _etag(value: str) -> str:
    return value.strip().strip('"')


# --------------------------------------------------------------------------------------- #
# The connector
# --------------------------------------------------------------------------------------- #


class S3Connector(DataConnector):
    """A bucket (and a key prefix in it) as a Source and a Sink of objects.

    ``read()`` yields ``{key, content, size, etag, last_modified, content_type}`` per
    object (``content`` is bytes; ``last_modified`` a UTC datetime); ``write()`` takes
    ``{key, content, content_type?}`` records, ``content`` as bytes or str (UTF-8), and
    uploads objects of ``multipart_threshold`` bytes or more in parts of ``part_size``.
    """

    _name = "s3"
    _options: ClassVar[Mapping[str, Any]] = {
        "multipart_threshold": 8 * _MIB,
        "part_size": 8 * _MIB,
    }
    # The retry policy for 5xx, throttling and dropped connections; a subclass may change it.
    _retry: ClassVar[RetryPolicy] = RetryPolicy(attempts=4, initial_delay=0.2, max_delay=5.0)

    _signer: SigV4Signer | None
    _scheme: str
    _host: str
    _bucket_path: str

    # -- connection ----------------------------------------------------------------------

    def _connect(self) -> httpx.Client:
        endpoint, region, bucket = self._require("endpoint_url", "region", "bucket")
        access_key = self.config.reveal("access_key_id") if "access_key_id" in self.config else None
        secret = (
            self.config.reveal("secret_access_key") if "secret_access_key" in self.config else None
        )
        token = self.config.reveal("session_token") if "session_token" in self.config else None
        if access_key and secret:
            self._signer = SigV4Signer(
                str(access_key), str(secret), region=region, service="s3", session_token=token
            )
        elif access_key or secret:
            raise ConfigError(
                "access_key_id and secret_access_key are needed together (or neither, for a "
                "public bucket)",
                connector=self._name,
            )
        else:
            self._signer = None  # anonymous requests, for public buckets
        self._address(str(endpoint), str(bucket), str(region))
        timeout = self.config.get("timeout") or 60.0
        return self._make_client(float(timeout))

    def _make_client(self, timeout: float) -> httpx.Client:
        """The HTTP client (a test may give one with its own transport)."""
        return httpx.Client(timeout=timeout, follow_redirects=False)

    def _address(self, endpoint: str, bucket: str, region: str) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"endpoint_url is not an http(s) URL: {endpoint!r}", connector=self._name
            )
        host = parts.netloc.rpartition("@")[2].lower()
        if host == "s3.amazonaws.com" and region != "us-east-1":
            # The global endpoint answers other regions' buckets with a redirect.
            host = f"s3.{region}.amazonaws.com"
        base = parts.path.rstrip("/")
        virtual = (
            parts.hostname.endswith(".amazonaws.com")
            and not base
            and "." not in bucket
            and bucket == bucket.lower()
        )
        self._scheme = parts.scheme
        if virtual:
            self._host, self._bucket_path = f"{bucket}.{host}", base
        else:
            self._host, self._bucket_path = host, f"{base}/{uri_encode(bucket)}"

    @property
    def _prefix(self) -> str:
        return str(self.config.get("prefix") or "")

    def _key_path(self, key: str) -> str:
        if not key:
            raise ValueError("an object key must not be empty")
        return "/" + "/".join(_segment(part) for part in (self._prefix + key).split("/"))

    # -- one request, signed, retried, its errors mapped --------------------------------

    def _request(
        self,
        method: str,
        key_path: str = "",
        query: Iterable[tuple[str, str]] = (),
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        operation: str,
        subject: str = "",
    ) -> httpx.Response:
        """Send one S3 request; return the 2xx response or raise a mapped error.

        ``subject`` (a key, a prefix) goes into error messages.
        """
        client: httpx.Client = self.connection
        path = (self._bucket_path + key_path) or "/"
        raw_query = "&".join(f"{uri_encode(n)}={uri_encode(v)}" for n, v in query)
        url = f"{self._scheme}://{self._host}{path}" + (f"?{raw_query}" if raw_query else "")
        payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        extra = dict(headers or {})
        policy = self._retry
        attempt = 0
        while True:
            attempt += 1
            sent = dict(extra)
            if self._signer is not None:
                sent.update(
                    self._signer.sign_parts(
                        method, path, raw_query, extra, host=self._host, payload_hash=payload_hash
                    )
                )
            try:
                response = client.request(method, url, content=body or None, headers=sent)
            except httpx.TimeoutException as exc:
                if attempt < policy.attempts and policy.retry_on_timeout and method in _IDEMPOTENT:
                    time.sleep(policy.backoff(attempt))
                    continue
                raise self._error(exc, TimeoutError, operation=operation) from None
            except httpx.TransportError as exc:
                retry = policy.retry_on_connection_error and method in _IDEMPOTENT
                if attempt < policy.attempts and retry:
                    time.sleep(policy.backoff(attempt))
                    continue
                raise self._error(exc, ConnectionFailedError, operation=operation) from None
            if response.status_code < 300:
                return response
            error = self._status_error(response, method, operation, subject)
            if attempt < policy.attempts and (
                response.status_code in policy.retry_on_status or error.code in _RETRY_CODES
            ):
                wait = policy.delay_for_status(
                    attempt, parse_retry_after(response.headers.get("retry-after"))
                )
                if wait is not None:
                    time.sleep(wait)
                    continue
            raise error

    def _status_error(
        self, response: httpx.Response, method: str, operation: str, subject: str
    ) -> S3Error:
        body = response.content
        code = message = request_id = ""
        if body:
            try:
                root = _parse_xml(body)
            except Exception:  # not XML (a proxy's HTML page): the status says enough
                root = None
            if root is not None:
                code, message = _text(root, "Code"), _text(root, "Message")
                request_id = _text(root, "RequestId")
        request_id = request_id or response.headers.get("x-amz-request-id", "")
        kind = _error_class(response.status_code, code)
        text = f"{response.status_code} {code or response.reason_phrase}"
        if subject:
            text += f" for {subject!r}"
        if message:
            text += f": {message}"
        kw: dict[str, Any] = {}
        if issubclass(kind, RateLimitedError):
            kw["retry_after"] = parse_retry_after(response.headers.get("retry-after"))
        return kind(
            scrub(text, self._secrets),
            code=code,
            request_id=request_id,
            status_code=response.status_code,
            method=method,
            url=str(response.request.url.copy_with(query=None)),
            body=scrub(body.decode("utf-8", "replace"), self._secrets),
            connector=self._name,
            operation=operation,
            **kw,
        )

    # -- bucket --------------------------------------------------------------------------

    def create_bucket(self) -> None:
        """Create the bucket (in the ``region`` setting); an existing one of yours is fine."""
        region = str(self.config.get("region") or "us-east-1")
        body = b""
        if region != "us-east-1":  # us-east-1 is the default and must not be named
            body = (
                '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{_xml_escape(region)}</LocationConstraint>"
                "</CreateBucketConfiguration>"
            ).encode()
        try:
            self._request("PUT", body=body, operation="create_bucket")
        except S3ConflictError as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise

    # -- Source --------------------------------------------------------------------------

    def list_objects(
        self, prefix: str | None = None, *, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """The objects under ``prefix`` (relative to the ``prefix`` setting), lazily, page
        by page (ListObjectsV2): ``{key, size, etag, last_modified, storage_class}``."""
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        base = self._prefix
        full_prefix = base + (prefix or "")
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            query = [("list-type", "2"), ("encoding-type", "url"), ("max-keys", str(page_size))]
            if full_prefix:
                query.append(("prefix", full_prefix))
            if token:
                query.append(("continuation-token", token))
            response = self._request(
                "GET", query=query, operation="list_objects", subject=full_prefix
            )
            root = self._xml(response, "list_objects")
            url_encoded = _text(root, "EncodingType") == "url"
            for item in root.iterfind("{*}Contents"):
                key = _text(item, "Key")
                if url_encoded:
                    key = unquote_plus(key)
                yield {
                    "key": key[len(base) :],
                    "size": int(_text(item, "Size") or 0),
                    "etag": _etag(_text(item, "ETag")),
                    "last_modified": datetime.fromisoformat(_text(item, "LastModified")),
                    "storage_class": _text(item, "StorageClass") or None,
                }
            if _text(root, "IsTruncated") != "true":
                return
            token = _text(root, "NextContinuationToken")
            if not token or token in seen_tokens:  # a server that loops would never end
                raise ResponseValidationError(
                    "list_objects: the listing is truncated but gives no new continuation token",
                    connector=self._name,
                    operation="list_objects",
                )
            seen_tokens.add(token)

    def get(self, key: str) -> dict[str, Any]:
        """One object: ``{key, content, size, etag, last_modified, content_type}``."""
        response = self._request("GET", self._key_path(key), operation="get", subject=key)
        content = response.content
        self._count_bytes(read=len(content))
        return self._object(key, content, response.headers)

    def read(self, prefix: str | None = None, **params: Any) -> Iterator[dict[str, Any]]:
        """Every object under ``prefix``, with its content, lazily (one GET per object as
        the consumer asks for it). An object deleted after it was listed is skipped."""
        if params:
            raise TypeError(f"read() got unexpected arguments: {', '.join(sorted(params))}")
        return self._counted(self._read(prefix))

    def _read(self, prefix: str | None) -> Iterator[dict[str, Any]]:
        for info in self.list_objects(prefix):
            try:
                yield self.get(info["key"])
            except S3NotFoundError as exc:
                if exc.code != "NoSuchKey":
                    raise

    @staticmethod
    def _object(key: str, content: bytes, headers: httpx.Headers) -> dict[str, Any]:
        modified = headers.get("last-modified")
        when: datetime | None = None
        if modified:
            from email.utils import parsedate_to_datetime

            try:
                when = parsedate_to_datetime(modified)
            except (TypeError, ValueError):
                when = None
        return {
            "key": key,
            "content": content,
            "size": len(content),
            "etag": _etag(headers.get("etag", "")),
            "last_modified": when,
            "content_type": headers.get("content-type"),
        }

    def _xml(self, response: httpx.Response, operation: str) -> Element:
        try:
            return _parse_xml(response.content)
        except Exception as exc:  # ParseError, or defusedxml refusing a DTD or entity
            raise ResponseValidationError(
                f"{operation}: the response is not the XML S3 sends: {type(exc).__name__}",
                body=response.text,
                connector=self._name,
                operation=operation,
            ) from None

    # -- Sink ----------------------------------------------------------------------------

    def write(self, records: Iterable[Any]) -> int:
        """Upload each ``{key, content, content_type?}`` record; return how many were.

        On failure a :class:`WriteError` names the objects not written; its ``failed``
        holds exactly those records, in order (writing an object again replaces it, so a
        retry of ``failed`` is safe).
        """
        pending = records_of(records)
        metrics = self.metrics
        written = 0
        for index, record in enumerate(pending):
            try:
                key, content, content_type = self._object_record(record)
                self._put(key, content, content_type)
            except (ConnectorError, TypeError, ValueError) as exc:
                metrics.errors += 1
                failed = pending[index:]
                names = ", ".join(repr(_key_of(r)) for r in failed[:_NAMED_IN_MESSAGE])
                more = (
                    f" and {len(failed) - _NAMED_IN_MESSAGE} more"
                    if len(failed) > _NAMED_IN_MESSAGE
                    else ""
                )
                raise WriteError(
                    f"wrote {written} of {len(pending)} objects; not written: {names}{more}: {exc}",
                    written=written,
                    failed=failed,
                    connector=self._name,
                    operation="write",
                ) from exc
            written += 1
            metrics.records_written += 1
            self._count_bytes(written=len(content))
        metrics.batches += 1
        return written

    @staticmethod
    def _object_record(record: Any) -> tuple[str, bytes, str | None]:
        if not isinstance(record, Mapping):
            dump = getattr(record, "model_dump", None)
            if dump is None:
                raise TypeError(
                    f"an object record must be a dict or a model, not {type(record).__name__}"
                )
            record = dump(exclude_none=True)
        key = record.get("key")
        if not isinstance(key, str) or not key:
            raise ValueError("an object record needs a non-empty str 'key'")
        content = record.get("content")
        if isinstance(content, str):
            data = content.encode("utf-8")
        elif isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
        else:
            raise TypeError(
                f"object {key!r}: content must be bytes or str, not {type(content).__name__}"
            )
        content_type = record.get("content_type")
        return key, data, content_type if isinstance(content_type, str) else None

    def _put(self, key: str, content: bytes, content_type: str | None) -> None:
        if content_type is None:
            import mimetypes

            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        threshold = int(self._options.get("multipart_threshold", 8 * _MIB))
        if len(content) >= threshold:
            self._multipart_upload(key, content, content_type)
            return
        self._request(
            "PUT",
            self._key_path(key),
            body=content,
            headers={"content-type": content_type},
            operation="put",
            subject=key,
        )

    def _multipart_upload(self, key: str, content: bytes, content_type: str) -> None:
        part_size = int(self._options.get("part_size", 8 * _MIB))
        # S3 allows 10,000 parts: a huge object gets bigger parts rather than an error.
        part_size = max(part_size, -(-len(content) // _MAX_PARTS))
        path = self._key_path(key)
        created = self._request(
            "POST",
            path,
            [("uploads", "")],
            headers={"content-type": content_type},
            operation="create_multipart_upload",
            subject=key,
        )
        upload_id = _text(self._xml(created, "create_multipart_upload"), "UploadId")
        if not upload_id:
            raise ResponseValidationError(
                "create_multipart_upload: no UploadId in the response",
                connector=self._name,
                operation="create_multipart_upload",
            )
        try:
            parts: list[tuple[int, str]] = []
            for number, start in enumerate(range(0, len(content), part_size), start=1):
                response = self._request(
                    "PUT",
                    path,
                    [("partNumber", str(number)), ("uploadId", upload_id)],
                    body=content[start : start + part_size],
                    operation="upload_part",
                    subject=key,
                )
                parts.append((number, response.headers.get("etag", "")))
            body = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{_xml_escape(etag)}</ETag></Part>"
                for n, etag in parts
            )
            completed = self._request(
                "POST",
                path,
                [("uploadId", upload_id)],
                body=f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode(),
                headers={"content-type": "application/xml"},
                operation="complete_multipart_upload",
                subject=key,
            )
            # S3 may answer 200 and still report an error in the body.
            root = self._xml(completed, "complete_multipart_upload")
            if root.tag.rpartition("}")[2] == "Error":
                code = _text(root, "Code")
                raise _error_class(500, code)(
                    f"complete_multipart_upload {key!r}: {code}: {_text(root, 'Message')}",
                    code=code,
                    status_code=completed.status_code,
                    connector=self._name,
                    operation="complete_multipart_upload",
                )
        except Exception:
            self._abort_upload(path, upload_id)
            raise

    def _abort_upload(self, path: str, upload_id: str) -> None:
        """Drop the parts uploaded so far, so that they are not kept (and billed)."""
        try:
            self._request(
                "DELETE", path, [("uploadId", upload_id)], operation="abort_multipart_upload"
            )
        except ConnectorError:
            pass  # the original error matters more; S3 lifecycle rules clean up the rest

    # -- delete --------------------------------------------------------------------------

    def delete(self, keys: Iterable[str]) -> int:
        """Delete these objects (keys relative to the prefix), 1000 per request; return
        how many were deleted. A key that does not exist counts as deleted (as S3 says).

        On failure a :class:`WriteError` lists in ``failed`` the keys not deleted.
        """
        pending = [keys] if isinstance(keys, str) else list(keys)
        deleted = 0
        for start in range(0, len(pending), _DELETE_BATCH):
            batch = pending[start : start + _DELETE_BATCH]
            objects = "".join(
                f"<Object><Key>{_xml_escape(self._prefix + key)}</Key></Object>" for key in batch
            )
            body = f"<Delete><Quiet>true</Quiet>{objects}</Delete>".encode()
            try:
                response = self._request(
                    "POST",
                    query=[("delete", "")],
                    body=body,
                    headers={
                        "content-type": "application/xml",
                        "content-md5": base64.b64encode(
                            hashlib.md5(body, usedforsecurity=False).digest()
                        ).decode(),
                    },
                    operation="delete",
                )
                errors = self._xml(response, "delete").findall("{*}Error")
            except ConnectorError as exc:
                self.metrics.errors += 1
                raise WriteError(
                    f"deleted {deleted} of {len(pending)} objects: {exc}",
                    written=deleted,
                    failed=pending[start:],
                    connector=self._name,
                    operation="delete",
                ) from exc
            if errors:
                base = len(self._prefix)
                refused = {_text(e, "Key")[base:]: _text(e, "Code") for e in errors}
                failed = [k for k in batch if k in refused] + pending[start + len(batch) :]
                deleted += len(batch) - len(refused)
                self.metrics.errors += 1
                first = next(iter(refused.items()))
                raise WriteError(
                    f"deleted {deleted} of {len(pending)} objects; {len(refused)} refused "
                    f"(first: {first[0]!r}: {first[1]})",
                    written=deleted,
                    failed=failed,
                    connector=self._name,
                    operation="delete",
                )
            deleted += len(batch)
        return deleted


def _key_of(record: Any) -> Any:
    if isinstance(record, Mapping):
        return record.get("key")
    return getattr(record, "key", record)
