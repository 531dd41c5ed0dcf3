"""The S3 transport against a real S3-compatible server: moto in server mode, started here.

Two moto servers run for the session, each on a free port of 127.0.0.1:

- ``moto``: plain; moto does not check signatures unless told to, so this one proves the
  S3 protocol work (round trips, pagination, multipart, errors);
- ``moto_auth``: started with ``INITIAL_NO_AUTH_ACTION_COUNT=3``, so that after the three
  requests that create an IAM user, its key and its policy, moto verifies every request's
  SigV4 signature (it recomputes it with botocore's signer) and its credentials: wrong
  secrets, unknown keys and session tokens are tested there.

moto's verifier rebuilds the canonical path from the URL its web server saw, which for
``$``, ``+`` and non-ASCII characters is not the form S3 signs, so the authenticated tests
use plain keys; those characters are covered by AWS's own vectors and the botocore
cross-check in ``test_sigv4.py``, and by round trips on the plain server here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.runtime.config import Setting, resolve_settings
from builder.runtime.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConnectionFailedError,
    ConnectorError,
    NotFoundError,
    RateLimitedError,
    ResponseValidationError,
    ServerError,
    WriteError,
)
from builder.runtime.resilience import RetryPolicy
from builder.runtime.sigv4 import SigV4Signer
from builder.runtime.transports.s3 import (
    S3AuthenticationError,
    S3Connector,
    S3Error,
    S3NotFoundError,
)
from tests.data.conftest import free_port, require_server

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024

# What the generator emits for the kind's standard settings (builder/spec/kinds.py).
S3_SETTINGS = (
    Setting("endpoint_url", str, default="https://s3.amazonaws.com"),
    Setting("region", str, env="AWS_REGION", default="us-east-1"),
    Setting("bucket", str),
    Setting("prefix", str, default=""),
    Setting("access_key_id", str, env="AWS_ACCESS_KEY_ID"),
    Setting("secret_access_key", str, env="AWS_SECRET_ACCESS_KEY", secret=True),
    Setting("session_token", str, env="AWS_SESSION_TOKEN", secret=True),
    Setting("timeout", float, default=60.0),
)
KEY_ID, SECRET = "AKIAEXAMPLEMOTO00001", "moto-secret-key-value-0001"


class SmallPartsS3(S3Connector):
    """S3's smallest allowed parts, so a multipart upload takes ~11 MiB, not 24."""

    _name = "s3"
    _options: ClassVar[dict[str, Any]] = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB}
    _retry = RetryPolicy(attempts=3, initial_delay=0.01, jitter=False)


def connect(
    endpoint: str, bucket: str, cls: type[S3Connector] = SmallPartsS3, **given: Any
) -> S3Connector:
    values = {
        "endpoint_url": endpoint,
        "bucket": bucket,
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        **given,
    }
    return cls(resolve_settings(S3_SETTINGS, values, connector="s3"))


@pytest.fixture(autouse=True)
def _no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------------------- #
# moto servers
# --------------------------------------------------------------------------------------- #


@dataclass
class Moto:
    endpoint: str
    port: int
    process: subprocess.Popen[bytes]


def start_moto(**env: str) -> Moto:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(f"{endpoint}/moto-api/", timeout=1.0)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return Moto(endpoint, port, process)


def stop_moto(server: Moto) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    server = start_moto()
    try:
        yield server
    finally:
        stop_moto(server)


@pytest.fixture()
def moto(moto_server: Moto) -> str:
    require_server("127.0.0.1", moto_server.port, "moto S3 server (python -m moto.server)")
    return moto_server.endpoint


@pytest.fixture()
def bucket(moto: str) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    connect(moto, name).create_bucket()
    return name


