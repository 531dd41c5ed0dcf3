"""Prices per model, from the spec, and the cost of a call.

Prices are USD per one million tokens, as providers publish them. A model that is not in
the table costs ``None`` (unknown), never an error and never a guess.

The one fallback is for a dated snapshot of a listed model: a name that is a listed name
followed by a date stamp (``_SNAPSHOT``) is priced as that listed name. The stamps are the
ones providers write: ``-2024-08-06`` (OpenAI), ``-20241022`` (Anthropic), ``@20241022``
(Vertex AI), and four digits, ``-0613`` (OpenAI's month and day) or ``-2411`` (Mistral's
year and month). Any other suffix names another model (``o3-mini``, ``o3-pro``,
``gpt-4o-realtime-preview``, ``-latest`` aliases, Ollama's ``:8b`` tags), whose price is
its own: unless listed, it costs the ``default`` price if there is one, else ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Pricing"]

# The date stamp that ends a dated snapshot's name, with the separator before it.
_SNAPSHOT = re.compile(r"[-@](?:20\d\d-[01]\d-[0-3]\d|20\d\d[01]\d[0-3]\d|\d{4})\Z")
_MEMO_SIZE = 1024  # names are few; a flood of odd ones is not kept


@dataclass(frozen=True, slots=True)
class Pricing:
    """``models`` maps a model name to (input, output) USD per 1M tokens."""

    as_of: str
    source: str
    models: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    default: tuple[float, float] | None = None  # every model not listed
    # The listed name each unlisted name falls back to ("" for none), found once.
    _fallbacks: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def price(self, model: str | None) -> tuple[float, float] | None:
        """The model's prices; a dated snapshot's name (``gpt-4o-2024-08-06``) falls back to
        the listed name it is dated from (``gpt-4o``); anything else unlisted to the default
        price, if any, else None."""
        if not model:
            return self.default
        found = self.models.get(model)
        if found is not None:
            return found
        base = self._fallbacks.get(model)
        if base is None:
            stamp = _SNAPSHOT.search(model)
            base = model[: stamp.start()] if stamp else ""
            if base not in self.models:
                base = ""
            if len(self._fallbacks) < _MEMO_SIZE:
                self._fallbacks[model] = base
        return self.models[base] if base else self.default

    def cost(
        self, model: str | None, tokens_input: int | None, tokens_output: int | None
    ) -> float | None:
        """USD for these tokens, or None when the model is not priced, no tokens are known
        or a count is negative."""
        if tokens_input is None and tokens_output is None:
            return None
        if (tokens_input or 0) < 0 or (tokens_output or 0) < 0:
            return None  # a count no service gives: no cost rather than a negative one
        prices = self.price(model)
        if prices is None:
            return None
        per_in, per_out = prices
        return ((tokens_input or 0) * per_in + (tokens_output or 0) * per_out) / 1_000_000
