"""MongoDB (pymongo): read a collection lazily, filter it, write documents in ordered batches.

Records and documents:

- ``read()`` and ``filter(query).read()`` yield each document as a dict, ``_id``
  included, when the spec declares no ``record`` model. With a model, ``_id`` is dropped
  unless the model declares it (a field named or aliased ``_id``; an ObjectId is given as
  its hex string): a model describes the data, and MongoDB's generated ids are storage.
- ``write(docs)`` inserts with ``insert_many(ordered=True)``, or, with the kind's
  ``upsert_keys``, replaces the document with the same keys (``ReplaceOne(upsert=True)``),
  so writing a record twice stores it once. Documents are encoded to BSON here (so the
  caller's dicts are not given an ``_id`` behind its back); models are dumped by alias.
- Writes stop at the first document the server refuses: the :class:`WriteError` names
  that one and every later one as ``failed``. When the connection drops mid-batch, the
  outcome of that batch is unknown: it and the later ones are ``failed``; retrying them
  is safe with ``upsert_keys`` and may insert a document twice without.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from builder.runtime.errors import (
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    TransportError,
    WriteError,
)
from builder.runtime.transports.base import DataConnector, chunks, records_of

__all__ = ["MongoConnector", "MongoQuery"]


class MongoQuery:
    """A filtered view of the collection: ``read()`` / ``read_batch(n)`` its documents."""

    __slots__ = ("_connector", "query", "projection")

    def __init__(
        self,
        connector: MongoConnector,
        query: Mapping[str, Any],
        projection: Mapping[str, Any] | list[str] | None = None,
    ) -> None:
        self._connector = connector
        self.query = dict(query)
        self.projection = projection

    def read(self) -> Iterator[Any]:
        """The matching documents (or records), fetched lazily in batches."""
        return self._connector.read(query=self.query, projection=self.projection)

    def read_batch(self, batch_size: int = 100) -> Iterator[list[Any]]:
        """The matching documents in lists of at most ``batch_size``."""
        return self._connector.read_batch(batch_size, query=self.query, projection=self.projection)


class MongoConnector(DataConnector):
    """Source and sink over a MongoDB collection."""

    _name = "mongo"

    def _connect(self) -> Any:
        import pymongo

        timeout_ms = int(float(self.config.get("timeout") or 10.0) * 1000)
        options: dict[str, Any] = {
            "serverSelectionTimeoutMS": timeout_ms,
            "connectTimeoutMS": timeout_ms,
            "appname": f"connector-builder/{self._name}",
        }
        url = self.config.reveal("connection_url") if "connection_url" in self.config else None
        if url:
            client = pymongo.MongoClient(url, **options)
        else:
            user = self.config.get("user")
            if user:
                options["username"] = user
                options["password"] = self.config.reveal("password")
            client = pymongo.MongoClient(
                str(self.config.get("host") or "127.0.0.1"),
                int(self.config.get("port") or 27017),
                **options,
            )
        return client

    def _close(self, connection: Any) -> None:
        connection.close()

    def _collection(self, raw: bool = False) -> Any:
        (name,) = self._require("collection")
        database = self.config.get("database")
        if not database and not self.config.get("connection_url"):
            (database,) = self._require("database")
        client = self.connection
        if database:
            collection = client[database][name]
        else:
            try:
                collection = client.get_default_database()[name]  # the URL's /database
            except Exception:
                (database,) = self._require("database")  # a clear error: it is missing
        if raw:
            from bson.codec_options import CodecOptions
            from bson.raw_bson import RawBSONDocument

            collection = collection.with_options(
                codec_options=CodecOptions(document_class=RawBSONDocument)
            )
        return collection

    def _batch_size(self) -> int:
        return int(self._options.get("batch_size") or 1000)

    def _fail(self, exc: Exception, operation: str) -> ConnectorError:
        from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

        # Both go on with a dump of the topology or of the whole reply; the first part says it.
        if isinstance(exc, ServerSelectionTimeoutError):
            first = str(exc).split(", Timeout:")[0].split(", full error:")[0]
            exc = ServerSelectionTimeoutError(f"no server answered: {first}")
        elif isinstance(exc, OperationFailure):
            errmsg = (exc.details or {}).get("errmsg") or str(exc).split(", full error:")[0]
            exc = OperationFailure(f"{errmsg} (code {exc.code})", exc.code)
        kind = ConnectionFailedError if _is_connection_error(exc) else TransportError
        return self._error(exc, kind, operation=operation)

    # -- source --------------------------------------------------------------------------

    def filter(
        self, query: Mapping[str, Any], projection: Mapping[str, Any] | list[str] | None = None
    ) -> MongoQuery:
        """The documents matching ``query`` (MongoDB query syntax), with only the fields of
        ``projection`` if given."""
        return MongoQuery(self, query, projection)

    def read(
        self,
        *,
        query: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | list[str] | None = None,
    ) -> Iterator[Any]:
        """Every document of the collection (matching ``query``), in natural order,
        fetched lazily in batches of the kind's ``batch_size``."""
        return self._counted(self._documents(query or {}, projection))

    def _documents(
        self, query: Mapping[str, Any], projection: Mapping[str, Any] | list[str] | None
    ) -> Iterator[Any]:
        import bson

        decode = self._document_decoder()
        try:
            cursor = self._collection(raw=True).find(
                query, projection, batch_size=self._batch_size()
            )
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._fail(exc, "read") from None
        metrics = self.metrics
        try:
            while True:
                try:
                    raw = next(cursor)
                except StopIteration:
                    return
                except Exception as exc:
                    raise self._fail(exc, "read") from None
                data = raw.raw
                metrics.bytes_read += len(data)
                yield decode(bson.decode(data))
        finally:
            cursor.close()

    def _document_decoder(self) -> Any:
        """A function from a stored document to what read() yields."""
        decoder = self._record
        if decoder is None:
            return _same
        keep_id: bool | None = None

        def to_record(document: dict[str, Any]) -> Any:
            nonlocal keep_id
            if keep_id is None:
                keep_id = _model_has_id(decoder)
            if "_id" in document:
                if keep_id:
                    document["_id"] = _plain_id(document["_id"])
                else:
                    del document["_id"]
            try:
                return decoder.from_python(document)
            except Exception as exc:  # counted as an error by _counted
                raise self._error(exc, ResponseValidationError, operation="read") from None

        return to_record

    # -- sink ----------------------------------------------------------------------------

    def write(self, records: Any) -> int:
        """Write the documents (dicts or models) in ordered batches; returns how many were
        written. With ``upsert_keys`` a document replaces the one with the same keys."""
        pending = records_of(records)
        return self._write_reported(pending, self._write)

    def _write(self, pending: list[Any]) -> int:
        import bson
        from bson.raw_bson import RawBSONDocument

        keys = list(self._options.get("upsert_keys") or [])
        try:
            documents = [_as_document(record) for record in pending]
            encoded = [bson.encode(document) for document in documents]
            if keys:
                selectors = [
                    _selector(document, keys, index) for index, document in enumerate(documents)
                ]
        except (TypeError, ValueError, KeyError, bson.errors.InvalidDocument) as exc:
            raise WriteError(
                f"a document could not be encoded, nothing was written: {exc}",
                written=0,
                failed=pending,
                connector=self._name,
                operation="write",
            ) from None
        from pymongo import ReplaceOne
        from pymongo.errors import BulkWriteError

        collection = self._collection()
        metrics = self.metrics
        written = 0
        for batch in chunks(list(range(len(pending))), self._batch_size()):
            raws = [RawBSONDocument(encoded[i]) for i in batch]
            try:
                if keys:
                    collection.bulk_write(
                        [
                            ReplaceOne(selectors[i], raw, upsert=True)
                            for i, raw in zip(batch, raws, strict=True)
                        ],
                        ordered=True,
                    )
                else:
                    collection.insert_many(raws, ordered=True)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                # Ordered: everything before the first refused document was written.
                done = int(errors[0]["index"]) if errors else 0
                self._count_written(batch[:done], encoded)
                written += done
                reason = errors[0].get("errmsg", "") if errors else "the write concern failed"
                raise self._write_error(pending, written, reason) from None
            except Exception as exc:
                failure = self._fail(exc, "write")
                # from the scrubbed error, never the driver's (its traceback may hold secrets)
                raise self._write_error(pending, written, failure.message) from failure
            self._count_written(batch, encoded)
            written += len(batch)
            metrics.batches += 1
        return written

    def _count_written(self, indexes: list[int], encoded: list[bytes]) -> None:
        metrics = self.metrics
        metrics.records_written += len(indexes)
        metrics.bytes_written += sum(len(encoded[i]) for i in indexes)

    def _write_error(self, pending: list[Any], written: int, reason: str) -> WriteError:
        return WriteError(
            f"wrote {written} of {len(pending)} documents; the rest were not written: "
            + self._error(Exception(reason)).message.removeprefix("Exception: "),
            written=written,
            failed=pending[written:],
            connector=self._name,
            operation="write",
        )


