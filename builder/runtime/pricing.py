"""Prices per model, from the spec, and the cost of a call.

Prices are USD per one million tokens, as providers publish them. A model that is not in
the table costs ``None`` (unknown), never an error and never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Pricing"]


@dataclass(frozen=True, slots=True)
class Pricing:
    """``models`` maps a model name to (input, output) USD per 1M tokens."""

    as_of: str
    source: str
    models: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    default: tuple[float, float] | None = None  # every model not listed
    # The listed name each dated name answered with falls back to (a search of the table).
    _fallbacks: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def price(self, model: str | None) -> tuple[float, float] | None:
        """The model's prices; a dated name (``gpt-4o-2024-08-06``) falls back to the
        longest listed name it starts with, then to the default price, if any."""
        if not model:
            return self.default
        found = self.models.get(model)
        if found is not None:
            return found
        best = self._fallbacks.get(model)
        if best is None:
            best = ""
            for name in self.models:
                if model.startswith(name) and len(name) > len(best) and model[len(name)] in "-:@":
                    best = name
            if len(self._fallbacks) < 1024:  # names are few; a flood of odd ones is not kept
                self._fallbacks[model] = best
        return self.models[best] if best else self.default

    def cost(
        self, model: str | None, tokens_input: int | None, tokens_output: int | None
    ) -> float | None:
        """USD for these tokens, or None when the model is not priced or no tokens are known."""
        if tokens_input is None and tokens_output is None:
            return None
        prices = self.price(model)
        if prices is None:
            return None
        per_in, per_out = prices
        return ((tokens_input or 0) * per_in + (tokens_output or 0) * per_out) / 1_000_000
