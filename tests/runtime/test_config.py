"""Settings resolution, Secret masking and scrubbing."""

from __future__ import annotations

import copy
import pickle
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.runtime.config import MASK, Config, Secret, Setting, resolve_settings, scrub
from builder.runtime.errors import ConfigError, ConnectorError
from tests.runtime._clients import TOKEN, Demo

pytestmark = pytest.mark.timeout(10)

PORT = Setting("port", int, env="DEMO_PORT", default=80)
RATIO = Setting("ratio", float, env="DEMO_RATIO", default=0.5)
VERBOSE = Setting("verbose", bool, env="DEMO_VERBOSE", default=False)
TOKEN_SETTING = Setting("token", str, env="DEMO_TOKEN", required=True, secret=True)


def resolve(given_values: dict[str, object], *settings_: Setting) -> Config:
    return resolve_settings(settings_, given_values, connector="demo")


# -- precedence ----------------------------------------------------------------------------


def test_defaults_when_nothing_given() -> None:
    config = resolve({}, PORT, RATIO, VERBOSE)
    assert dict(config) == {"port": 80, "ratio": 0.5, "verbose": False}


def test_env_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "8080")
    assert resolve({}, PORT).port == 8080


def test_kwarg_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "8080")
    assert resolve({"port": 9000}, PORT).port == 9000


def test_none_kwarg_falls_through_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "8080")
    assert resolve({"port": None}, PORT).port == 8080


def test_false_kwarg_is_not_overridden_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_VERBOSE", "true")
    assert resolve({"verbose": False}, VERBOSE).verbose is False
    assert resolve({"port": 0}, PORT).port == 0


def test_empty_env_var_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "")
    assert resolve({}, PORT).port == 80


def test_setting_without_env_ignores_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("port", "1")
    assert resolve({}, Setting("port", int, default=5)).port == 5


# -- conversion ----------------------------------------------------------------------------


def test_env_int_and_float(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "42")
    monkeypatch.setenv("DEMO_RATIO", "2.5")
    config = resolve({}, PORT, RATIO)
    assert config.port == 42 and type(config.port) is int
    assert config.ratio == 2.5 and type(config.ratio) is float


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" Yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("False", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_env_bool(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("DEMO_VERBOSE", raw)
    assert resolve({}, VERBOSE).verbose is expected


@pytest.mark.parametrize(
    ("setting", "raw", "type_name"),
    [
        (PORT, "abc", "int"),
        (PORT, "1.5", "int"),
        (RATIO, "fast", "float"),
        (VERBOSE, "maybe", "bool"),
    ],
)
def test_bad_env_value_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, setting: Setting, raw: str, type_name: str
) -> None:
    assert setting.env is not None
    monkeypatch.setenv(setting.env, raw)
    with pytest.raises(ConfigError) as info:
        resolve({}, setting)
    message = str(info.value)
    assert setting.env in message
    assert repr(raw) in message
    assert f"not a valid {type_name}" in message
    assert info.value.__cause__ is None


def test_bad_secret_env_value_is_not_revealed(monkeypatch: pytest.MonkeyPatch) -> None:
    pin = Setting("pin", int, env="DEMO_PIN", secret=True)
    monkeypatch.setenv("DEMO_PIN", "hunter2-secret")
    with pytest.raises(ConfigError) as info:
        resolve({}, pin)
    message = str(info.value)
    assert "hunter2" not in message
    assert "DEMO_PIN" in message
    assert MASK in message
    assert "hunter2" not in repr(info.value)
    assert "hunter2" not in "".join(traceback.format_exception(info.value))


def test_secret_from_env_is_converted_and_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_TOKEN", "from-env")
    config = resolve({}, TOKEN_SETTING)
    assert isinstance(config.token, Secret)
    assert config.reveal("token") == "from-env"


# -- required settings ---------------------------------------------------------------------


def test_missing_required_settings_are_all_listed_with_env_names() -> None:
    region = Setting("region", str, env="DEMO_REGION", required=True)
    version = Setting("api_version", str, required=True)
    with pytest.raises(ConfigError) as info:
        resolve({}, TOKEN_SETTING, PORT, region, version)
    assert info.value.connector == "demo"
    assert str(info.value) == (
        "demo: missing required setting: token (or set DEMO_TOKEN), "
        "region (or set DEMO_REGION), api_version"
    )


def test_required_setting_satisfied_by_default_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with_default = Setting("region", str, required=True, default="eu")
    assert resolve({}, with_default).region == "eu"
    monkeypatch.setenv("DEMO_TOKEN", "t")
    assert resolve({}, TOKEN_SETTING).reveal("token") == "t"


def test_client_without_token_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="DEMO_TOKEN"):
        Demo(token=None)


