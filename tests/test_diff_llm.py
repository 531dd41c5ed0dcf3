"""Ruleset 2 on the LLM role (``roles.llm``) and ``pricing``.

Each case pairs ``tests/fixtures/diff/llm/chatbot.yaml`` with a copy changed in one way
(``reverse=True``: the changed copy is the old side) and asserts the exact findings at both
levels. Ruleset 1 predates both features: it refuses to judge a change to them.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from builder.cli import main
from builder.diagnostics import InputError
from builder.diff.api import diff_connectors
from builder.diff.rules import RULESETS
from builder.spec.loader import load_spec
from builder.spec.yamlio import load_yaml
from tests.test_diff_rules import DOC, NB, B, Finding, Mutation, _all, _drop, _set, both, py, wire

pytestmark = pytest.mark.timeout(60)

CHATBOT = Path(__file__).parent / "fixtures" / "diff" / "llm" / "chatbot.yaml"
ROLE = "roles.llm"

LLM_RULES = {
    "llm-role-removed", "llm-role-added", "llm-capability-removed", "llm-capability-added",
    "llm-operation-changed", "llm-request-mapping-changed", "llm-response-path-changed",
    "llm-usage-path-changed", "llm-provider-renamed", "llm-default-model-changed",
    "llm-default-model-removed", "price-changed", "price-added", "price-removed",
}  # fmt: skip


@dataclasses.dataclass
class Case:
    rule: str
    mutate: Mutation
    expected: list[Finding]
    reverse: bool = False


def case(
    rule: str, mutate: Mutation, *expected: list[Finding], name: str = "", reverse: bool = False
) -> Any:
    flat = [finding for group in expected for finding in group]
    return pytest.param(Case(rule, mutate, flat, reverse), id=name or rule)


def _rename_operation(old: str, new: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        spec["operations"][new] = spec["operations"].pop(old)
        for capability in spec["roles"]["llm"].values():
            if isinstance(capability, dict) and capability.get("operation") == old:
                capability["operation"] = new

    return mutate


CASES = [
    # -- the role and its capabilities -----------------------------------------------------
    case("llm-role-removed", _drop(ROLE), py("llm-role-removed", B)),
    case("llm-role-added", _drop(ROLE), py("llm-role-added", NB), reverse=True),
    case(
        "llm-capability-removed",
        _drop(f"{ROLE}.embed"),
        py("llm-capability-removed", B),
    ),
    case(
        "llm-capability-added",
        _drop(f"{ROLE}.stream"),
        py("llm-capability-added", NB),
        reverse=True,
    ),
    case(
        "llm-provider-renamed",
        _set(f"{ROLE}.provider", "chatbot-ai"),
        py("llm-provider-renamed", B),
    ),
    case(
        "llm-default-model-changed",
        _set(f"{ROLE}.default_model", "chat-large"),
        both("llm-default-model-changed", NB, NB),
    ),
    case(
        "llm-default-model-changed",
        _drop(f"{ROLE}.default_model"),
        both("llm-default-model-changed", NB, NB),
        name="default-model-set",
        reverse=True,
    ),
    case(
        "llm-default-model-removed",
        _drop(f"{ROLE}.default_embedding_model"),
        py("llm-default-model-removed", B),
    ),
    # -- where a capability sends and reads ------------------------------------------------
    case(
        "llm-operation-changed",
        _all(
            _set(
                "operations.create_chat_v2",
                {
                    "method": "POST",
                    "path": "/v2/chat",
                    "body": {"schema": "ChatRequest"},
                    "response": "any",
                },
            ),
            _set(f"{ROLE}.chat.operation", "create_chat_v2"),
        ),
        wire("llm-operation-changed", B),
        both("operation-added", NB, NB),
    ),
    case(
        "operation-renamed",
        _rename_operation("create_chat", "create_completion"),
        both("operation-renamed", NB, B),  # the role follows it: nothing more to report
        name="llm-operation-renamed",
    ),
    case(
        "llm-request-mapping-changed",
        _set(f"{ROLE}.chat.options", {"max_tokens": "max_completion_tokens"}),
        wire("llm-request-mapping-changed", B),
    ),
    case(
        "llm-request-mapping-changed",
        _set(f"{ROLE}.stream.fixed", {"stream_options": {"include_usage": True}}),
        wire("llm-request-mapping-changed", B),
        name="llm-fixed-field-added",
    ),
    case(
        "llm-request-mapping-changed",
        _set(f"{ROLE}.embed.input", "texts"),
        wire("llm-request-mapping-changed", B),
        name="llm-input-field-renamed",
    ),
    case(
        "llm-response-path-changed",
        _set(f"{ROLE}.chat.content", "output.0.text"),
        wire("llm-response-path-changed", B),
    ),
    case(
        "llm-response-path-changed",
        _set(f"{ROLE}.stream.text", {"content_block_delta": "delta.text"}),
        wire("llm-response-path-changed", B),
        name="llm-stream-text-by-event",
    ),
    case(
        "llm-usage-path-changed",
        _set(f"{ROLE}.chat.tokens_input", "usage.input_tokens"),
        both("llm-usage-path-changed", NB, NB),
    ),
    case(
        "llm-usage-path-changed",
        _set(f"{ROLE}.stream.tokens_output", "usage.completion_tokens"),
        both("llm-usage-path-changed", NB, NB),
        name="llm-usage-path-set",
    ),
    case(
        "tuning-changed",
        _set(f"{ROLE}.embed.max_batch", 50),
        both("tuning-changed", NB, NB),
        name="llm-max-batch",
    ),
    # -- pricing ---------------------------------------------------------------------------
    case("price-changed", _set("pricing.models.chat-large.input", 4), py("price-changed", NB)),
    case(
        "price-changed",
        # A dated snapshot listed at its own price, then not: priced as `chat-small`.
        _set("pricing.models.chat-small-2025-01-01", {"input": 2, "output": 6}),
        py("price-changed", NB),
        name="price-falls-back",
        reverse=True,
    ),
    case(
        "price-removed",
        _drop("pricing.models.chat-small"),  # not a dated `chat`: cost None, not `chat`'s
        py("price-removed", NB),
        name="price-no-fallback-to-a-shorter-name",
    ),
    case(
        "price-added",
        _set("pricing.models.vision", {"input": 2, "output": 6}),
        py("price-added", NB),
    ),
    case(
        "price-added", _drop("pricing"), py("price-added", NB), name="pricing-added", reverse=True
    ),
    case("price-removed", _drop("pricing.models.embed-small"), py("price-removed", NB)),
    case("price-removed", _drop("pricing"), py("price-removed", NB), name="pricing-removed"),
    case(
        "docs-changed",
        _set("pricing.as_of", "2025-06-01"),
        both("docs-changed", DOC, DOC),
        name="pricing-as-of",
    ),
    case(
        "docs-changed",
        _set("pricing.source", "https://chatbot.example/prices"),
        both("docs-changed", DOC, DOC),
        name="pricing-source",
    ),
    case(
        "docs-changed",
        _set("pricing.models.chat-small-2025", {"input": 0.5, "output": 1.5}),
        both("docs-changed", DOC, DOC),  # it was priced so already, as `chat-small`
        name="pricing-entry-that-changes-no-cost",
    ),
]

EQUIVALENT = [
    pytest.param(_set(f"{ROLE}.chat.model", "model"), id="default-model-field-spelled-out"),
    pytest.param(_set("pricing.models.embed-small.output", 0), id="price-default-spelled-out"),
    pytest.param(
        lambda s: s["pricing"].__setitem__(
            "models", dict(reversed(s["pricing"]["models"].items()))
        ),
        id="pricing-order",
    ),
    pytest.param(
        _set(f"{ROLE}.chat.options", {"max_tokens": "max_tokens", "top_p": "top_p"}),
        id="option-under-its-own-name",
    ),
    pytest.param(_set(f"{ROLE}.embed.input_types", {"query": "query"}), id="input-type-as-is"),
]


def data_of(path: Path) -> dict[str, Any]:
    return load_yaml(path.read_text("utf-8"), str(path)).data  # type: ignore[no-any-return]


def changed(mutate: Mutation, tmp_path: Path) -> Path:
    """A changed copy of the base, written as YAML."""
    spec = copy.deepcopy(data_of(CHATBOT))
    mutate(spec)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def findings(old: Path, new: Path) -> list[Finding]:
    report = diff_connectors(load_spec(old), load_spec(new))
    return sorted(
        (change.rule.name, level.value, severity.value)
        for change in report.changes
        for level, severity in change.levels
    )


def test_the_base_is_valid_and_equal_to_itself() -> None:
    assert findings(CHATBOT, CHATBOT) == []


@pytest.mark.parametrize("example", CASES)
def test_rule(example: Case, tmp_path: Path) -> None:
    other = changed(example.mutate, tmp_path)
    old, new = (other, CHATBOT) if example.reverse else (CHATBOT, other)
    assert findings(old, new) == sorted(example.expected)


@pytest.mark.parametrize("mutate", EQUIVALENT)
def test_equivalent_spellings_change_nothing(mutate: Mutation, tmp_path: Path) -> None:
    other = changed(mutate, tmp_path)
    assert other.read_text("utf-8") != yaml.safe_dump(data_of(CHATBOT), sort_keys=False)
    assert findings(CHATBOT, other) == []


def test_every_llm_rule_has_a_case() -> None:
    covered = {p.values[0].rule for p in CASES} | {
        f[0] for p in CASES for f in p.values[0].expected
    }
    assert sorted(LLM_RULES - covered) == []
    assert LLM_RULES <= set(RULESETS[2].rules)


def test_messages_say_what_changed(tmp_path: Path) -> None:
    new = changed(
        _all(
            _set(f"{ROLE}.chat.content", "output.0.text"),
            _drop("pricing.models.chat-small"),
            _set("pricing.models.chat-20250101", {"input": 2, "output": 6}),
            _set("pricing.models.chat-large.output", 12),
            _drop(f"{ROLE}.default_embedding_model"),
        ),
        tmp_path,
    )
    report = diff_connectors(load_spec(CHATBOT), load_spec(new))
    messages = {(c.rule.name, c.path): c.message for c in report.changes}
    assert messages == {
        ("llm-response-path-changed", "roles.llm.chat.content"): (
            "content 'choices.0.message.content' is now 'output.0.text'"
        ),
        ("price-removed", "pricing.models.chat-small"): (
            "`chat-small` is no longer priced: cost None"
        ),
        ("price-changed", "pricing.models.chat-20250101"): (
            "`chat-20250101`: input 2 output 6, was input 1 output 3 as `chat` (USD per 1M tokens)"
        ),
        ("price-changed", "pricing.models.chat-large"): (
            "`chat-large`: input 5 output 12, was input 5 output 15 (USD per 1M tokens)"
        ),
        ("llm-default-model-removed", "roles.llm.default_embedding_model"): (
            "no default embedding model (was 'embed-small'): calls must pass model="
        ),
    }
    removed = next(c for c in report.changes if c.rule.name == "llm-default-model-removed")
    assert (removed.old_line, removed.new_line) == (41, None)
    assert report.connectors[0].suggested_version == "3.0.0"


# -- ruleset 1 predates the LLM role and pricing --------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "feature"),
    [
        (_set(f"{ROLE}.chat.content", "output.0.text"), "the LLM role (`roles.llm`)"),
        (_set("pricing.models.chat-large.input", 4), "`pricing`"),
    ],
)
def test_ruleset_1_refuses_to_judge_llm_or_pricing_changes(
    mutate: Mutation, feature: str, tmp_path: Path
) -> None:
    new = changed(mutate, tmp_path)
    with pytest.raises(InputError) as raised:
        diff_connectors(load_spec(CHATBOT), load_spec(new), ruleset=1)
    (problem,) = raised.value.diagnostics
    assert f"ruleset 1 cannot judge changes to {feature}" in problem.message
    result = CliRunner().invoke(main, ["diff", str(CHATBOT), str(new), "--ruleset", "1"])
    assert result.exit_code == 2
    assert f"{new}:" in result.output and "--ruleset 2" in result.output


def test_ruleset_1_judges_the_rest_of_a_spec_with_an_unchanged_role(tmp_path: Path) -> None:
    """An http spec whose role and prices did not change is one ruleset 1 understands."""
    new = changed(_set("operations.create_chat.timeout", 5), tmp_path)
    report = diff_connectors(load_spec(CHATBOT), load_spec(new), ruleset=1)
    assert [(c.rule.id, c.levels[0][1].value) for c in report.changes] == [
        ("CB1201-timeout-changed", NB)
    ]
