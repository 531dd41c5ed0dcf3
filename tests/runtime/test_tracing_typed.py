"""Typed usage-map readers: the reader written for one model class reads what the reader
for any value reads, falls back to it for anything else, and never keeps text twice."""

from __future__ import annotations

import enum
import itertools
import json
from functools import partial
from typing import Annotated, Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    PydanticUserError,
    model_validator,
)

from builder.runtime import tracing
from builder.runtime.operation import Decoder
from builder.runtime.tracing import TracedCall, UsageMap

NAMES = ["text", "model", "tokens_input", "tokens_output", "finish_reason"]


class Reason(enum.Enum):
    STOP = "stop"


class Leaf(BaseModel):
    text: str | None = None
    n: int | float | None = None
    reason: str | Reason | None = None


class SubLeaf(Leaf):
    pass


class Other(BaseModel):
    text: str | None = None


class Node(BaseModel):
    name: str | None = None
    leaf: Leaf | None = None
    leaves: list[Leaf] = []
    numbers: list[int] = []
    anything: Any = None
    either: Leaf | Other | None = None
    type_: str | None = Field(None, alias="type")

    @property
    def computed(self) -> str:
        return "a property"


class Root(BaseModel):
    node: Node | None = None
    nodes: list[Node] = []
    model: str | None = None


class SubRoot(Root):
    pass


# Paths the annotations type (the reader is written), and ones they do not.
TYPED_PATHS = [
    "model",
    "node.name",
    "node.leaf.text",
    "node.leaf.n",
    "node.leaf.reason",
    "node.leaf",
    "node.leaves.0.text",
    "node.leaves.-1.reason",
    "node.leaves.1.n",
    "node.leaves.-2.text",
    "node.numbers.0",
    "node.numbers.2",
    "nodes.0.leaf.n",
    "nodes.1.leaves.0.text",
    "node.anything",
]
UNTYPED_PATHS = [
    "node.anything.text",  # below a field of any type
    "node.either.text",  # below a union of two models
    "node.type",  # a field under its alias
    "node.computed",  # a property, not a field
    "node.extra",  # no such field
    "node.leaves.*.text",  # a star
    "node.leaf.0",  # an index into a model
    "nodes.text",  # a key into a list
]


def _constructed(cls: type[BaseModel], **fields: Any) -> Any:
    return cls.model_construct(**fields)


def _values() -> list[Any]:
    leaf = Leaf(text="hi", n=3, reason="stop")
    return [
        Root(model="m", node=Node(name="n", leaf=leaf, leaves=[leaf, Leaf(n=2.9)], numbers=[1])),
        Root(node=Node(leaf=Leaf(reason=Reason.STOP), leaves=[], numbers=[4, 5, 6])),
        Root(node=None, nodes=[Node(), Node(leaves=[Leaf(text="")])]),
        Root(nodes=[Node(leaf=Leaf(n=True)), Node(leaves=[Leaf(text="second")])]),
        Root(node=Node(leaf=SubLeaf(text="sub", n=1))),  # a subclass: read by the generic one
        SubRoot(model="sub", node=Node(name="x")),
        Root.model_construct(model="built"),  # no node attribute at all
        # Values not of their declared class (as model_construct keeps them).
        _constructed(Root, node={"leaf": {"text": "a dict"}}),
        Root.model_construct(node=_constructed(Node, leaves=({"text": "tuple"},))),
        _constructed(Root, nodes="not a list", node=Node(anything={"text": 1})),
        Root(node=Node(anything=[1, 2], either=Other(text="o"))),
        {"node": {"leaf": {"text": "plain json"}}, "model": "dict"},
        None,
    ]


def _state(found: Any) -> tuple[Any, ...]:
    return (found.model, found.tokens_input, found.tokens_output, found.finish_reason, found.pieces)


def _maps() -> list[dict[str, str]]:
    """One path per field, every typed path in every field, and mixed maps."""
    single = [{name: path} for path in TYPED_PATHS for name in NAMES]
    mixed = [
        dict(zip(NAMES, paths, strict=True))
        for paths in itertools.islice(itertools.permutations(TYPED_PATHS, 5), 0, 400, 7)
    ]
    return single + mixed


def _map_id(fields: dict[str, str]) -> str:
    return ",".join(f"{name}={path}" for name, path in fields.items())