def _same(document: dict[str, Any]) -> dict[str, Any]:
    return document


def _as_document(record: Any) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    dump = getattr(record, "model_dump", None)
    if dump is None:
        raise TypeError(f"a document must be a dict or a model, not {type(record).__name__}")
    return dump(by_alias=True, exclude_none=True)  # type: ignore[no-any-return]


def _selector(document: Mapping[str, Any], keys: list[str], index: int) -> dict[str, Any]:
    missing = [key for key in keys if key not in document]
    if missing:
        raise KeyError(f"document {index} lacks the upsert key(s) {', '.join(missing)}")
    return {key: document[key] for key in keys}


def _model_has_id(decoder: Any) -> bool:
    """Whether the record model declares ``_id`` (as a field's alias)."""
    from pydantic import BaseModel

    if decoder.type is None:
        decoder._build()  # resolve a lazily given type
    model = decoder.type
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return False
    return any(
        name == "_id" or field.alias == "_id" or field.validation_alias == "_id"
        for name, field in model.model_fields.items()
    )


def _plain_id(value: Any) -> Any:
    from bson import ObjectId

    return str(value) if isinstance(value, ObjectId) else value


def _is_connection_error(exc: Exception) -> bool:
    from pymongo.errors import ConnectionFailure, OperationFailure

    if isinstance(exc, ConnectionFailure):  # incl. ServerSelectionTimeoutError, AutoReconnect
        return True
    return isinstance(exc, OperationFailure) and exc.code == 18  # authentication failed
