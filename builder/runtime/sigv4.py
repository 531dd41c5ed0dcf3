"""AWS Signature Version 4, for the S3 transport and any AWS-style service over httpx.

Standard library only (``hmac``/``hashlib``), checked against AWS's published SigV4 test
suite, the S3 worked examples and botocore's signer (``tests/data/test_sigv4.py``).

The steps, as AWS documents them:

1. canonical request: method, canonical URI, canonical query, canonical headers, signed
   header names, payload hash — one per line;
2. string to sign: algorithm, timestamp, credential scope, SHA-256 of the canonical request;
3. signing key: HMAC chain over the date, region, service and ``aws4_request``, starting
   from ``"AWS4" + secret`` (cached per day, region and service);
4. signature: HMAC of the string to sign with that key, in hex.

Paths: S3 encodes the URI once and never normalises it (``a//b/../c`` is a key of its own);
every other service encodes the path as sent once more and removes ``.``/``..`` segments
and repeated slashes. :class:`SigV4Signer` picks the rule from the service name.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Generator, Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

import httpx

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "UNSIGNED_HEADERS",
    "UNSIGNED_PAYLOAD",
    "SigV4Auth",
    "SigV4Signer",
    "canonical_headers",
    "canonical_query",
    "canonical_uri",
    "host_of",
    "uri_encode",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_TIMESTAMP = "%Y%m%dT%H%M%SZ"

# Headers a proxy or the HTTP stack may add, drop or rewrite on the way: signing them
# would make a valid request fail verification (the list botocore uses, plus our own
# Authorization header).
UNSIGNED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)
# Set by the signer itself; a caller's value would be stale (a retry re-signs).
_REPLACED = frozenset(
    {"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_KEY_CACHE_SIZE = 8


def uri_encode(text: str, safe: str = "") -> str:
    """Percent-encode ``text`` the AWS way: UTF-8, upper-case hex, only ``A-Za-z0-9-_.~``
    (and ``safe``) left as they are."""
    return quote(text, safe=safe)


def _remove_dot_segments(path: str) -> str:
    """``/a//b/./c/..`` -> ``/a/b``: what generic services sign (S3 does not)."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    # A trailing slash stays only when the path ends with one (as botocore signs it).
    trailing = path.endswith("/") and bool(kept)
    return "/" + "/".join(kept) + ("/" if trailing else "")


def canonical_uri(raw_path: str, *, s3: bool) -> str:
    """The canonical URI of a path as it appears in the request line.

    S3: the path is decoded, then encoded once (so ``%20`` and a literal space sign
    alike, as S3 itself decodes before it checks). Other services: dot segments and
    repeated slashes are removed, then the path as sent is encoded again (``%20`` becomes
    ``%2520``), as AWS's generic services verify it.
    """
    if not raw_path:
        return "/"
    if s3:
        return uri_encode(unquote(raw_path), safe="/")
    return uri_encode(_remove_dot_segments(raw_path), safe="/")


