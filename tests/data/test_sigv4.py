"""AWS Signature Version 4: AWS's published vectors, S3's worked examples, and botocore.

The vectors (tests/fixtures/sigv4/, sources in its README) are facts from AWS's
documentation; the cross-check signs random requests with our signer and with botocore's
(installed with moto) and compares the Authorization headers byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.auth import (  # type: ignore[import-untyped]
    S3SigV4Auth,
    S3SigV4QueryAuth,
)
from botocore.auth import SigV4Auth as BotoSigV4Auth
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.runtime.sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_HEADERS,
    UNSIGNED_PAYLOAD,
    SigV4Auth,
    SigV4Signer,
    canonical_query,
    canonical_uri,
    uri_encode,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sigv4"
SUITE: dict[str, Any] = json.loads((FIXTURES / "aws_sig_v4_test_suite.json").read_text("utf-8"))
S3_EXAMPLES: dict[str, Any] = json.loads((FIXTURES / "s3_examples.json").read_text("utf-8"))


def _when(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _suite_signer(case: dict[str, Any]) -> SigV4Signer:
    credentials = SUITE["credentials"]
    return SigV4Signer(
        credentials["access_key_id"],
        credentials["secret_access_key"],
        region=SUITE["region"],
        service=SUITE["service"],
        session_token=case.get("session_token"),
        content_sha256_header=case.get("content_sha256_header", False),
        s3_uri=case["uri"] == "s3",
    )


def _s3_signer() -> SigV4Signer:
    credentials = S3_EXAMPLES["credentials"]
    return SigV4Signer(
        credentials["access_key_id"],
        credentials["secret_access_key"],
        region=S3_EXAMPLES["region"],
        service="s3",
    )


# --------------------------------------------------------------------------------------- #
# AWS's test suite
# --------------------------------------------------------------------------------------- #


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


@pytest.mark.parametrize("case", SUITE["cases"], ids=_ids(SUITE["cases"]))
def test_suite_authorization_header(case: dict[str, Any]) -> None:
    signer = _suite_signer(case)
    body = case["body"].encode()
    added = signer.sign_parts(
        case["method"],
        case["path"],
        case["query"],
        [tuple(pair) for pair in case["headers"]],
        payload_hash=hashlib.sha256(body).hexdigest(),
        now=_when(SUITE["timestamp"]),
    )
    assert added["authorization"] == case["authorization"]
    assert added["x-amz-date"] == SUITE["timestamp"]
    if case["session_token"]:
        assert added["x-amz-security-token"] == case["session_token"]
    else:
        assert "x-amz-security-token" not in added


WITH_STEPS = [c for c in SUITE["cases"] if "canonical_request" in c or "string_to_sign" in c]


@pytest.mark.parametrize("case", WITH_STEPS, ids=_ids(WITH_STEPS))
def test_suite_canonical_request_and_string_to_sign(case: dict[str, Any]) -> None:
    signer = _suite_signer(case)
    headers = [(name, value) for name, value in case["headers"]]
    if case["session_token"]:
        headers.append(("X-Amz-Security-Token", case["session_token"]))
    payload_hash = hashlib.sha256(case["body"].encode()).hexdigest()
    canonical, _ = signer.canonical_request(
        case["method"], case["path"], case["query"], headers, payload_hash
    )
    if "canonical_request" in case:
        assert canonical == case["canonical_request"]
    if "string_to_sign" in case:
        assert signer.string_to_sign(SUITE["timestamp"], canonical) == case["string_to_sign"]
    if "canonical_request" in case and "string_to_sign" in case:
        # The fixture itself: the published string to sign hashes the published request.
        digest = hashlib.sha256(case["canonical_request"].encode()).hexdigest()
        assert case["string_to_sign"].endswith(digest)


@pytest.mark.parametrize("case", SUITE["presigned"], ids=_ids(SUITE["presigned"]))
def test_suite_presigned_url(case: dict[str, Any]) -> None:
    signer = _suite_signer({"uri": "generic", "session_token": case["session_token"]})
    url = signer.presign(
        case["method"], case["url"], expires=case["expires"], now=_when(SUITE["timestamp"])
    )
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Signature"] == [case["signature"]]
    assert query["X-Amz-Expires"] == [str(case["expires"])]
    if case["session_token"]:
        assert query["X-Amz-Security-Token"] == [case["session_token"]]


def test_signing_key_derivation_example() -> None:
    example = SUITE["signing_key_example"]
    signer = SigV4Signer(
        "AKIDEXAMPLE",
        example["secret_access_key"],
        region=example["region"],
        service=example["service"],
    )
    key = signer.signing_key(example["date"])
    assert key.hex() == example["signing_key"]
    assert signer.signing_key(example["date"]) is key  # cached per day
    assert signer.signing_key("20120216") != key


def test_signing_key_cache_stays_small() -> None:
    signer = SigV4Signer("AKID", "secret", region="us-east-1", service="s3")
    for day in range(1, 29):
        signer.signing_key(f"201202{day:02d}")
    assert len(signer._keys) <= 8


# --------------------------------------------------------------------------------------- #
# S3's worked examples
# --------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("case", S3_EXAMPLES["cases"], ids=_ids(S3_EXAMPLES["cases"]))
def test_s3_documented_examples(case: dict[str, Any]) -> None:
    signer = _s3_signer()
    body = case["body"].encode()
    added = signer.sign(
        case["method"],
        case["url"],
        [tuple(pair) for pair in case["headers"]],
        payload=body,
        now=_when(S3_EXAMPLES["timestamp"]),
    )
    assert added["authorization"] == case["authorization"]
    assert added["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    if "canonical_request" in case or "string_to_sign" in case:
        url = httpx.URL(case["url"])
        path, _, query = url.raw_path.decode().partition("?")
        headers = [
            ("host", url.host),
            *[tuple(pair) for pair in case["headers"]],
            ("x-amz-content-sha256", hashlib.sha256(body).hexdigest()),
            ("x-amz-date", S3_EXAMPLES["timestamp"]),
        ]
        canonical, _ = signer.canonical_request(
            case["method"], path, query, headers, hashlib.sha256(body).hexdigest()
        )
        if "canonical_request" in case:
            assert canonical == case["canonical_request"]
        if "string_to_sign" in case:
            assert (
                signer.string_to_sign(S3_EXAMPLES["timestamp"], canonical)
                == (case["string_to_sign"])
            )


def test_s3_documented_presigned_url() -> None:
    (case,) = S3_EXAMPLES["presigned"]
    url = _s3_signer().presign(
        case["method"], case["url"], expires=case["expires"], now=_when(S3_EXAMPLES["timestamp"])
    )
    assert url == case["expected_url"]


GET_EXAMPLES = [c for c in S3_EXAMPLES["cases"] if c["method"] == "GET"]


@pytest.mark.parametrize("case", GET_EXAMPLES, ids=_ids(GET_EXAMPLES))
def test_httpx_auth_flow_signs_the_documented_examples(case: dict[str, Any]) -> None:
    # httpx adds Host itself; the flow must sign what httpx will send.
    request = httpx.Request(case["method"], case["url"], headers=case["headers"])
    auth = SigV4Auth(_s3_signer())
    with mock.patch("builder.runtime.sigv4.time.time", return_value=1369353600.0):
        signed = next(auth.auth_flow(request))
    assert signed.headers["authorization"] == case["authorization"]
    assert signed.headers["x-amz-date"] == S3_EXAMPLES["timestamp"]


def test_unsigned_payload_is_sent_and_signed_as_such() -> None:
    request = httpx.Request("PUT", "https://examplebucket.s3.amazonaws.com/k", content=b"abc")
    signed = next(SigV4Auth(_s3_signer(), unsigned_payload=True).auth_flow(request))
    assert signed.headers["x-amz-content-sha256"] == UNSIGNED_PAYLOAD
    hashed = httpx.Request("PUT", "https://examplebucket.s3.amazonaws.com/k", content=b"abc")
    signed_body = next(SigV4Auth(_s3_signer()).auth_flow(hashed))
    assert signed_body.headers["x-amz-content-sha256"] == hashlib.sha256(b"abc").hexdigest()


# --------------------------------------------------------------------------------------- #
# The rules S3 differs on, and the small pieces
# --------------------------------------------------------------------------------------- #


def test_s3_never_normalises_or_double_encodes_the_path() -> None:
    assert canonical_uri("/bucket/a//b/../c", s3=True) == "/bucket/a//b/../c"
    assert canonical_uri("/bucket/a%20b", s3=True) == "/bucket/a%20b"
    assert canonical_uri("/bucket/a b", s3=True) == "/bucket/a%20b"
    assert canonical_uri("/bucket/caf%C3%A9+x", s3=True) == "/bucket/caf%C3%A9%2Bx"
    # Generic services: dot segments and repeated slashes go, the path as sent is encoded.
    assert canonical_uri("/a//b/../c", s3=False) == "/a/c"
    assert canonical_uri("/a%20b", s3=False) == "/a%2520b"
    assert canonical_uri("", s3=False) == canonical_uri("", s3=True) == "/"


def test_canonical_query_rules() -> None:
    assert canonical_query("b=2&a=1&a=0") == "a=0&a=1&b=2"
    assert canonical_query("uploads") == "uploads="
    assert canonical_query("k=a%20b&x=a+b") == "k=a%20b&x=a%2Bb"  # '+' is a literal plus
    assert canonical_query("k=%7e~") == "k=~~"
    assert canonical_query("") == ""


def test_uri_encode_keeps_only_unreserved() -> None:
    assert uri_encode("AZaz09-_.~") == "AZaz09-_.~"
    assert uri_encode("a b/c*!'()") == "a%20b%2Fc%2A%21%27%28%29"
    assert uri_encode("a/b", safe="/") == "a/b"


def test_caller_cannot_smuggle_its_own_signature_headers() -> None:
    signer = _s3_signer()
    now = _when(S3_EXAMPLES["timestamp"])
    clean = signer.sign("GET", "https://examplebucket.s3.amazonaws.com/k", now=now)
    stale = signer.sign(
        "GET",
        "https://examplebucket.s3.amazonaws.com/k",
        {
            "Authorization": "AWS4-HMAC-SHA256 stale",
            "X-Amz-Date": "19990101T000000Z",
            "User-Agent": "changed-by-a-proxy",
        },
        now=now,
    )
    assert stale == clean


def test_repr_never_shows_the_secret() -> None:
    signer = SigV4Signer(
        "AKIDEXAMPLE", "very-secret-key", region="eu-west-1", service="s3", session_token="tok-123"
    )
    assert "very-secret-key" not in repr(signer)
    assert "tok-123" not in repr(signer)
    assert "AKIDEXAMPLE" in repr(signer)


def test_presign_rejects_an_expiry_s3_would_refuse() -> None:
    with pytest.raises(ValueError, match="7 days"):
        _s3_signer().presign("GET", "https://examplebucket.s3.amazonaws.com/k", expires=604801)


def test_non_utc_datetimes_are_converted() -> None:
    from datetime import timedelta, timezone

    signer = _s3_signer()
    utc = signer.sign("GET", "https://b.s3.amazonaws.com/k", now=_when("20130524T000000Z"))
    local = signer.sign(
        "GET",
        "https://b.s3.amazonaws.com/k",
        now=datetime(2013, 5, 24, 2, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    assert utc == local


# --------------------------------------------------------------------------------------- #
# Cross-check with botocore on random requests
# --------------------------------------------------------------------------------------- #

KEY_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="\x7f")
HEADER_NAME = st.from_regex(r"\A[a-z][a-z0-9-]{0,15}\Z").filter(
    lambda n: (
        n not in UNSIGNED_HEADERS
        and n not in {"host", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
        and n not in {"content-md5", "date"}
    )  # botocore treats these two specially
)
HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
QUERY_TEXT = st.text(KEY_CHARS, max_size=12)
NOW = datetime(2024, 2, 29, 23, 59, 59)


@st.composite
def requests(draw: st.DrawFn, s3: bool) -> dict[str, Any]:
    bucket = draw(st.from_regex(r"\A[a-z0-9][a-z0-9-]{2,20}\Z"))
    # "." and ".." segments never reach a signer raw: the S3 connector percent-encodes them
    # (HTTP clients, botocore's included, would resolve them away).
    segment = st.text(KEY_CHARS, min_size=1, max_size=20).filter(lambda k: k not in {".", ".."})
    keys = draw(st.lists(segment, min_size=0, max_size=3))
    path = "/" + "/".join(uri_encode(k, safe="/") for k in [bucket, *keys])
    query = draw(st.dictionaries(QUERY_TEXT, QUERY_TEXT, max_size=4))
    raw_query = "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in query.items())
    headers = draw(st.dictionaries(HEADER_NAME, HEADER_VALUE, max_size=4))
    return {
        "method": draw(st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"])),
        "url": f"https://{'s3.eu-west-1' if s3 else 'example'}.amazonaws.com{path}"
        + (f"?{raw_query}" if raw_query else ""),
        "headers": headers,
        "body": draw(st.binary(max_size=64)),
        "token": draw(
            st.none()
            | st.text(
                st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
            )
        ),
    }


def _botocore_authorization(request: dict[str, Any], service: str) -> str:

    credentials = Credentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", request["token"]
    )
    signer_class = S3SigV4Auth if service == "s3" else BotoSigV4Auth
    aws_request = AWSRequest(
        method=request["method"],
        url=request["url"],
        headers=dict(request["headers"]),
        data=request["body"],
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW):
        signer_class(credentials, service, "eu-west-1").add_auth(aws_request)
    return str(aws_request.headers["Authorization"])


def _our_authorization(request: dict[str, Any], service: str) -> str:
    signer = SigV4Signer(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        region="eu-west-1",
        service=service,
        session_token=request["token"],
    )
    added = signer.sign(
        request["method"],
        request["url"],
        request["headers"],
        payload=request["body"],
        now=NOW.replace(tzinfo=UTC),
    )
    return added["authorization"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(s3=True))
def test_matches_botocore_s3_signer(request: dict[str, Any]) -> None:
    assert _our_authorization(request, "s3") == _botocore_authorization(request, "s3")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(s3=False))
def test_matches_botocore_generic_signer(request: dict[str, Any]) -> None:
    assert _our_authorization(request, "execute-api") == _botocore_authorization(
        request, "execute-api"
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(s3=True), expires=st.integers(1, 604800))
def test_matches_botocore_presigned_urls(request: dict[str, Any], expires: int) -> None:

    credentials = Credentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", request["token"]
    )
    aws_request = AWSRequest(method=request["method"], url=request["url"])
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW):
        S3SigV4QueryAuth(credentials, "s3", "eu-west-1", expires=expires).add_auth(aws_request)
    theirs = parse_qs(urlsplit(aws_request.url).query)["X-Amz-Signature"]

    signer = SigV4Signer(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        region="eu-west-1",
        service="s3",
        session_token=request["token"],
    )
    ours = signer.presign(
        request["method"], request["url"], expires=expires, now=NOW.replace(tzinfo=UTC)
    )
    assert parse_qs(urlsplit(ours).query)["X-Amz-Signature"] == theirs


def test_empty_body_hash_constant() -> None:
    assert hashlib.sha256(b"").hexdigest() == EMPTY_SHA256
