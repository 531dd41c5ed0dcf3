"""Comparing the LLM role (``roles.llm``: the provider, default models, and where chat,
stream and embed put their arguments and find their answers) and ``pricing``.

The operations a capability calls are compared with every other operation; here only the
mapping onto them is. Prices change what calls are reported to cost, never what is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from builder.diff.collector import ChangeLog, SpecPath
from builder.runtime.pricing import Pricing as RuntimePricing
from builder.spec.llm import LlmRole, Pricing

CAPABILITIES = ("chat", "stream", "embed")
_METHODS = {"chat": "chat()/generate()", "stream": "stream()", "embed": "embed()"}
# Fields of a capability's map by what a change of them does; `operation` is compared
# apart (following renamed operations), and any other field is judged as a request field.
_ANSWER_PATHS = frozenset({"content", "text", "vectors"})
_USAGE_PATHS = frozenset({"finish_reason", "response_model", "tokens_input", "tokens_output"})
_TUNING = frozenset({"max_batch"})
_DEFAULT_MODELS = (("default_model", "model"), ("default_embedding_model", "embedding model"))


class LlmComparer:
    def __init__(
        self,
        log: ChangeLog,
        old_role: LlmRole | None,
        new_role: LlmRole | None,
        renamed: Mapping[str, str],
    ) -> None:
        """``renamed``: old operation name -> new name; a capability that follows its
        operation's rename is not reported as calling another one (the rename is)."""
        self.log = log
        self.old, self.new = old_role, new_role
        self.renamed = renamed

    def compare(self) -> None:
        old, new, at = self.old, self.new, _ROLE
        if old is None and new is None:
            return
        if old is None or new is None:
            if new is not None:
                has = ", ".join(c for c in CAPABILITIES if getattr(new, c) is not None)
                self.log.add(
                    "llm-role-added", f"LLM role added ({new.provider}: {has or 'nothing'})", new=at
                )
            else:
                assert old is not None
                self.log.add("llm-role-removed", f"LLM role ({old.provider}) removed", old=at)
            return
        if old.provider != new.provider:
            self.log.add(
                "llm-provider-renamed",
                f"provider {old.provider!r} is now {new.provider!r}",
                old=at + ("provider",),
                new=at + ("provider",),
            )
        self.default_models(old, new)
        for capability in CAPABILITIES:
            self.capability(capability, getattr(old, capability), getattr(new, capability))

    def default_models(self, old: LlmRole, new: LlmRole) -> None:
        for key, what in _DEFAULT_MODELS:
            a, b = getattr(old, key), getattr(new, key)
            if a == b:
                continue
            at = _ROLE + (key,)
            if b is None:
                self.log.add(
                    "llm-default-model-removed",
                    f"no default {what} (was {a!r}): calls must pass model=",
                    old=at,
                )
            else:
                was = f"was {a!r}" if a is not None else "there was none"
                self.log.add(
                    "llm-default-model-changed",
                    f"default {what} is now {b!r} ({was})",
                    old=at if a is not None else None,
                    new=at,
                )

    def capability(self, capability: str, old: Any, new: Any) -> None:
        at = _ROLE + (capability,)
        method = _METHODS[capability]
        if old is None and new is None:
            return
        if old is None:
            self.log.add(
                "llm-capability-added",
                f"{capability} added: {method} calls `{new.operation}`",
                new=at,
            )
            return
        if new is None:
            self.log.add(
                "llm-capability-removed",
                f"{capability} removed: {method} now raises NotSupportedError",
                old=at,
            )
            return
        if self.renamed.get(old.operation, old.operation) != new.operation:
            self.log.add(
                "llm-operation-changed",
                f"{method} calls `{new.operation}` instead of `{old.operation}`",
                old=at + ("operation",),
                new=at + ("operation",),
            )
        a, b = _view(old), _view(new)
        shown_a, shown_b = _dump(old), _dump(new)
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) == b.get(key):
                continue
            before, after = shown_a.get(key), shown_b.get(key)
            if key in _ANSWER_PATHS:
                rule = "llm-response-path-changed"
            elif key in _USAGE_PATHS:
                rule = "llm-usage-path-changed"
            elif key in _TUNING:
                rule = "tuning-changed"
            else:
                rule = "llm-request-mapping-changed"
            self.log.add(
                rule,
                f"{key} {_show(before)} is now {_show(after)}",
                old=at + (key,),
                new=at + (key,),
            )