@pytest.mark.parametrize("fields", _maps(), ids=_map_id)
def test_the_typed_reader_reads_what_the_generic_one_reads(fields: dict[str, str]) -> None:
    usage_map = UsageMap(**fields)
    read = usage_map._typed(Root, stream=True)
    fill = usage_map._typed(Root, stream=False)
    assert read is not None and fill is not None, "every path here is typed"
    for with_text, model_known in itertools.product((True, False), repeat=2):
        expected, found = tracing._Usage(text=with_text), tracing._Usage(text=with_text)
        if model_known:
            expected.model = found.model = "known"
        for value in _values():  # a stream's chunks, one after the other
            usage_map._read_plain(expected, None, value)
            read(found, None, value)
            assert _state(found) == _state(expected), (value, read.__doc__)
    for value in _values():
        expected_call, call = TracedCall(0.0, "c", "op"), TracedCall(0.0, "c", "op")
        usage_map._fill_call(value, expected_call)
        fill(value, call)
        assert call == expected_call, (value, fill.__doc__)


@pytest.mark.parametrize("path", UNTYPED_PATHS)
def test_a_path_the_annotations_do_not_type_gets_the_generic_reader(path: str) -> None:
    usage_map = UsageMap(model="model", finish_reason=path)
    assert usage_map._typed(Root, stream=True) is None
    assert usage_map._typed(Root, stream=False) is None
    assert usage_map.filler(Root) is usage_map._fill_call
    assert usage_map.chunk_decoder(Root) is usage_map._decode_read


def test_readers_are_chosen_per_class_and_remembered() -> None:
    usage_map = UsageMap(model="model", tokens_input="node.leaf.n", text="node.leaf.text")
    fill = usage_map.filler(Root)
    assert fill is not usage_map._fill_call and usage_map.filler(Root) is fill
    assert usage_map.filler(dict) is usage_map._fill_call  # not a model class
    decode = usage_map.chunk_decoder(Root)
    assert decode is not usage_map._decode_read and usage_map.chunk_decoder(Root) is decode
    assert usage_map.chunk_decoder(None) is usage_map._decode_read  # type not known
    assert usage_map.chunk_decoder(list[Root]) is usage_map._decode_read


def test_text_is_kept_once_when_a_chunk_of_another_class_goes_to_the_generic_reader() -> None:
    # The guard that fails (a SubLeaf where a Leaf is declared) is met after the model,
    # counts and finish reason were kept, and before the text: the generic reader reads
    # the chunk again and keeps each once.
    usage_map = UsageMap(
        model="model",
        tokens_input="nodes.0.leaf.n",
        finish_reason="nodes.0.leaf.reason",
        text="node.leaf.text",
    )
    read = usage_map._typed(Root, stream=True)
    assert read is not None
    for chunk in (
        Root(model="m", node=Node(leaf=SubLeaf(text="once")), nodes=[Node(leaf=Leaf(n=4))]),
        Root(model="m", node=Node(leaf=Leaf(text="once")), nodes=[Node(leaf=SubLeaf(n=4))]),
    ):
        found = tracing._Usage(text=True)
        read(found, None, chunk)
        assert _state(found) == ("m", 4, None, None, ["once"]), read.__doc__


def test_decode_read_decodes_with_the_models_validator_and_reads_the_chunk() -> None:
    decoder = Decoder(Root)
    reader = decoder.json_reader()
    assert reader == Root.__pydantic_validator__.validate_json  # no model_validate_json frame
    usage_map = UsageMap(model="model", text="node.leaf.text", tokens_output="node.leaf.n")
    found = tracing._Usage(text=True)
    found.decode = reader
    chunk = usage_map.chunk_decoder(Root)(found, None, '{"model":"m","node":{"leaf":{"text":"t"}}}')
    assert isinstance(chunk, Root) and _state(found) == ("m", None, None, None, ["t"])
    with pytest.raises(ValueError):  # a chunk that does not validate is the stream's error
        usage_map.chunk_decoder(Root)(found, None, '{"model": 5}')


def test_a_model_that_overrides_model_validate_json_is_decoded_by_it() -> None:
    class Custom(BaseModel):
        x: int = 0

        @classmethod
        def model_validate_json(cls, json_data: Any, **options: Any) -> Custom:
            return cls(x=99)

    assert Decoder(Custom).json_reader()(b'{"x": 1}').x == 99