# -- Secret --------------------------------------------------------------------------------


def test_secret_is_masked_everywhere() -> None:
    secret = Secret("s3cr3t")
    assert repr(secret) == f"Secret('{MASK}')"
    assert str(secret) == MASK
    assert f"{secret}" == MASK
    assert f"{secret!s}" == MASK
    assert f"{secret!r}" == f"Secret('{MASK}')"
    assert f"{secret:>30}" == MASK
    assert format(secret, "") == MASK
    assert "{}".format(secret) == MASK  # noqa: UP032 - str.format is what is tested
    assert "%s" % secret == MASK  # noqa: UP031 - %-formatting is what is tested
    assert "%r" % (secret,) == f"Secret('{MASK}')"  # noqa: UP031
    assert "s3cr3t" not in repr([secret, {"k": secret}])
    assert secret.get() == "s3cr3t"


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1).filter(lambda v: v not in f"Secret('{MASK}')"))
def test_secret_never_shows_its_value(value: str) -> None:
    secret = Secret(value)
    shown_as = (repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret)  # noqa: UP031
    for shown in shown_as:
        assert value not in shown
    assert secret.get() == value


def test_secret_equality_and_hash() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))
    assert len({Secret("a"), Secret("a")}) == 1


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_cannot_be_pickled(protocol: int) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret("s3cr3t"), protocol=protocol)


def test_config_holding_a_secret_cannot_be_pickled_or_copied() -> None:
    config = resolve({"token": "s3cr3t"}, TOKEN_SETTING)
    with pytest.raises(TypeError):
        pickle.dumps(config)
    with pytest.raises(TypeError):
        copy.deepcopy(config.token)


# -- Config --------------------------------------------------------------------------------


def test_config_access_and_mapping_protocol() -> None:
    config = resolve({"token": "s3cr3t", "port": 1}, TOKEN_SETTING, PORT, VERBOSE)
    assert config.port == 1
    assert config["port"] == 1
    assert list(config) == ["token", "port", "verbose"]
    assert len(config) == 3
    assert "port" in config
    assert config.get("nope") is None
    with pytest.raises(AttributeError):
        _ = config.nope
    with pytest.raises(KeyError):
        _ = config["nope"]
    assert config.reveal("token") == "s3cr3t"
    assert config.reveal("port") == 1
    assert config.secret_values() == ["s3cr3t"]


def test_config_is_read_only() -> None:
    config = resolve({}, PORT)
    with pytest.raises(TypeError):
        config["port"] = 2  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.port = 2
    assert config.port == 80


def test_config_repr_masks_secrets() -> None:
    config = resolve({"token": "s3cr3t", "port": 1}, TOKEN_SETTING, PORT)
    assert repr(config) == f"Config(token=Secret('{MASK}'), port=1)"
    assert str(config) == repr(config)
    assert "s3cr3t" not in f"{config}"


def test_non_string_secret_is_wrapped_as_text() -> None:
    config = resolve({"pin": 1234}, Setting("pin", int, secret=True))
    assert isinstance(config.pin, Secret)
    assert config.reveal("pin") == "1234"
    assert "1234" not in repr(config)


def test_secret_values_skips_empty_and_unset_secrets() -> None:
    config = resolve(
        {"a": "", "b": "x"},
        Setting("a", secret=True),
        Setting("b", secret=True),
        Setting("c", secret=True),
    )
    assert config.secret_values() == ["x"]
    assert config.c is None


def test_client_repr_hides_token() -> None:
    client = Demo()
    try:
        assert TOKEN not in repr(client)
        assert MASK in repr(client)
        assert repr(client).startswith("Demo(Config(")
    finally:
        client.close()


def test_connector_error_is_base_of_config_error() -> None:
    assert issubclass(ConfigError, ConnectorError)


# -- scrub ---------------------------------------------------------------------------------


def test_scrub_replaces_every_occurrence() -> None:
    assert scrub("a s3cr3t b s3cr3t", ["s3cr3t"]) == f"a {MASK} b {MASK}"


def test_scrub_several_secrets_and_untouched_text() -> None:
    assert scrub("user=u1 key=k1", ["u1", "k1"]) == f"user={MASK} key={MASK}"
    assert scrub("nothing here", ["k1"]) == "nothing here"
    assert scrub("nothing here", []) == "nothing here"


def test_scrub_overlapping_secrets_leaves_no_fragment() -> None:
    # One secret is a prefix of another (e.g. a client id and a secret derived from it):
    # the longer one must not be left half-revealed.
    text = scrub("id=acme secret=acme-s3cr3t", ["acme", "acme-s3cr3t"])
    assert "s3cr3t" not in text
    assert "acme" not in text