def compare_pricing(log: ChangeLog, old: Pricing | None, new: Pricing | None) -> None:
    """Prices per model. A dated snapshot without its own entry is priced as the listed
    name it is dated from (``gpt-4o-2024-08-06`` as ``gpt-4o``), as the runtime does: an
    entry that comes or goes is judged by the price its calls get."""
    at: SpecPath = ("pricing",)
    if old is None and new is None:
        return
    if old is None or new is None:
        table = new or old
        assert table is not None
        count = f"{len(table.models)} model{'s' if len(table.models) != 1 else ''}"
        if new is not None:
            log.add("price-added", f"pricing added: {count} priced (as of {new.as_of})", new=at)
        else:
            log.add("price-removed", f"pricing removed: {count} cost None", old=at)
        return
    for key in ("as_of", "source"):
        if getattr(old, key) != getattr(new, key):
            log.add("docs-changed", f"pricing {key} changed", old=at + (key,), new=at + (key,))
    old_prices, new_prices = _runtime(old), _runtime(new)
    for model in sorted(old.models.keys() | new.models.keys()):
        before, after = old_prices.price(model), new_prices.price(model)
        op = at + ("models", model) if model in old.models else at
        np = at + ("models", model) if model in new.models else at
        listed = model in old.models, model in new.models
        if before == after:
            if listed[0] != listed[1]:
                # An entry that only repeats what its calls were priced at anyway.
                state = "listed" if listed[1] else "no longer listed"
                log.add(
                    "docs-changed",
                    f"`{model}` is {state} in pricing, at the same price",
                    old=op,
                    new=np,
                )
            continue
        if after is None:
            log.add("price-removed", f"`{model}` is no longer priced: cost None", old=op)
        elif before is None:
            log.add("price-added", f"`{model}` is priced: {_price(after)} {_UNIT}", new=np)
        else:
            now = _price(after) + ("" if listed[1] else f" as `{_fallback(new, model)}`")
            was = _price(before) + ("" if listed[0] else f" as `{_fallback(old, model)}`")
            log.add("price-changed", f"`{model}`: {now}, was {was} {_UNIT}", old=op, new=np)


_ROLE: SpecPath = ("roles", "llm")
# Maps whose unlisted keys are sent as they are: `{top_p: top_p}` is the same as nothing.
_RENAMES = ("options", "input_types")


def _dump(mapping: Any) -> dict[str, Any]:
    """A capability's map as written (defaults filled in), but for its operation."""
    return mapping.model_dump(mode="json", exclude={"operation"})  # type: ignore[no-any-return]


def _view(mapping: Any) -> dict[str, Any]:
    """A capability's map as what it does: renames to the same name left out."""
    view = _dump(mapping)
    for key in _RENAMES:
        if isinstance(view.get(key), dict):
            view[key] = {k: v for k, v in view[key].items() if k != v}
    return view


def _runtime(pricing: Pricing) -> RuntimePricing:
    models = {name: (price.input, price.output) for name, price in pricing.models.items()}
    return RuntimePricing(pricing.as_of.isoformat(), pricing.source, models)


def _fallback(pricing: Pricing, model: str) -> str:
    """The listed name the runtime prices an unlisted ``model`` by: the one it is a dated
    snapshot of (``Pricing.price``'s rule)."""
    runtime = _runtime(pricing)
    candidates = [
        name
        for name in pricing.models
        if model.startswith(name) and runtime.price(model) == runtime.models[name]
    ]
    return max(candidates, key=len, default="?")


def _price(prices: tuple[float, float]) -> str:
    return f"input {prices[0]:g} output {prices[1]:g}"


_UNIT = "(USD per 1M tokens)"


def _show(value: Any) -> str:
    if value is None:
        return "none"
    return repr(value)