# -- a chunk the reader decodes itself: no class checks where pydantic makes the classes -------

JSON_CHUNKS = [
    '{"model":"m","node":{"name":"n","leaf":{"text":"hi","n":3,"reason":"stop"},'
    '"leaves":[{"text":"a"},{"n":2.5}],"numbers":[1,2]}}',
    '{"node":{"leaf":null,"leaves":[]},"nodes":[{"leaf":{"n":7}},{"leaves":[{"text":"b"}]}]}',
    '{"node":null}',
    "{}",
    '{"nodes":[{}],"node":{"anything":{"text":1},"either":{"text":"o"}}}',
]


@pytest.mark.parametrize("fields", _maps()[::3], ids=_map_id)
def test_decode_read_reads_what_decoding_then_the_generic_reader_reads(
    fields: dict[str, str],
) -> None:
    usage_map = UsageMap(**fields)
    decode_read = usage_map.chunk_decoder(Root)
    assert decode_read is not usage_map._decode_read
    expected, found = tracing._Usage(text=True), tracing._Usage(text=True)
    found.decode = Decoder(Root).json_reader()
    for data in JSON_CHUNKS:
        chunk = decode_read(found, None, data)
        usage_map._read_plain(expected, None, Root.model_validate_json(data))
        assert chunk == Root.model_validate_json(data)
        assert _state(found) == _state(expected), (data, decode_read.__doc__)


class Checked(BaseModel):
    leaf: Leaf | None = None

    @model_validator(mode="after")
    def _swap(self) -> Checked:
        # A validator may leave a field holding anything: the reader must check it.
        object.__setattr__(self, "leaf", {"text": "from a dict"})
        return self


class Annotated_(BaseModel):
    leaf: Annotated[Leaf | None, AfterValidator(lambda leaf: leaf)] = None


class WithPrivate(BaseModel):
    leaf: Leaf | None = None
    _note: str = PrivateAttr(default="")


class LeafDefault(BaseModel):
    leaf: Leaf = Leaf(text="default")
    other: Leaf = Field(default_factory=lambda: Leaf(text="made"))


def test_what_pydantic_makes_exactly_is_told_from_what_a_model_may_change() -> None:
    assert tracing._exact(Root) and tracing._exact(Node) and tracing._exact(Leaf)
    for cls in (Checked, Annotated_, WithPrivate):
        assert not tracing._exact(cls), cls
    fields = LeafDefault.model_fields
    assert tracing._default_declared(fields["leaf"], "model", Leaf)
    assert not tracing._default_declared(fields["other"], "model", Leaf)  # a factory: unknown
    assert tracing._default_declared(Node.model_fields["leaves"], "list", Leaf)


def test_a_chunk_a_validator_changed_is_read_by_the_checking_reader() -> None:
    usage_map = UsageMap(text="leaf.text")
    found = tracing._Usage(text=True)
    found.decode = Decoder(Checked).json_reader()
    usage_map.chunk_decoder(Checked)(found, None, '{"leaf": {"text": "validated"}}')
    assert found.pieces == ["from a dict"]  # what the chunk holds, as the generic reader reads


_TEXTS = st.one_of(st.none(), st.text(max_size=3))
_NUMBERS = st.one_of(
    st.none(), st.integers(-5, 5), st.floats(-9, 9, allow_nan=False), st.booleans()
)
_REASONS = st.one_of(st.none(), st.sampled_from(["stop", "length", ""]))
_LEAF_JSON = st.fixed_dictionaries({}, optional={"text": _TEXTS, "n": _NUMBERS, "reason": _REASONS})
_NODE_JSON = st.fixed_dictionaries(
    {},
    optional={
        "name": _TEXTS,
        "leaf": st.one_of(st.none(), _LEAF_JSON),
        "leaves": st.lists(_LEAF_JSON, max_size=3),
        "numbers": st.lists(st.integers(0, 9), max_size=3),
        "anything": st.one_of(st.none(), st.integers(), _LEAF_JSON),
        "type": _TEXTS,
    },
)
_ROOT_JSON = st.fixed_dictionaries(
    {},
    optional={
        "node": st.one_of(st.none(), _NODE_JSON),
        "nodes": st.lists(_NODE_JSON, max_size=2),
        "model": _TEXTS,
    },
)
_STREAM_MAPS = [
    {
        "text": "node.leaf.text",
        "model": "model",
        "tokens_input": "node.leaf.n",
        "tokens_output": "nodes.0.leaf.n",
        "finish_reason": "node.leaf.reason",
    },
    {
        "text": "node.leaves.0.text",
        "model": "node.name",
        "tokens_input": "node.leaves.1.n",
        "tokens_output": "node.numbers.0",
        "finish_reason": "node.leaves.-1.reason",
    },
    {
        "text": "nodes.1.leaves.0.text",
        "model": "node.leaf.text",
        "tokens_input": "node.numbers.2",
        "tokens_output": "node.anything",
        "finish_reason": "node.leaf",
    },
    *_maps()[len(NAMES) * len(TYPED_PATHS) :: 20],
]