def _form(endpoint: str, signer: SigV4Signer, params: dict[str, str]) -> str:
    """An IAM/STS query API call, signed (as a generic AWS service) by our signer."""
    body = urlencode(params).encode()
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    headers.update(signer.sign("POST", endpoint + "/", headers, payload=body))
    response = httpx.post(endpoint + "/", content=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def _xml_value(text: str, name: str) -> str:
    found = re.search(f"<{name}>(.*?)</{name}>", text, re.S)
    assert found, text
    return found.group(1)


@dataclass
class AuthMoto:
    endpoint: str
    key_id: str
    secret: str
    role_arn: str


@pytest.fixture(scope="session")
def moto_auth_server() -> Iterator[tuple[Moto, AuthMoto | None]]:
    server = start_moto(INITIAL_NO_AUTH_ACTION_COUNT="3")
    account: AuthMoto | None = None
    try:
        if server.process.poll() is None:
            account = _bootstrap_account(server.endpoint)
        yield server, account
    finally:
        stop_moto(server)


def _bootstrap_account(endpoint: str) -> AuthMoto:
    # The three requests moto lets through unchecked: a user, its key, its policy.
    bootstrap = SigV4Signer("AKIABOOTSTRAP0000000", "unchecked", region="us-east-1", service="iam")
    iam = {"Version": "2010-05-08"}
    _form(endpoint, bootstrap, {**iam, "Action": "CreateUser", "UserName": "tester"})
    created = _form(endpoint, bootstrap, {**iam, "Action": "CreateAccessKey", "UserName": "tester"})
    key_id, secret = _xml_value(created, "AccessKeyId"), _xml_value(created, "SecretAccessKey")
    allow_all = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
    )
    _form(
        endpoint,
        bootstrap,
        {
            **iam,
            "Action": "PutUserPolicy",
            "UserName": "tester",
            "PolicyName": "all",
            "PolicyDocument": allow_all,
        },
    )
    # From here on moto checks every signature: these calls are signed with the new key.
    signer = SigV4Signer(key_id, secret, region="us-east-1", service="iam")
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    role = _form(
        endpoint,
        signer,
        {**iam, "Action": "CreateRole", "RoleName": "s3-role", "AssumeRolePolicyDocument": trust},
    )
    _form(
        endpoint,
        signer,
        {
            **iam,
            "Action": "PutRolePolicy",
            "RoleName": "s3-role",
            "PolicyName": "all",
            "PolicyDocument": allow_all,
        },
    )
    return AuthMoto(endpoint, key_id, secret, _xml_value(role, "Arn"))


@pytest.fixture()
def moto_auth(moto_auth_server: tuple[Moto, AuthMoto | None]) -> AuthMoto:
    server, account = moto_auth_server
    require_server("127.0.0.1", server.port, "moto S3 server with IAM checks")
    assert account is not None
    return account


# --------------------------------------------------------------------------------------- #
# Import, configuration, addressing
# --------------------------------------------------------------------------------------- #


