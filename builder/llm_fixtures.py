"""Responses shaped like a provider's own, made from its spec, for the generated LLM tests.

The LLM role's maps say where a provider keeps the text, the model, the token counts and
the vectors. Starting from a sample of the operation's response schema, this puts known
values at exactly those paths (building what is missing from the schema's own samples), so
a fixture is valid against the response models and its expected results are known.
Streams are framed as the provider frames them: SSE with its event names, or NDJSON.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from builder.samples import sample_value
from builder.spec.llm import LlmRole
from builder.spec.models import Schema, Spec, TypeFields

TOKENS_INPUT = 11
TOKENS_OUTPUT = 7
CHUNKS = ("Hel", "lo there")
CONTENT = "".join(CHUNKS)
VECTORS = [[0.25, -0.5, 1.0], [0.75, 0.0, -1.0]]


def llm_cases(spec: Spec, base_url: str) -> dict[str, Any] | None:
    """The fixtures and expected results of every capability of the spec's LLM role."""
    llm = spec.roles.llm
    if llm is None:
        return None
    builder = _Fixtures(spec, llm)
    cases: dict[str, Any] = {"base_url": base_url, "provider": llm.provider}
    if llm.chat is not None:
        cases["chat"] = builder.chat()
    if llm.stream is not None:
        cases["stream"] = builder.stream()
    if llm.embed is not None:
        cases["embed"] = builder.embed()
    return cases


