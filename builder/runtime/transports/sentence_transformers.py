"""Local embeddings with sentence-transformers (kind ``sentence_transformers``).

The model (a name or a local directory, setting ``model``) is loaded on first use, on the
``device`` setting (``cpu``, ``cuda``, ``cuda:1``, ...). ``embed`` and ``transform`` return
the same types as every LLM connector's, so a local model can stand in for a hosted one, or
back it up in a :class:`~builder.runtime.llm.Fallback`. Importing this module imports
neither sentence-transformers nor torch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, cast

from builder.runtime.config import Config
from builder.runtime.errors import ConfigError, ConnectorError
from builder.runtime.llm import (
    Embeddings,
    EmbedTransform,
    ResponseCache,
    as_texts,
    cached_copy,
    kept_in_cache,
)
from builder.runtime.transports.base import DataConnector

__all__ = ["SentenceTransformersConnector"]


class SentenceTransformersConnector(DataConnector, EmbedTransform):
    """Embeddings from a sentence-transformers model running in this process.

    Kind options (``_options``): ``max_batch`` (texts per forward pass) and ``dimensions``
    (when set, the loaded model must produce vectors of that size). Local vectors cost 0.
    Token counts are not reported (counting them would tokenize every text twice).
    """

    _name = "sentence_transformers"
    _options = {"dimensions": None, "max_batch": 64}
    provider = "sentence_transformers"
    _TRACED = ()  # embed() traces itself, with the provider and the model

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._cache: ResponseCache | None = None

    def with_cache(self, cache: ResponseCache | None) -> SentenceTransformersConnector:
        """Cache this connector's embeddings in ``cache`` (None: stop); returns itself."""
        self._cache = cache
        return self

    @property
    def model_name(self) -> str:
        return str(self._require("model")[0])

    @property
    def device(self) -> str:
        device = self.config.get("device")
        return str(device) if device else "cpu"

    def _connect(self) -> Any:
        name, device = self.model_name, self.device
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError(
                "local embeddings need the sentence-transformers package "
                "(pip install sentence-transformers)",
                connector=self._name,
            ) from None
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(
                    f"device {device!r} was asked for, but this torch build sees no CUDA "
                    "device; use device='cpu'",
                    connector=self._name,
                )
        try:
            model = SentenceTransformer(name, device=device)
        except Exception as exc:
            raise self._error(exc, ConfigError) from None
        expected = self._options.get("dimensions")
        size = _dimensions(model)
        if expected is not None and size is not None and size != expected:
            raise ConfigError(
                f"model {name!r} gives {size}-dimensional vectors; the spec says {expected}",
                connector=self._name,
            )
        return model

    @property
    def dimensions(self) -> int | None:
        """The model's vector size (loads the model)."""
        return _dimensions(self.connection)

    def embed(
        self,
        texts: str | Iterable[str],
        *,
        model: str | None = None,
        input_type: str | None = None,
        cache: ResponseCache | None = None,
    ) -> Embeddings:
        """One vector per text, in order. ``input_type`` picks the model's prompt of that
        name (``query``, ``document``, ...) when the model defines one; otherwise it is
        ignored, as by hosted providers without input types. ``model`` must be None or the
        configured model: the loaded model is the only one."""
        if model is not None and model != self.model_name:
            raise ConfigError(
                f"this connector runs {self.model_name!r}, not {model!r}", connector=self._name
            )
        listed = as_texts(texts)
        started = time.perf_counter()
        cache = cache if cache is not None else self._cache
        key = ""
        if cache is not None:
            body = {"texts": listed, "input_type": input_type}
            key = cache.key(self.provider, "encode", self.model_name, body)
            found = cache.get(key)
            if found is not None:
                return cast(Embeddings, cached_copy(found, started))
        try:
            vectors = self._encode(listed, input_type) if listed else []
        except ConnectorError as exc:
            self._trace(listed, None, time.perf_counter() - started, exc)
            raise
        result = Embeddings(
            vectors,
            model=self.model_name,
            tokens_input=None,
            cost=0.0,
            latency=time.perf_counter() - started,
            raw=[],
            provider=self.provider,
        )
        if cache is not None:
            kept_in_cache(cache, key, result, started)
        self._trace(listed, result, result.latency)
        self.metrics.records_read += len(listed)
        self.metrics.batches += 1
        return result

    def _trace(
        self,
        texts: list[str],
        result: Embeddings | None,
        latency: float,
        error: BaseException | None = None,
    ) -> None:
        """One traced call per ``embed`` on the process-wide tracer, as HTTP calls are."""
        from builder.runtime import tracing

        tracer = tracing.get_tracer()
        if not tracer.active:
            return
        output = (
            None if result is None else {"vectors": len(result), "dimensions": result.dimensions}
        )
        tracer.record(
            self._name,
            "embed",
            input={"texts": texts},
            output=output,
            error=error,
            latency=latency,
            provider=self.provider,
            request_model=self.config.get("model"),
            secrets=self._secrets,
        )

    def _encode(self, texts: list[str], input_type: str | None) -> list[list[float]]:
        model = self.connection
        options: dict[str, Any] = {}
        if input_type is not None and input_type in (getattr(model, "prompts", None) or {}):
            options["prompt_name"] = input_type
        try:
            array = model.encode(
                texts,
                batch_size=int(self._options.get("max_batch") or 64),
                convert_to_numpy=True,
                show_progress_bar=False,
                **options,
            )
        except Exception as exc:
            self.metrics.errors += 1
            raise self._error(exc, ConnectorError, operation="embed") from None
        return array.tolist()  # type: ignore[no-any-return]


def _dimensions(model: Any) -> int | None:
    # Renamed in sentence-transformers 5.x; the old name warns.
    get = getattr(model, "get_embedding_dimension", None) or getattr(
        model, "get_sentence_embedding_dimension", None
    )
    size = get() if get is not None else None
    return int(size) if size is not None else None
