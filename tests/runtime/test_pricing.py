"""``Pricing.price``: a listed name has its price; only a dated snapshot of a listed name
falls back to it; any other unlisted name has the default price, if any, else None."""

from __future__ import annotations

import importlib

import pytest

from builder.runtime.pricing import Pricing

TABLE = Pricing(
    as_of="2026-11-01",
    source="https://example.com/prices",
    models={
        "gpt-4o": (2.5, 10.0),
        "gpt-4o-mini": (0.15, 0.6),
        "gpt-4": (30.0, 60.0),
        "claude-3-5-haiku": (0.8, 4.0),
        "mistral-large": (2.0, 6.0),
    },
)
LLM_CONNECTORS = ["anthropic", "cohere", "mistral", "ollama", "openai", "openai_compatible"]


def spec_pricing(connector: str) -> Pricing:
    """The table generated from ``specs/<connector>.yaml``."""
    pricing = importlib.import_module(f"connectors.{connector}.client").PRICING
    assert isinstance(pricing, Pricing)
    return pricing


@pytest.mark.parametrize(
    ("model", "listed"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),  # OpenAI: -YYYY-MM-DD
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longer listed name, not gpt-4o
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),  # Anthropic: -YYYYMMDD
        ("claude-3-5-haiku@20241022", "claude-3-5-haiku"),  # Vertex AI: @YYYYMMDD
        ("gpt-4-0613", "gpt-4"),  # OpenAI's older -MMDD
        ("gpt-4-1106", "gpt-4"),
        ("mistral-large-2411", "mistral-large"),  # Mistral: -YYMM
    ],
)
def test_each_snapshot_stamp_falls_back_to_its_listed_name(model: str, listed: str) -> None:
    for _ in range(2):  # the second time from the memo
        assert TABLE.price(model) == TABLE.models[listed]
    assert TABLE._fallbacks[model] == listed
    per_in, per_out = TABLE.models[listed]
    assert TABLE.cost(model, 1_000_000, 1_000_000) == pytest.approx(per_in + per_out)


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4omni",  # starts with a listed name, without a separator
        "gpt-4o2024-08-06",
        "gpt-4o-mini-tts",
        "gpt-4o-latest",  # an alias that moves, not a date
        "gpt-4o-audio-preview",
        "gpt-4o-realtime-preview-2024-12-17",  # a dated snapshot of an unlisted model
        "gpt-4o:2024-08-06",  # ':' is an Ollama tag, not a snapshot
        "gpt-4o-2024-08-06-preview",
        "gpt-4o-2024-8-6",
        "gpt-4o-123",
        "gpt-4o-12345",
        "gpt-4o-v2",
        "claude-3-5-haiku@latest",
        "mistral-large-latest",
    ],
)
def test_a_name_that_only_starts_with_a_listed_name_costs_none(model: str) -> None:
    for _ in range(2):
        assert TABLE.price(model) is None
    assert TABLE.cost(model, 10, 10) is None
    default = Pricing("2026-11-01", "test", dict(TABLE.models), default=(0.0, 0.0))
    assert default.price(model) == (0.0, 0.0)  # the default, not the base model's price


@pytest.mark.parametrize(
    "model", ["o3-deep-research", "o4-mini-deep-research", "gpt-4o-realtime-preview"]
)
def test_other_openai_models_named_like_a_listed_one_cost_none(model: str) -> None:
    """Each is its own model at its own price, not o3, o4-mini or gpt-4o, whose names they
    start with; the openai spec does not list them."""
    pricing = spec_pricing("openai")
    assert pricing.default is None and model not in pricing.models
    assert pricing.price(model) is None
    assert pricing.cost(model, 1_000_000, 1_000_000) is None


def test_openai_dated_snapshots_are_priced_as_their_models() -> None:
    pricing = spec_pricing("openai")
    for model, listed in [
        ("o3-2025-04-16", "o3"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
    ]:
        assert pricing.price(model) == pricing.models[listed], model
    assert pricing.price("o3-mini-2025-01-31") == (1.10, 4.40)  # o3-mini's, not o3's
    assert pricing.price("o3-pro-2025-06-10") == (20.0, 80.0)
    assert pricing.price("gpt-4o-2024-05-13") == (5.0, 15.0)  # listed: not gpt-4o's price
    assert pricing.price("gpt-5-chat-latest") == (1.25, 10.0)
    assert pricing.price("o4-mini-deep-research-2025-06-26") is None  # of an unlisted model


def test_anthropic_aliases_and_dated_ids_are_priced() -> None:
    pricing = spec_pricing("anthropic")
    for model, price in [
        ("claude-sonnet-4-5-20250929", (3.0, 15.0)),
        ("claude-sonnet-4-5@20250929", (3.0, 15.0)),
        ("claude-haiku-4-5-20251001", (1.0, 5.0)),
        ("claude-opus-4-1-20250805", (15.0, 75.0)),
        ("claude-3-7-sonnet-latest", (3.0, 15.0)),  # 3.x aliases end in -latest: listed
        ("claude-3-7-sonnet-20250219", (3.0, 15.0)),
        ("claude-3-5-haiku-latest", (0.8, 4.0)),
        ("claude-3-5-haiku-20241022", (0.8, 4.0)),
        ("claude-3-haiku-20240307", (0.25, 1.25)),
    ]:
        assert pricing.price(model) == price, model
    assert pricing.price("claude-opus-4-5") is None  # not a dated Opus 4


def test_together_free_endpoint_is_its_own_model() -> None:
    pricing = spec_pricing("openai_compatible")
    paid = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    assert pricing.price(paid) == (0.88, 0.88)
    assert pricing.price(f"{paid}-Free") == (0.0, 0.0)
    assert pricing.price(f"{paid}-Lite") is None


@pytest.mark.parametrize("connector", LLM_CONNECTORS)
def test_every_listed_name_dated_is_priced_as_itself(connector: str) -> None:
    pricing = spec_pricing(connector)
    assert pricing.models or pricing.default is not None
    for name, price in pricing.models.items():
        for dated in (f"{name}-2025-01-02", f"{name}-20250102", f"{name}@20250102"):
            if dated not in pricing.models:
                assert pricing.price(dated) == price, dated


def test_the_memo_of_fallbacks_stays_bounded() -> None:
    pricing = Pricing("2026-11-01", "test", {"gpt-4o": (2.5, 10.0)})
    for i in range(5000):  # a flood of unknown names is not all kept
        assert pricing.price(f"other-{i}") is None
    assert len(pricing._fallbacks) == 1024
    # Once full, answers are still right, found again each time.
    for _ in range(2):
        assert pricing.price("gpt-4o-2024-08-06") == (2.5, 10.0)
        assert pricing.price("gpt-4o-mini") is None
    assert "gpt-4o-2024-08-06" not in pricing._fallbacks
    assert pricing == Pricing("2026-11-01", "test", {"gpt-4o": (2.5, 10.0)})  # memo not compared


def test_a_negative_count_has_no_cost() -> None:
    pricing = Pricing("2026-11-01", "test", {"m": (1.0, 2.0)})
    assert pricing.cost("m", 1_000_000, 0) == pytest.approx(1.0)
    assert pricing.cost("m", -5, 10) is None
    assert pricing.cost("m", 10, -1) is None
    assert pricing.cost("m", None, -1) is None