class _Fixtures:
    def __init__(self, spec: Spec, llm: LlmRole) -> None:
        self.spec = spec
        self.llm = llm
        self.model = llm.default_model or "test-model"
        self._fill = self._sample  # how a missing part is built: a full sample, or minimal

    # -- capabilities ---------------------------------------------------------------------

    def chat(self) -> dict[str, Any]:
        chat = self.llm.chat
        assert chat is not None
        op = self.spec.operations[chat.operation]
        schema = self._response_schema(op.response.schema_ if op.response else None)
        body = self._sample(schema)
        finish = None
        body = self._put(body, schema, chat.content, CONTENT)
        if chat.response_model:
            body = self._put(body, schema, chat.response_model, self.model)
        if chat.tokens_input:
            body = self._put(body, schema, chat.tokens_input, TOKENS_INPUT)
        if chat.tokens_output:
            body = self._put(body, schema, chat.tokens_output, TOKENS_OUTPUT)
        if chat.finish_reason:
            finish = self._value_for(schema, chat.finish_reason, "stop")
            body = self._put(body, schema, chat.finish_reason, finish)
        return {
            "method": op.method,
            "path": op.path,
            "response": body,
            "expect": self._expect(
                content=CONTENT,
                tokens_input=TOKENS_INPUT if chat.tokens_input else None,
                tokens_output=TOKENS_OUTPUT if chat.tokens_output else None,
                finish_reason=finish,
            ),
        }

    def stream(self) -> dict[str, Any]:
        stream = self.llm.stream
        assert stream is not None
        op = self.spec.operations[stream.operation]
        assert op.streaming is not None
        item = self._resolve(op.streaming.item)
        framing = op.streaming.format
        self._fill = self._minimal
        # (event name or None, payload) in order: the text first, then what ends the stream.
        events: list[tuple[str | None, Any]] = []
        text_paths = _by_event(stream.text)
        for event, path in text_paths:
            for chunk in CHUNKS:
                events.append((event, self._put(self._event_base(item, event), item, path, chunk)))
        ending: dict[str | None, Any] = {}
        expected: dict[str, Any] = {}
        for field, value in (
            ("response_model", self.model),
            ("tokens_input", TOKENS_INPUT),
            ("tokens_output", TOKENS_OUTPUT),
            ("finish_reason", "stop"),
        ):
            paths = getattr(stream, field)
            if paths is None:
                continue
            for event, path in _by_event(paths):
                if field == "finish_reason":
                    value = self._value_for(item, path, "stop")
                    expected["finish_reason"] = value
                base = ending.get(event)
                if base is None:
                    # An event of its own; with one path for every event (OpenAI, Ollama)
                    # the last chunk carries what ends the stream.
                    base = self._event_base(item, event)
                ending[event] = self._put(base, item, path, value)
        if not any(event for event, _ in text_paths) and None in ending:
            # Text in every event: the model is in every chunk, usage in the last one.
            last = ending.pop(None)
            for index, (event, payload) in enumerate(events):
                model_path = stream.response_model
                if isinstance(model_path, str):
                    events[index] = (event, self._put(payload, item, model_path, self.model))
            events.append((None, last))
        events = _provider_order(events, ending)
        lines = []
        for event, payload in events:
            data = json.dumps(payload, separators=(",", ":"))
            if framing == "sse":
                lines.append((f"event: {event}\n" if event else "") + f"data: {data}\n\n")
            else:
                lines.append(data + "\n")
        if framing == "sse" and op.streaming.done is not None:
            lines.append(f"data: {op.streaming.done}\n\n")
        return {
            "method": op.method,
            "path": op.path,
            "content_type": "text/event-stream" if framing == "sse" else "application/x-ndjson",
            "body": "".join(lines),
            "chunks": list(CHUNKS),
            "expect": self._expect(
                content=CONTENT,
                tokens_input=TOKENS_INPUT if stream.tokens_input else None,
                tokens_output=TOKENS_OUTPUT if stream.tokens_output else None,
                finish_reason=expected.get("finish_reason"),
            ),
        }

    def embed(self) -> dict[str, Any]:
        embed = self.llm.embed
        assert embed is not None
        op = self.spec.operations[embed.operation]
        schema = self._response_schema(op.response.schema_ if op.response else None)
        body = self._sample(schema)
        body = self._put(body, schema, embed.vectors, VECTORS)
        if embed.tokens_input:
            body = self._put(body, schema, embed.tokens_input, TOKENS_INPUT)
        model = self.llm.default_embedding_model or self.model
        return {
            "method": op.method,
            "path": op.path,
            "response": body,
            "texts": ["first text", "second text"],
            "vectors": VECTORS,
            "max_batch": embed.max_batch,
            "expect": {
                "dimensions": len(VECTORS[0]),
                "tokens_input": TOKENS_INPUT if embed.tokens_input else None,
                "cost": self._cost(model, TOKENS_INPUT if embed.tokens_input else None, None),
            },
        }

    # -- helpers --------------------------------------------------------------------------

    def _expect(self, **values: Any) -> dict[str, Any]:
        values["model"] = self.model
        values["cost"] = self._cost(self.model, values["tokens_input"], values["tokens_output"])
        return values

    def _cost(self, model: str, tokens_in: int | None, tokens_out: int | None) -> float | None:
        pricing = self.spec.pricing
        if pricing is None or (tokens_in is None and tokens_out is None):
            return None
        price = pricing.models.get(model)
        if price is None:
            return None
        return ((tokens_in or 0) * price.input + (tokens_out or 0) * price.output) / 1_000_000

    def _resolve(self, schema: TypeFields | None) -> TypeFields | None:
        seen = set()
        while schema is not None and schema.ref is not None and schema.ref not in seen:
            seen.add(schema.ref)
            schema = self.spec.schemas.get(schema.ref)
        return schema

    def _response_schema(self, schema: TypeFields | None) -> TypeFields | None:
        return self._resolve(schema)

    def _sample(self, schema: TypeFields | None) -> Any:
        if schema is None:
            return {}
        value = sample_value(schema, self.spec.schemas)
        return value if value is not None else {}

    def _minimal(self, schema: TypeFields | None, depth: int = 0) -> Any:
        """The smallest valid value: objects with their required fields only, nullable
        values None. A stream event built from it carries nothing but what is put in it."""
        schema = self._resolve(schema)
        if schema is None or depth > 8:
            return {}
        if schema.nullable:
            return None
        if isinstance(schema, Schema) and schema.properties:
            return {
                name: self._minimal(prop, depth + 1)
                for name, prop in schema.properties.items()
                if name in schema.required
            }
        if schema.type == "array":
            return []
        return self._sample(schema)

    def _event_base(self, item: TypeFields | None, event: str | None) -> Any:
        """A sample event: the variant of a union whose `type` is the event name, if any."""
        schema = item
        variants = (item.one_of or item.any_of) if item is not None else None
        if variants and event:
            for variant in variants:
                resolved = self._resolve(variant)
                type_schema = self._child(resolved, "type")
                if type_schema is not None and type_schema.enum == [event]:
                    schema = resolved
                    break
        base = self._minimal(schema)
        if event and isinstance(base, dict) and "type" in base:
            base["type"] = event
        return copy.deepcopy(base)

    def _child(self, schema: TypeFields | None, key: str | int) -> TypeFields | None:
        schema = self._resolve(schema)
        if schema is None:
            return None
        if isinstance(key, int):
            return self._resolve(schema.items)
        if isinstance(schema, Schema) and schema.properties and key in schema.properties:
            return self._resolve(schema.properties[key])
        for variant in schema.one_of or schema.any_of or []:
            found = self._child(variant, key)
            if found is not None:
                return found
        return None

    def _value_for(self, schema: TypeFields | None, path: str, fallback: Any) -> Any:
        """``fallback``, or the first enum value when the schema allows only some values."""
        target = schema
        for key in _keys(path):
            target = self._child(target, key)
        if target is not None and target.enum:
            return target.enum[0]
        return fallback

    def _put(self, tree: Any, schema: TypeFields | None, path: str, value: Any) -> Any:
        """``tree`` with ``value`` at ``path``; missing parts are built from the schema's
        samples (so a nested object keeps its other required fields)."""
        keys = _keys(path)
        if not keys:
            return value
        key, rest = keys[0], ".".join(str(k) for k in keys[1:])
        child_schema = self._child(schema, key if key != "*" else 0)
        if key == "*":
            values = value if isinstance(value, list) else [value]
            template = tree[0] if isinstance(tree, list) and tree else self._fill(child_schema)
            return [
                self._put(copy.deepcopy(template), child_schema, rest, v) if rest else v
                for v in values
            ]
        if isinstance(key, int):
            items = list(tree) if isinstance(tree, list) else []
            while len(items) <= key:
                items.append(self._fill(child_schema))
            items[key] = self._put(items[key], child_schema, rest, value) if rest else value
            return items
        node = dict(tree) if isinstance(tree, dict) else {}
        current = node.get(key)
        if current is None and rest:
            current = self._fill(child_schema)
        node[key] = self._put(current, child_schema, rest, value) if rest else value
        return node


def _keys(path: str) -> list[str | int]:
    return [int(p) if p.lstrip("-").isdigit() else p for p in path.split(".") if p]


def _by_event(paths: str | dict[str, str]) -> list[tuple[str | None, str]]:
    if isinstance(paths, str):
        return [(None, paths)]
    return list(paths.items())


def _provider_order(
    events: list[tuple[str | None, Any]], ending: dict[str | None, Any]
) -> list[tuple[str | None, Any]]:
    """Named events that carry the model or input tokens come first (a start event, as
    Anthropic's message_start), then the text, then the rest (usage and stop at the end)."""
    if not ending:
        return events
    start = {e: p for e, p in ending.items() if e and "start" in e}
    end = [(e, p) for e, p in ending.items() if e not in start]
    return list(start.items()) + events + end
