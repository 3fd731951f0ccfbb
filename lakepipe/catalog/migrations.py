"""Versioned catalog schema without Alembic: an ordered list of migration steps.

Each :class:`Migration` turns schema version ``n - 1`` into ``n``; :data:`MIGRATIONS` lists them
from 1 (create the tables) upwards. :func:`upgrade` applies, in order and inside the caller's
transaction, every step newer than the database's version and records each in ``schema_version``.
Both SQLite and PostgreSQL run DDL transactionally, so a failed step leaves the database at its
old version. On PostgreSQL an advisory lock serialises concurrent upgraders; on SQLite the caller's
``BEGIN IMMEDIATE`` does.

To change the schema: update :mod:`lakepipe.catalog.schema`, then append a step here that brings a
database from the previous version to the new one (never edit a released step; a step's DDL is
frozen, which is why v1 spells its tables out instead of using the tables in ``schema``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    inspect,
    select,
    text,
)

from lakepipe._version import __version__
from lakepipe.catalog.schema import UTCDateTime, schema_version
from lakepipe.errors import InputError

__all__ = ["MIGRATIONS", "Migration", "current_version", "latest_version", "upgrade"]

log = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock taken while migrating (any constant, "lakepipe" in ASCII).
_PG_LOCK_KEY = 0x6C616B6570697065


@dataclass(frozen=True)
class Migration:
    """One schema step.

    Attributes
    ----------
    version
        Version the database has after this step.
    description
        What the step does (recorded in ``schema_version``).
    apply
        Function running the DDL/DML on the connection (inside the open transaction).
    """

    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_create(conn: Connection) -> None:
    """Version 1: ``runs`` and ``outputs`` with the unique key and query indexes."""
    md = MetaData()
    Table(
        "runs",
        md,
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
    Table(
        "outputs",
        md,
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
        UniqueConstraint("method", "statistic", "inputs_hash", "params_hash", name="uq_outputs_key"),
        Index("ix_outputs_method_atlas", "method", "atlas", "statistic"),
        Index("ix_outputs_participant", "participant", "session"),
        Index("ix_outputs_label", "label"),
        Index("ix_outputs_run_id", "run_id"),
    )
    md.create_all(conn)


#: Every schema step, in order. Append new steps; never edit or reorder released ones.
MIGRATIONS: tuple[Migration, ...] = (Migration(1, "create runs and outputs", _v1_create),)


def _steps(steps: Sequence[Migration] | None) -> Sequence[Migration]:
    steps = MIGRATIONS if steps is None else steps
    for expected, step in enumerate(steps, start=1):
        if step.version != expected:
            raise ValueError(
                f"migration steps must be numbered 1, 2, ...; found v{step.version} at {expected}"
            )
    return steps


def latest_version(steps: Sequence[Migration] | None = None) -> int:
    """Schema version this lakepipe writes (that of the last step)."""
    steps = _steps(steps)
    return steps[-1].version if steps else 0


def current_version(conn: Connection) -> int:
    """Schema version of the database behind ``conn``; 0 for an empty database."""
    if not inspect(conn).has_table(schema_version.name):
        return 0
    return int(conn.scalar(select(func.max(schema_version.c.version))) or 0)


def check_not_newer(
    version: int, steps: Sequence[Migration] | None = None, source: str | None = None
) -> None:
    """Refuse a database whose schema is newer than this lakepipe knows."""
    latest = latest_version(steps)
    if version > latest:
        raise InputError(
            f"catalog schema v{version} is newer than this lakepipe {__version__} "
            f"understands (v{latest}); upgrade lakepipe",
            source,
        )


def upgrade(
    conn: Connection,
    steps: Sequence[Migration] | None = None,
    *,
    target: int | None = None,
    source: str | None = None,
) -> list[int]:
    """Apply the pending steps up to ``target`` (default: the last) in the open transaction.

    Parameters
    ----------
    conn
        Connection with a write transaction open (``BEGIN IMMEDIATE`` on SQLite).
    steps
        Migration list; default :data:`MIGRATIONS` (looked up at call time).
    target
        Version to stop at.
    source
        Redacted catalog URL, for messages.

    Returns
    -------
    list of int
        Versions applied, in order (empty when the database was up to date).
    """
    steps = _steps(steps)
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    schema_version.create(conn, checkfirst=True)
    version = current_version(conn)
    check_not_newer(version, steps, source)
    target = latest_version(steps) if target is None else target
    applied = []
    for step in steps:
        if version < step.version <= target:
            log.info("catalog %s: migrating schema to v%d (%s)", source or "", step.version, step.description)
            step.apply(conn)
            conn.execute(
                schema_version.insert().values(
                    version=step.version,
                    description=step.description,
                    applied=datetime.now(UTC),
                    lakepipe_version=__version__,
                )
            )
            applied.append(step.version)
    return applied
