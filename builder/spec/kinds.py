"""The connector kinds and, for each, its kind block and the settings its transport reads.

A spec of kind ``sql`` may carry a ``sql:`` block of static options (the dialect, upsert
keys, ...). Runtime values a user changes per use — host, table, topic, credentials — are
settings: each kind has a standard set (below), which the spec's ``config`` extends or
adjusts (another env var name, a default, a description). A kind's standard settings are
exactly the names its runtime transport reads.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder.spec.base import StrictModel

Kind = Literal[
    "http", "sql", "mongo", "redis_stream", "kafka", "amqp", "nats", "mqtt", "s3", "filesystem",
    "sentence_transformers",
]  # fmt: skip

DATA_KINDS = ("sql", "mongo", "redis_stream", "kafka", "amqp", "nats", "mqtt", "s3", "filesystem")


class KindOptions(StrictModel):
    """The static options of one kind: the spec block named after the kind."""


class MessageOptions(KindOptions):
    format: Literal["json", "text", "bytes"] = Field(
        "json", description="Payload encoding: JSON (typed by `record`), UTF-8 text or raw bytes."
    )


class SqlOptions(KindOptions):
    dialect: Literal["postgresql", "mysql"]
    upsert_keys: list[str] = Field(
        default_factory=list,
        description="Columns that identify a row: write() updates a row with the same keys.",
    )
    batch_size: int = Field(1000, ge=1, description="Rows per write batch.")


class MongoOptions(KindOptions):
    upsert_keys: list[str] = Field(
        default_factory=list,
        description="Fields that identify a document: write() replaces one with the same keys.",
    )
    batch_size: int = Field(1000, ge=1)


class RedisStreamOptions(MessageOptions):
    maxlen: int | None = Field(
        None, ge=1, description="Trim the stream to about this many entries."
    )
    approximate: bool = Field(True, description="Trim with `~` (cheaper; Redis keeps a few more).")
    batch_size: int = Field(1000, ge=1, description="Entries per write transaction (all or none).")


class KafkaOptions(MessageOptions):
    batch_size: int = Field(1000, ge=1, description="Records sent before each flush in write().")


class AmqpOptions(MessageOptions):
    durable: bool = Field(
        True, description="Declare the queue durable; publish persistent messages."
    )


class NatsOptions(MessageOptions):
    msg_id_field: str | None = Field(
        None,
        description="A record field sent as `Nats-Msg-Id`: JetStream stores a repeated id once "
        "(within the stream's duplicate window), so retrying a failed write is safe.",
    )


class MqttOptions(MessageOptions):
    pass


class S3Options(KindOptions):
    multipart_threshold: int = Field(
        8 * 1024 * 1024, ge=5 * 1024 * 1024, description="Objects this large upload in parts."
    )
    part_size: int = Field(
        8 * 1024 * 1024, ge=5 * 1024 * 1024, description="Size of each part (S3's minimum: 5 MiB)."
    )


class FilesystemOptions(KindOptions):
    format: Literal["bytes", "text", "json", "jsonl"] = Field(
        "bytes", description="How read() gives each file's content and write() takes it."
    )


class SentenceTransformersOptions(KindOptions):
    dimensions: int | None = Field(None, ge=1, description="The model's vector size, if known.")
    max_batch: int = Field(64, ge=1)


KIND_OPTIONS: dict[str, type[KindOptions]] = {
    "sql": SqlOptions,
    "mongo": MongoOptions,
    "redis_stream": RedisStreamOptions,
    "kafka": KafkaOptions,
    "amqp": AmqpOptions,
    "nats": NatsOptions,
    "mqtt": MqttOptions,
    "s3": S3Options,
    "filesystem": FilesystemOptions,
    "sentence_transformers": SentenceTransformersOptions,
}


def _s(type_: str = "string", description: str = "", **kw: object) -> dict[str, object]:
    """A standard setting, written as a spec's `config` entry would be."""
    setting: dict[str, object] = {"type": type_, **kw}
    if description:
        setting["description"] = description
    return setting


_URL = _s(
    description="A connection URL; when given, it wins over the discrete settings.", secret=True
)

