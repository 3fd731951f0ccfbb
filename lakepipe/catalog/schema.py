"""Tables of the catalog at the latest schema version (SQLAlchemy Core).

These objects are what queries are written against. The DDL that creates or changes them lives in
:mod:`lakepipe.catalog.migrations` (one frozen step per version); a test checks that a database
built by the migrations matches the tables here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["OUTPUT_KEY", "UTCDateTime", "metadata", "outputs", "runs", "schema_version"]


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamp stored as UTC (``timestamptz`` on PostgreSQL), always read back as aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # a str from aggregates over SQLite text
        stamp: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


metadata = MetaData()

#: Bookkeeping of applied migrations; the schema version is ``max(version)``.
schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied", UTCDateTime, nullable=False),
    Column("lakepipe_version", String(64), nullable=False),
)

#: One row per pipeline invocation.
runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("command", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("started", UTCDateTime, nullable=False),
    Column("finished", UTCDateTime),
    Column("n_outputs", Integer),
    Column("n_skipped", Integer),
    Column("status", String(16), nullable=False),
    Column("lakepipe_version", String(64), nullable=False),
)

#: Columns of the unique key that makes registration idempotent.
OUTPUT_KEY = ("method", "statistic", "inputs_hash", "params_hash")

#: One row per published output.
outputs = Table(
    "outputs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("method", String(128), nullable=False),
    Column("cohort", String(128)),
    Column("participant", String(128)),
    Column("session", String(128)),
    Column("label", String(128)),
    Column("atlas", String(128)),
    Column("connectome", String(128)),
    Column("statistic", String(128), nullable=False),
    Column("params", Text, nullable=False),
    Column("params_hash", String(64), nullable=False),
    Column("inputs", Text, nullable=False),
    Column("inputs_hash", String(64), nullable=False),
    Column("store_uri", Text, nullable=False),
    Column("store_index", Text),
    Column("shape", Text),
    Column("lakepipe_version", String(64), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("run_id", String(64), ForeignKey("runs.run_id", name="fk_outputs_run_id")),
    UniqueConstraint(*OUTPUT_KEY, name="uq_outputs_key"),
    Index("ix_outputs_method_atlas", "method", "atlas", "statistic"),
    Index("ix_outputs_participant", "participant", "session"),
    Index("ix_outputs_label", "label"),
    Index("ix_outputs_run_id", "run_id"),
)
