"""The LLM role and pricing: how a provider's operations map onto ``chat`` / ``stream`` /
``embed``, and what its models cost.

Everything here is data: body field names, paths into responses (``choices.0.message.content``,
``data.*.embedding``) and, for streams, paths per SSE event name. The runtime's LLM role
reads them; no provider has code of its own.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from pydantic import Field, field_validator, model_validator

from builder.spec.base import StrictModel

_PATH = re.compile(r"^(\*|-?\d+|[A-Za-z_$][\w$-]*)(\.(\*|-?\d+|[A-Za-z_$][\w$-]*))*$")


def _check_path(value: str) -> str:
    if not _PATH.fullmatch(value):
        raise ValueError(f"{value!r} is not a path like choices.0.message.content")
    if value.split(".").count("*") > 1:
        raise ValueError(f"{value!r}: a path maps over one list (`*`) at most")
    return value


def _check_paths(value: Any) -> Any:
    if isinstance(value, str):
        return _check_path(value)
    if isinstance(value, dict):
        for path in value.values():
            if isinstance(path, str):
                _check_path(path)
    return value


ResponsePath = str
EventPaths = str | dict[str, str]


class RequestMap(StrictModel):
    """Where the role's arguments go in the operation's JSON body."""

    operation: str = Field(description="The operation (its key under `operations`) to call.")
    model: str = Field("model", description="Body field for the model name.")
    fixed: dict[str, Any] = Field(
        default_factory=dict, description="Fields always sent, e.g. {stream: true}."
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Role option -> body field, e.g. {max_tokens: max_tokens}. Options not "
        "listed are sent under their own names.",
    )
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Role option -> value sent when the call gives none, e.g. {max_tokens: "
        "1024} for a provider that requires it.",
    )


class ChatRequestMap(RequestMap):
    messages: str = Field("messages", description="Body field for the message list.")
    system: str | None = Field(
        None,
        description="Body field for the system prompt; when unset it is sent as the first "
        'message, {"role": "system", "content": ...}.',
    )


class ChatMap(ChatRequestMap):
    """``chat()`` / ``generate()``: one call, one response."""

    content: ResponsePath = Field(description="Path of the answer's text.")
    finish_reason: ResponsePath | None = None
    response_model: ResponsePath | None = Field(
        "model", description="Path of the model that answered."
    )
    tokens_input: ResponsePath | None = None
    tokens_output: ResponsePath | None = None

    @field_validator("content", "finish_reason", "response_model", "tokens_input", "tokens_output")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return _check_paths(value)


class StreamMap(ChatRequestMap):
    """``stream()``: each path is one for every event, or a map of SSE event name -> path."""

    text: EventPaths = Field(description="Where each event carries a piece of the text.")
    finish_reason: EventPaths | None = None
    response_model: EventPaths | None = None
    tokens_input: EventPaths | None = None
    tokens_output: EventPaths | None = None

    @field_validator("text", "finish_reason", "response_model", "tokens_input", "tokens_output")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return _check_paths(value)


class EmbedMap(RequestMap):
    """``embed()``: texts in, one vector per text out."""

    input: str = Field("input", description="Body field for the list of texts.")
    input_type: str | None = Field(None, description="Body field for the input type, if any.")
    input_types: dict[str, str] = Field(
        default_factory=dict,
        description="Role input type (query, document, ...) -> the provider's value.",
    )
    vectors: ResponsePath = Field(description="Path of the vectors, e.g. data.*.embedding.")
    tokens_input: ResponsePath | None = None
    max_batch: int = Field(96, ge=1, description="Most texts one request may carry.")

    @field_validator("vectors", "tokens_input")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return _check_paths(value)


class LlmRole(StrictModel):
    provider: str = Field(
        pattern=r"^[a-z][a-z0-9_.-]*$",
        description="The `gen_ai.provider.name` of traces (openai, anthropic, ...).",
    )
    default_model: str | None = Field(None, description="Used when a call names no model.")
    default_embedding_model: str | None = None
    chat: ChatMap | None = None
    stream: StreamMap | None = None
    embed: EmbedMap | None = None


class ModelPrice(StrictModel):
    input: float = Field(ge=0, description="USD per 1M input tokens.")
    output: float = Field(0.0, ge=0, description="USD per 1M output tokens.")


class Pricing(StrictModel):
    """Prices per model, with when and where they were read."""

    as_of: date = Field(description="The day the prices were read (YYYY-MM-DD).")
    source: str = Field(pattern=r"^https?://\S+$", description="Where they were read.")
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    default: ModelPrice | None = Field(
        None, description="The price of every model not listed (e.g. 0 for a local server)."
    )

    @model_validator(mode="after")
    def _something_priced(self) -> Pricing:
        if not self.models and self.default is None:
            raise ValueError("pricing needs `models`, a `default`, or both")
        return self