STANDARD_SETTINGS: dict[str, dict[str, dict[str, object]]] = {
    "sql": {
        "connection_url": _URL,
        "host": _s(default="127.0.0.1"),
        "port": _s("integer"),
        "user": _s(),
        "password": _s(secret=True),
        "database": _s(),
        "table": _s(description="The table read() reads and write() writes."),
        "query": _s(description="A SELECT that read() runs instead of reading `table`."),
    },
    "mongo": {
        "connection_url": _URL,
        "host": _s(default="127.0.0.1"),
        "port": _s("integer", default=27017),
        "user": _s(),
        "password": _s(secret=True),
        "database": _s(),
        "collection": _s(),
        "timeout": _s("number", default=10.0, description="Seconds to wait for the server."),
    },
    "redis_stream": {
        "connection_url": _URL,
        "host": _s(default="127.0.0.1"),
        "port": _s("integer", default=6379),
        "password": _s(secret=True),
        "db": _s("integer", default=0),
        "stream": _s(description="The stream key."),
        "group": _s(description="Consumer group; read() creates it if missing."),
        "consumer": _s(default="connector"),
        "block_ms": _s("integer", default=1000, description="How long read() waits for entries."),
        "claim_idle_ms": _s(
            "integer",
            description="read() first takes over entries other consumers left unacknowledged "
            "this long (XAUTOCLAIM); unset: never.",
        ),
    },
    "kafka": {
        "bootstrap_servers": _s(default="127.0.0.1:9092"),
        "topic": _s(),
        "group_id": _s(),
        "auto_offset_reset": _s(default="earliest"),
        "client_id": _s(default="connector-builder"),
        "poll_timeout": _s("number", default=1.0, description="Seconds read() waits for records."),
        "session_timeout": _s(
            "number", default=10.0, description="Seconds the group waits for a silent consumer."
        ),
    },
    "amqp": {
        "connection_url": _URL,
        "host": _s(default="127.0.0.1"),
        "port": _s("integer", default=5672),
        "user": _s(default="guest"),
        "password": _s(secret=True),
        "virtual_host": _s(default="/"),
        "queue": _s(),
        "exchange": _s(default=""),
        "routing_key": _s(description="Default: the queue name."),
        "prefetch": _s("integer", default=100),
        "idle_timeout": _s("number", default=1.0, description="Seconds read() waits for messages."),
    },
    "nats": {
        "servers": _s(default="nats://127.0.0.1:4222"),
        "user": _s(),
        "password": _s(secret=True),
        "token": _s(secret=True),
        "stream": _s(description="JetStream stream; created with `subject` if missing."),
        "subject": _s(),
        "durable": _s(description="Durable consumer name."),
        "idle_timeout": _s("number", default=1.0),
        "timeout": _s("number", default=10.0, description="Seconds to wait for the server."),
    },
    "mqtt": {
        "host": _s(default="127.0.0.1"),
        "port": _s("integer", default=1883),
        "username": _s(),
        "password": _s(secret=True),
        "topic": _s(),
        "qos": _s("integer", default=1),
        "client_id": _s(
            description="Fixed client id: read() keeps a persistent session under it, so "
            "messages that arrive while no reader is connected are kept for the next one."
        ),
        "idle_timeout": _s("number", default=1.0),
        "timeout": _s("number", default=10.0, description="Seconds to wait for the broker."),
    },
    "s3": {
        "endpoint_url": _s(
            default="https://s3.amazonaws.com",
            description="The S3 API; another one (MinIO, Ceph, R2) is addressed path-style.",
        ),
        "region": _s(default="us-east-1", env="AWS_REGION"),
        "bucket": _s(),
        "prefix": _s(default="", description="Key prefix; the keys of records are relative to it."),
        "access_key_id": _s(env="AWS_ACCESS_KEY_ID"),
        "secret_access_key": _s(secret=True, env="AWS_SECRET_ACCESS_KEY"),
        "session_token": _s(secret=True, env="AWS_SESSION_TOKEN"),
        "timeout": _s("number", default=60.0),
    },
    "filesystem": {
        "path": _s(description="The directory read() reads and write() writes into."),
        "pattern": _s(default="*", description="Glob pattern of the files read() reads."),
        "recursive": _s("boolean", default=False, description="Match in subdirectories too."),
    },
    "sentence_transformers": {
        "model": _s(description="A model name or a local directory."),
        "device": _s(default="cpu", description="cpu or cuda."),
    },
}

# kind -> (runtime module, class) that a generated connector of the kind subclasses.
TRANSPORTS: dict[str, tuple[str, str]] = {
    "sql": ("builder.runtime.transports.sql", "SqlConnector"),
    "mongo": ("builder.runtime.transports.mongo", "MongoConnector"),
    "redis_stream": ("builder.runtime.transports.redis_stream", "RedisStreamConnector"),
    "kafka": ("builder.runtime.transports.kafka", "KafkaConnector"),
    "amqp": ("builder.runtime.transports.amqp", "AmqpConnector"),
    "nats": ("builder.runtime.transports.nats", "NatsConnector"),
    "mqtt": ("builder.runtime.transports.mqtt", "MqttConnector"),
    "s3": ("builder.runtime.transports.s3", "S3Connector"),
    "filesystem": ("builder.runtime.transports.filesystem", "FilesystemConnector"),
    "sentence_transformers": (
        "builder.runtime.transports.sentence_transformers",
        "SentenceTransformersConnector",
    ),
}

# kind -> the top-level modules of its driver (the generated tests check they load lazily).
DRIVER_MODULES: dict[str, tuple[str, ...]] = {
    "sql": ("psycopg", "pymysql"),
    "mongo": ("pymongo", "bson"),
    "redis_stream": ("redis",),
    "kafka": ("kafka", "aiokafka"),
    "amqp": ("pika",),
    "nats": ("nats",),
    "mqtt": ("paho",),
    "s3": ("defusedxml",),
    "filesystem": (),
    "sentence_transformers": ("sentence_transformers", "torch"),
}