@given(chunks=st.lists(_ROOT_JSON, min_size=1, max_size=4), with_text=st.booleans())
def test_decode_read_without_checks_reads_what_the_generic_reader_reads(
    chunks: list[dict[str, Any]], with_text: bool
) -> None:
    # Chunks pydantic made from JSON hold the declared classes: decode_read reads them
    # without class checks, and must agree with the general reader on whatever JSON came.
    texts = []
    for chunk in chunks:
        try:
            Root.model_validate_json(json.dumps(chunk))
        except ValueError:
            continue  # JSON the model refuses is the stream's error, not a reader's
        texts.append(json.dumps(chunk))
    assume(texts)
    for fields in _STREAM_MAPS:
        usage_map = UsageMap(**fields)
        decode_read = usage_map.chunk_decoder(Root)
        expected, found = tracing._Usage(text=with_text), tracing._Usage(text=with_text)
        found.decode = Decoder(Root).json_reader()
        for data in texts:
            decode_read(found, None, data)
            usage_map._read_plain(expected, None, Root.model_validate_json(data))
        assert _state(found) == _state(expected), (texts, decode_read.__doc__)


def test_a_deferred_model_is_built_for_its_validator_and_one_that_cannot_be_fails_on_use() -> None:
    class Deferred(BaseModel):
        model_config = ConfigDict(defer_build=True)
        x: int = 0

    assert not Deferred.__pydantic_complete__
    reader = Decoder(Deferred).json_reader()
    assert reader == Deferred.__pydantic_validator__.validate_json
    assert reader(b'{"x": 2}').x == 2

    class Dangling(BaseModel):
        later: Missing | None = None  # type: ignore[name-defined]  # noqa: F821

    decoder = Decoder(Dangling)
    assert getattr(decoder.json_reader(), "__func__", None) is not None  # model_validate_json
    with pytest.raises(PydanticUserError):
        decoder.from_json(b"{}")


def test_named_event_readers_read_what_the_generic_ones_read() -> None:
    usage_map = UsageMap(
        model={"start": "node.name"},
        tokens_input={"start": "node.leaf.n"},
        tokens_output={"delta": "nodes.0.leaf.n"},
        finish_reason={"delta": "node.leaf.reason"},
        text="node.leaves.0.text",
    )
    plain, by_event = usage_map.event_readers(Root)
    assert plain is not usage_map._read_plain
    assert all(by_event[event] is not usage_map._read_event[event] for event in by_event)
    assert usage_map.event_readers(Root) == (plain, by_event)  # remembered
    for with_text in (True, False):
        expected, found = tracing._Usage(text=with_text), tracing._Usage(text=with_text)
        on_expected = usage_map.bind(expected)
        on_found = partial(tracing._read_by_event, plain, by_event, found)
        for event in ("start", "delta", "other", None):
            for value in _values():
                on_expected(event, value)
                on_found(event, value)
                assert _state(found) == _state(expected), (event, value)


def test_the_anthropic_stream_reads_each_named_event_with_a_typed_reader() -> None:
    from connectors.anthropic import client as anthropic_client
    from connectors.anthropic.models import MessageStreamEvent

    usage_map = anthropic_client._STREAM_MESSAGE.usage
    assert usage_map is not None
    plain, by_event = usage_map.event_readers(MessageStreamEvent)
    assert set(by_event) == set(usage_map._read_event)
    assert all(by_event[event] is not usage_map._read_event[event] for event in by_event)