def canonical_query(raw_query: str) -> str:
    """The canonical query string of a query as sent: each name and value decoded then
    encoded the AWS way, pairs sorted by name then value, ``name=`` for a bare name.

    A ``+`` is a literal plus here (AWS wants a space sent as ``%20``).
    """
    if not raw_query:
        return ""
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((uri_encode(unquote(name)), uri_encode(unquote(value))))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """``(canonical headers, signed header names)`` of the headers to sign.

    Names are lower-cased and sorted; a repeated header's values are joined by ``,`` in
    the order given; each value is trimmed and its runs of spaces squeezed to one.
    """
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name.strip().lower(), []).append(" ".join(value.split()))
    names = sorted(grouped)
    lines = "".join(f"{name}:{','.join(grouped[name])}\n" for name in names)
    return lines, ";".join(names)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def host_of(url: httpx.URL | str) -> str:
    """The Host header value a client sends for ``url`` (no default port, no userinfo)."""
    parts = urlsplit(str(url))
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class SigV4Signer:
    """Signs requests for one set of credentials, one region and one service.

    The secret is kept on the instance only and never shown: ``repr`` names the access key
    id, region and service.
    """

    __slots__ = (
        "access_key_id",
        "_secret",
        "_session_token",
        "region",
        "service",
        "s3",
        "content_sha256_header",
        "_keys",
    )

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        *,
        region: str,
        service: str,
        session_token: str | None = None,
        content_sha256_header: bool | None = None,
        s3_uri: bool | None = None,
    ) -> None:
        """``content_sha256_header``: send ``x-amz-content-sha256`` (signed); S3 requires
        it, so it defaults to on for the service ``s3`` and off for the others.
        ``s3_uri``: encode the path once and never normalise it, as S3 does (default: for
        the service ``s3`` only)."""
        self.access_key_id = access_key_id
        self._secret = secret_access_key
        self._session_token = session_token or None
        self.region = region
        self.service = service
        is_s3 = service == "s3"
        self.s3 = is_s3 if s3_uri is None else s3_uri
        self.content_sha256_header = (
            is_s3 if content_sha256_header is None else content_sha256_header
        )
        self._keys: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return (
            f"SigV4Signer(access_key_id={self.access_key_id!r}, region={self.region!r}, "
            f"service={self.service!r})"
        )

    # -- the four steps ----------------------------------------------------------------

    def scope(self, date: str) -> str:
        """The credential scope: ``20150830/us-east-1/service/aws4_request``."""
        return f"{date}/{self.region}/{self.service}/aws4_request"

    def signing_key(self, date: str) -> bytes:
        """The derived key for ``date`` (``YYYYMMDD``), computed once per day."""
        key = self._keys.get(date)
        if key is None:
            key = _hmac(("AWS4" + self._secret).encode("utf-8"), date)
            for part in (self.region, self.service, "aws4_request"):
                key = _hmac(key, part)
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[date] = key
        return key

    def canonical_request(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Iterable[tuple[str, str]],
        payload_hash: str,
    ) -> tuple[str, str]:
        """``(canonical request, signed header names)``; ``headers`` are those to sign."""
        header_lines, signed = canonical_headers(headers)
        request = "\n".join(
            (
                method.upper(),
                canonical_uri(raw_path, s3=self.s3),
                canonical_query(raw_query),
                header_lines,
                signed,
                payload_hash,
            )
        )
        return request, signed

    def string_to_sign(self, amz_date: str, canonical: str) -> str:
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return f"{ALGORITHM}\n{amz_date}\n{self.scope(amz_date[:8])}\n{digest}"

    def signature(self, amz_date: str, string_to_sign: str) -> str:
        key = self.signing_key(amz_date[:8])
        return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()

    # -- whole requests ----------------------------------------------------------------

    def sign(
        self,
        method: str,
        url: httpx.URL | str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        payload: bytes | None = None,
        payload_hash: str | None = None,
        now: datetime | float | None = None,
    ) -> dict[str, str]:
        """The headers to add to a request so that it is signed.

        ``url`` is the URL as it is sent (percent-encoded). The payload is hashed unless
        ``payload_hash`` is given (:data:`UNSIGNED_PAYLOAD` skips body signing where the
        service allows it, as S3 does over HTTPS). Every header given is signed, except
        those a proxy may change (:data:`UNSIGNED_HEADERS`); ``host`` is added from the
        URL when missing. ``now`` (a datetime in UTC or a POSIX time) is for tests.
        """
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        raw_path, _, raw_query = parsed.raw_path.decode("ascii").partition("?")
        return self.sign_parts(
            method,
            raw_path,
            raw_query,
            headers,
            host=host_of(parsed),
            payload_hash=payload_hash or _payload_hash(payload),
            now=now,
        )

    def sign_parts(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        *,
        host: str | None = None,
        payload_hash: str = EMPTY_SHA256,
        now: datetime | float | None = None,
    ) -> dict[str, str]:
        """:meth:`sign` for a request already split into path and query (as sent)."""
        amz_date = _amz_date(now)
        added: dict[str, str] = {"x-amz-date": amz_date}
        if self._session_token:
            added["x-amz-security-token"] = self._session_token
        if self.content_sha256_header:
            added["x-amz-content-sha256"] = payload_hash
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        to_sign: list[tuple[str, str]] = []
        has_host = False
        for name, value in pairs:
            lowered = name.lower()
            if lowered in UNSIGNED_HEADERS or lowered in _REPLACED:
                continue
            has_host = has_host or lowered == "host"
            to_sign.append((lowered, value))
        if not has_host:
            if host is None:
                raise ValueError("a Host header or the URL's host is needed to sign")
            to_sign.append(("host", host))
        to_sign.extend(added.items())
        canonical, signed = self.canonical_request(
            method, raw_path, raw_query, to_sign, payload_hash
        )
        signature = self.signature(amz_date, self.string_to_sign(amz_date, canonical))
        added["authorization"] = (
            f"{ALGORITHM} Credential={self.access_key_id}/{self.scope(amz_date[:8])}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return added

    def presign(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        expires: int = 3600,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        payload_hash: str | None = None,
        now: datetime | float | None = None,
    ) -> str:
        """``url`` with the signature in its query string, valid for ``expires`` seconds.

        Whoever holds the URL may make the request: treat it as a secret. The payload is
        not signed (``UNSIGNED-PAYLOAD``) for S3, and is the empty body's hash for other
        services unless ``payload_hash`` says otherwise. ``headers`` (besides ``host``)
        must be sent with the request as given here.
        """
        if not 1 <= expires <= 604800:
            raise ValueError("expires must be between 1 second and 7 days")
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        raw_path, _, raw_query = parsed.raw_path.decode("ascii").partition("?")
        amz_date = _amz_date(now)
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        to_sign = [
            (name.lower(), value)
            for name, value in pairs
            if name.lower() not in UNSIGNED_HEADERS and name.lower() not in _REPLACED
        ]
        if not any(name == "host" for name, _ in to_sign):
            to_sign.append(("host", host_of(parsed)))
        signed = ";".join(sorted({name for name, _ in to_sign}))
        auth_params = [
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{self.access_key_id}/{self.scope(amz_date[:8])}"),
            ("X-Amz-Date", amz_date),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", signed),
        ]
        if self._session_token:
            auth_params.append(("X-Amz-Security-Token", self._session_token))
        added = "&".join(f"{name}={uri_encode(value)}" for name, value in auth_params)
        query = f"{raw_query}&{added}" if raw_query else added
        if payload_hash is None:
            payload_hash = UNSIGNED_PAYLOAD if self.s3 else EMPTY_SHA256
        canonical, _ = self.canonical_request(method, raw_path, query, to_sign, payload_hash)
        signature = self.signature(amz_date, self.string_to_sign(amz_date, canonical))
        return str(parsed.copy_with(query=f"{query}&X-Amz-Signature={signature}".encode()))


class SigV4Auth(httpx.Auth):
    """An httpx auth flow that signs each request (and each retry) with ``signer``.

    ``unsigned_payload=True`` sends ``UNSIGNED-PAYLOAD`` instead of hashing the body: S3
    accepts it over HTTPS, which saves hashing large uploads.
    """

    requires_request_body = True

    def __init__(self, signer: SigV4Signer, *, unsigned_payload: bool = False) -> None:
        self.signer = signer
        self.unsigned_payload = unsigned_payload

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        payload_hash = UNSIGNED_PAYLOAD if self.unsigned_payload else _payload_hash(request.content)
        raw_path, _, raw_query = request.url.raw_path.decode("ascii").partition("?")
        request.headers.update(
            self.signer.sign_parts(
                request.method,
                raw_path,
                raw_query,
                request.headers.multi_items(),
                host=host_of(request.url),
                payload_hash=payload_hash,
            )
        )
        yield request


def _payload_hash(payload: bytes | None) -> str:
    return hashlib.sha256(payload).hexdigest() if payload else EMPTY_SHA256


def _amz_date(now: datetime | float | None) -> str:
    if isinstance(now, datetime):
        if now.tzinfo is not None:
            now = now.astimezone(UTC)
        return now.strftime(_TIMESTAMP)
    return time.strftime(_TIMESTAMP, time.gmtime(time.time() if now is None else now))