def test_import_does_not_load_xml_parser_or_sdks() -> None:
    code = (
        "import sys; import builder.runtime.transports.s3 as s3\n"
        "heavy = ('defusedxml', 'botocore', 'boto3', 'jinja2', 'yaml')\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "s3._parse_xml(b'<a/>')\n"
        "print('defusedxml' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


def test_settings_are_checked_when_first_used() -> None:
    no_bucket = connect("http://127.0.0.1:1", None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bucket"):
        list(no_bucket.list_objects())
    half = connect("http://127.0.0.1:1", "b-1", secret_access_key=None)
    with pytest.raises(ConfigError, match="together"):
        half.get("k")
    bad = connect("ftp://example.com", "b-1")
    with pytest.raises(ConfigError, match="endpoint_url"):
        bad.get("k")


def _recording(
    handler: Callable[[httpx.Request], httpx.Response],
) -> tuple[type[S3Connector], list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    class Recorded(SmallPartsS3):
        def _make_client(self, timeout: float) -> httpx.Client:
            return httpx.Client(transport=httpx.MockTransport(record), timeout=timeout)

    return Recorded, seen


def test_addressing_styles() -> None:
    cls, seen = _recording(lambda r: httpx.Response(200, content=b"x"))
    connect("https://s3.eu-west-1.amazonaws.com", "my-bucket", cls, region="eu-west-1").get("a b/c")
    connect("http://minio.local:9000/base/", "my-bucket", cls).get("a b/c")
    connect("https://s3.amazonaws.com", "dotted.bucket", cls).get("k")
    connect("https://s3.amazonaws.com", "my-bucket", cls, region="eu-north-1").get("k")
    connect("http://minio.local:9000", "my-bucket", cls).get("a/../b/./c")
    assert [str(r.url) for r in seen] == [
        "https://my-bucket.s3.eu-west-1.amazonaws.com/a%20b/c",
        "http://minio.local:9000/base/my-bucket/a%20b/c",
        "https://s3.amazonaws.com/dotted.bucket/k",
        "https://my-bucket.s3.eu-north-1.amazonaws.com/k",
        # Dot segments are key names in S3: sent encoded, or httpx would resolve them away.
        "http://minio.local:9000/my-bucket/a/%2E%2E/b/%2E/c",
    ]
    assert seen[0].headers["host"] == "my-bucket.s3.eu-west-1.amazonaws.com"
    assert "Credential=AKIAEXAMPLEMOTO00001/" in seen[0].headers["authorization"]
    assert "/eu-west-1/s3/aws4_request" in seen[0].headers["authorization"]


def test_anonymous_requests_are_not_signed() -> None:
    cls, seen = _recording(lambda r: httpx.Response(200, content=b"public"))
    public = connect(
        "http://127.0.0.1:9", "open-data", cls, access_key_id=None, secret_access_key=None
    )
    assert public.get("readme.txt")["content"] == b"public"
    assert "authorization" not in seen[0].headers


# --------------------------------------------------------------------------------------- #
# Round trips against moto
# --------------------------------------------------------------------------------------- #


@pytest.mark.integration
def test_round_trip(moto: str, bucket: str) -> None:
    records = [
        {"key": "b.json", "content": b'{"n": 1}'},
        {"key": "a.txt", "content": "héllo"},
        {"key": "dir/c.bin", "content": b"\x00\xff", "content_type": "application/x-custom"},
    ]
    with connect(moto, bucket) as store:
        assert store.write(records) == 3
        objects = list(store.read())
        assert [o["key"] for o in objects] == ["a.txt", "b.json", "dir/c.bin"]
        by_key = {o["key"]: o for o in objects}
        assert by_key["a.txt"]["content"] == "héllo".encode()
        assert by_key["a.txt"]["size"] == len("héllo".encode())
        assert by_key["a.txt"]["etag"] == hashlib.md5("héllo".encode()).hexdigest()
        assert by_key["a.txt"]["content_type"] == "text/plain"
        assert by_key["b.json"]["content_type"] == "application/json"
        assert by_key["dir/c.bin"]["content_type"] == "application/x-custom"
        assert by_key["dir/c.bin"]["last_modified"].tzinfo is not None
        assert store.get("dir/c.bin")["content"] == b"\x00\xff"
        metrics = store.metrics
        assert metrics.records_written == 3 and metrics.records_read == 3
        assert metrics.bytes_written == metrics.bytes_read - 2  # get() read c.bin again
    with pytest.raises(ConnectorError, match="closed"):  # closed: further use is refused
        store.get("a.txt")


@pytest.mark.integration
def test_prefix_scopes_keys(moto: str, bucket: str) -> None:
    exports = connect(moto, bucket, prefix="exports/")
    other = connect(moto, bucket, prefix="other/")
    whole = connect(moto, bucket)
    exports.write([{"key": "x.csv", "content": "1"}, {"key": "sub/y.csv", "content": "2"}])
    other.write([{"key": "x.csv", "content": "3"}])
    assert [o["key"] for o in exports.list_objects()] == ["sub/y.csv", "x.csv"]
    assert [o["key"] for o in exports.list_objects("sub/")] == ["sub/y.csv"]
    assert [o["key"] for o in whole.list_objects()] == [
        "exports/sub/y.csv",
        "exports/x.csv",
        "other/x.csv",
    ]
    assert other.get("x.csv")["content"] == b"3"
    assert exports.delete(["x.csv", "never-existed"]) == 2
    assert [o["key"] for o in whole.list_objects()] == ["exports/sub/y.csv", "other/x.csv"]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_listing_pages_lazily_through_continuation_tokens(moto: str, bucket: str) -> None:
    store = connect(moto, bucket)
    keys = [f"item-{n:04d}" for n in range(230)]
    store.write([{"key": k, "content": k} for k in keys])

    requests: list[str] = []

    class Counting(SmallPartsS3):
        def _make_client(self, timeout: float) -> httpx.Client:
            def hook(request: httpx.Request) -> None:
                requests.append(request.url.query.decode())

            return httpx.Client(timeout=timeout, event_hooks={"request": [hook]})

    lister = connect(moto, bucket, Counting)
    listing = lister.list_objects(page_size=100)
    first = [next(listing)["key"] for _ in range(5)]
    assert first == keys[:5] and len(requests) == 1  # one page fetched so far
    rest = [o["key"] for o in listing]
    assert first + rest == keys
    assert len(requests) == 3
    assert "continuation-token=" not in requests[0]
    assert all("continuation-token=" in q for q in requests[1:])


@pytest.mark.integration
def test_read_fetches_each_object_only_when_asked(moto: str, bucket: str) -> None:
    connect(moto, bucket).write([{"key": f"k{n}", "content": str(n)} for n in range(4)])
    methods: list[str] = []

    class Counting(SmallPartsS3):
        def _make_client(self, timeout: float) -> httpx.Client:
            def hook(request: httpx.Request) -> None:
                methods.append(f"{request.method} {request.url.path}")

            return httpx.Client(timeout=timeout, event_hooks={"request": [hook]})

    records = connect(moto, bucket, Counting).read()
    assert methods == []
    assert next(records)["content"] == b"0"
    assert methods == [f"GET /{bucket}", f"GET /{bucket}/k0"]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_multipart_upload_above_threshold(moto: str, bucket: str) -> None:
    parts: list[str] = []

    class Counting(SmallPartsS3):
        def _make_client(self, timeout: float) -> httpx.Client:
            def hook(request: httpx.Request) -> None:
                parts.append(request.url.query.decode())

            return httpx.Client(timeout=timeout, event_hooks={"request": [hook]})

    big = os.urandom(11 * MIB)  # 5 + 5 + 1 MiB parts
    small = b"x" * (5 * MIB - 1)  # just under the threshold: one PUT
    store = connect(moto, bucket, Counting)
    assert (
        store.write([{"key": "big.bin", "content": big}, {"key": "small.bin", "content": small}])
        == 2
    )
    uploads = [q for q in parts if q.startswith("partNumber=")]
    assert [q.split("&")[0] for q in uploads] == ["partNumber=1", "partNumber=2", "partNumber=3"]
    assert sum(1 for q in parts if q == "uploads=") == 1
    got = store.get("big.bin")
    assert got["content"] == big
    assert got["etag"].endswith("-3")  # S3's multipart ETag: md5 of part md5s, dash, count
    expected = hashlib.md5(
        b"".join(hashlib.md5(big[i : i + 5 * MIB]).digest() for i in range(0, len(big), 5 * MIB))
    ).hexdigest()
    assert got["etag"] == f"{expected}-3"
    assert store.get("small.bin")["etag"] == hashlib.md5(small).hexdigest()


def _open_uploads(store: S3Connector) -> list[str]:
    response = store._request("GET", query=[("uploads", "")], operation="list_uploads")
    return re.findall(r"<UploadId>(.*?)</UploadId>", response.text)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_failed_multipart_upload_is_aborted(moto: str, bucket: str) -> None:
    class FailingPart(SmallPartsS3):
        def _request(
            self, method: str, key_path: str = "", query: Any = (), **kw: Any
        ) -> httpx.Response:
            query = list(query)
            if ("partNumber", "2") in query:
                raise ConnectionFailedError("connection reset while sending part 2", connector="s3")
            return super()._request(method, key_path, query, **kw)

    store = connect(moto, bucket, FailingPart)
    records = [
        {"key": "big.bin", "content": os.urandom(11 * MIB)},
        {"key": "next.txt", "content": "n"},
    ]
    with pytest.raises(WriteError) as caught:
        store.write(records)
    assert caught.value.written == 0
    assert caught.value.failed == records
    assert "'big.bin'" in str(caught.value) and "'next.txt'" in str(caught.value)
    assert _open_uploads(store) == []  # the parts already sent were dropped
    assert list(store.list_objects()) == []
    # The retry of exactly what failed writes each object once.
    assert connect(moto, bucket).write(caught.value.failed) == 2
    assert [o["key"] for o in store.list_objects()] == ["big.bin", "next.txt"]


@pytest.mark.integration
def test_write_error_names_exactly_the_unwritten_objects(moto: str, bucket: str) -> None:
    store = connect(moto, bucket)
    records = [
        {"key": "one", "content": "1"},
        {"key": "two", "content": 2},  # not bytes or str
        {"key": "three", "content": "3"},
    ]
    with pytest.raises(WriteError) as caught:
        store.write(records)
    assert caught.value.written == 1 and caught.value.failed == records[1:]
    assert [o["key"] for o in store.list_objects()] == ["one"]
    assert store.metrics.errors == 1

    missing = connect(moto, f"missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(WriteError) as caught:
        missing.write([{"key": "a", "content": "a"}, {"key": "b", "content": "b"}])
    assert caught.value.written == 0 and len(caught.value.failed) == 2
    cause = caught.value.__cause__
    assert isinstance(cause, S3NotFoundError) and cause.code == "NoSuchBucket"


@pytest.mark.integration
def test_errors_are_mapped_with_the_s3_code(moto: str, bucket: str) -> None:
    store = connect(moto, bucket)
    with pytest.raises(NotFoundError) as caught:
        store.get("no/such/key")
    error = caught.value
    assert isinstance(error, S3Error) and error.code == "NoSuchKey" and error.status_code == 404
    assert "no/such/key" in str(error) and error.operation == "get"
    with pytest.raises(S3NotFoundError, match="NoSuchBucket"):
        list(connect(moto, f"missing-{uuid.uuid4().hex[:8]}").list_objects())
    with pytest.raises(BadRequestError) as bad:
        connect(moto, "ab").create_bucket()  # too short for a bucket name
    assert isinstance(bad.value, S3Error) and bad.value.code == "InvalidBucketName"


# Any key: unicode, '/', '//', '.' and '..' segments, '%', '+', '?', '#' ...
KEY_TEXT = st.text(
    st.one_of(
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
        st.sampled_from(["/", ".", "%", "+", "?", "#", " "]),
    ),
    min_size=1,
    max_size=30,
)


@pytest.mark.integration
@pytest.mark.timeout(120)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=KEY_TEXT, content=st.binary(max_size=200))
def test_any_key_round_trips(moto: str, bucket: str, key: str, content: bytes) -> None:
    store = connect(moto, bucket, prefix="fuzz/")
    store.write([{"key": key, "content": content}])
    assert store.get(key)["content"] == content
    listed = [o["key"] for o in store.list_objects()]
    assert key in listed
    assert store.delete([key]) == 1


# --------------------------------------------------------------------------------------- #
# Signatures and credentials, verified by moto
# --------------------------------------------------------------------------------------- #


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_server_verifies_our_signatures(moto_auth: AuthMoto) -> None:
    name = f"signed-{uuid.uuid4().hex[:8]}"
    store = connect(
        moto_auth.endpoint, name, access_key_id=moto_auth.key_id, secret_access_key=moto_auth.secret
    )
    store.create_bucket()
    data = os.urandom(6 * MIB)
    assert (
        store.write([{"key": "big.bin", "content": data}, {"key": "dir/a b.txt", "content": "x"}])
        == 2
    )
    assert [o["key"] for o in store.list_objects()] == ["big.bin", "dir/a b.txt"]
    assert store.get("big.bin")["content"] == data
    assert store.delete(["dir/a b.txt"]) == 1


@pytest.mark.integration
def test_wrong_secret_and_unknown_key_are_authentication_errors(moto_auth: AuthMoto) -> None:
    name = f"creds-{uuid.uuid4().hex[:8]}"
    good = connect(
        moto_auth.endpoint, name, access_key_id=moto_auth.key_id, secret_access_key=moto_auth.secret
    )
    good.create_bucket()
    wrong_secret = "wrong-secret-value-1234567890"
    wrong = connect(
        moto_auth.endpoint, name, access_key_id=moto_auth.key_id, secret_access_key=wrong_secret
    )
    with pytest.raises(AuthenticationError) as caught:
        wrong.get("anything")
    error = caught.value
    assert isinstance(error, S3AuthenticationError) and error.code == "SignatureDoesNotMatch"
    assert error.status_code == 403
    for text in (str(error), error.body, repr(wrong), repr(error.__dict__)):
        assert wrong_secret not in text and moto_auth.secret not in text
    unknown = connect(
        moto_auth.endpoint,
        name,
        access_key_id="AKIAUNKNOWNKEY000000",
        secret_access_key="whatever-secret-1",
    )
    with pytest.raises(S3AuthenticationError, match="InvalidAccessKeyId"):
        list(unknown.list_objects())


def _assume_role(account: AuthMoto) -> tuple[str, str, str]:
    signer = SigV4Signer(account.key_id, account.secret, region="us-east-1", service="sts")
    answer = _form(
        account.endpoint,
        signer,
        {
            "Version": "2011-06-15",
            "Action": "AssumeRole",
            "RoleArn": account.role_arn,
            "RoleSessionName": "connector-test",
            "DurationSeconds": "900",
        },
    )
    return (
        _xml_value(answer, "AccessKeyId"),
        _xml_value(answer, "SecretAccessKey"),
        _xml_value(answer, "SessionToken"),
    )


@pytest.mark.integration
def test_session_token_is_signed_and_checked(moto_auth: AuthMoto) -> None:
    key_id, secret, token = _assume_role(moto_auth)
    name = f"session-{uuid.uuid4().hex[:8]}"
    temporary = connect(
        moto_auth.endpoint,
        name,
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=token,
    )
    temporary.create_bucket()
    temporary.write([{"key": "t.txt", "content": "temporary"}])
    assert temporary.get("t.txt")["content"] == b"temporary"
    stale = connect(
        moto_auth.endpoint,
        name,
        access_key_id=key_id,
        secret_access_key=secret,
        session_token="not-the-token",
    )
    with pytest.raises(S3AuthenticationError) as caught:
        stale.get("t.txt")
    assert caught.value.code == "InvalidToken"
    assert token not in repr(temporary) and secret not in repr(temporary)


# --------------------------------------------------------------------------------------- #
# Retries and hostile answers (a scripted server: moto does not fail on demand)
# --------------------------------------------------------------------------------------- #

ERROR_XML = (
    "<Error><Code>{code}</Code><Message>{message}</Message><RequestId>R1</RequestId></Error>"
)


def test_throttling_and_5xx_are_retried_and_re_signed() -> None:
    answers = iter(
        [
            httpx.Response(
                503, text=ERROR_XML.format(code="SlowDown", message="Reduce your request rate.")
            ),
            httpx.Response(500, text=ERROR_XML.format(code="InternalError", message="oops")),
            httpx.Response(200, content=b"finally"),
        ]
    )
    cls, seen = _recording(lambda r: next(answers))
    assert connect("http://s3.local", "b-1", cls).get("k")["content"] == b"finally"
    assert len(seen) == 3
    assert all(r.headers["authorization"].startswith("AWS4-HMAC-SHA256 ") for r in seen)


def test_retries_are_bounded_and_the_error_kept() -> None:
    cls, seen = _recording(
        lambda r: httpx.Response(503, text=ERROR_XML.format(code="SlowDown", message="slow down"))
    )
    with pytest.raises(RateLimitedError) as caught:
        connect("http://s3.local", "b-1", cls).get("k")
    assert len(seen) == 3 and caught.value.code == "SlowDown"  # type: ignore[attr-defined]
    cls, seen = _recording(lambda r: httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ServerError) as server:
        connect("http://s3.local", "b-1", cls).get("k")
    assert len(seen) == 3 and server.value.status_code == 502


def test_dropped_connections_retry_idempotent_requests_only() -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection reset")

    cls, seen = _recording(drop)
    with pytest.raises(ConnectionFailedError):
        connect("http://s3.local", "b-1", cls).get("k")
    assert len(seen) == 3
    seen.clear()
    with pytest.raises(WriteError):  # CreateMultipartUpload is a POST: sent once
        connect("http://s3.local", "b-1", cls).write([{"key": "big", "content": b"x" * (5 * MIB)}])
    assert [r.method for r in seen] == ["POST"]


def test_xml_with_entities_is_refused() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>&lol2;</Key>"
        "<Size>1</Size></Contents></ListBucketResult>"
    )
    cls, _ = _recording(lambda r: httpx.Response(200, text=bomb))
    with pytest.raises(ResponseValidationError, match="not the XML"):
        list(connect("http://s3.local", "b-1", cls).list_objects())


def test_a_listing_that_repeats_its_token_ends() -> None:
    page = (
        "<ListBucketResult><IsTruncated>true</IsTruncated>"
        "<NextContinuationToken>same</NextContinuationToken>"
        "<Contents><Key>k</Key><Size>1</Size><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
        '<ETag>"e"</ETag></Contents></ListBucketResult>'
    )
    cls, seen = _recording(lambda r: httpx.Response(200, text=page))
    with pytest.raises(ResponseValidationError, match="continuation token"):
        list(connect("http://s3.local", "b-1", cls).list_objects())
    assert len(seen) == 2


def test_complete_multipart_error_in_a_200_body_aborts() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        query = request.url.query.decode()
        if request.method == "POST" and query == "uploads=":
            return httpx.Response(
                200,
                text="<InitiateMultipartUploadResult><UploadId>U1</UploadId></InitiateMultipartUploadResult>",
            )
        if request.method == "PUT":
            return httpx.Response(200, headers={"etag": '"p"'})
        if request.method == "POST":
            return httpx.Response(
                200, text=ERROR_XML.format(code="InternalError", message="try again")
            )
        return httpx.Response(204)

    cls, seen = _recording(answer)
    with pytest.raises(WriteError) as caught:
        connect("http://s3.local", "b-1", cls).write([{"key": "big", "content": b"x" * (6 * MIB)}])
    assert isinstance(caught.value.__cause__, ServerError)
    assert [(r.method, r.url.query.decode()) for r in seen][-1] == ("DELETE", "uploadId=U1")


def test_delete_reports_refused_keys() -> None:
    refused = (
        "<DeleteResult><Error><Key>p/b</Key><Code>AccessDenied</Code><Message>no</Message></Error>"
        "</DeleteResult>"
    )
    cls, seen = _recording(lambda r: httpx.Response(200, text=refused))
    store = connect("http://s3.local", "b-1", cls, prefix="p/")
    with pytest.raises(WriteError) as caught:
        store.delete(["a", "b", "c"])
    assert caught.value.written == 2 and caught.value.failed == ["b"]
    body = seen[0].content.decode()
    assert "<Key>p/a</Key>" in body and "<Quiet>true</Quiet>" in body
    assert "content-md5" in seen[0].headers
