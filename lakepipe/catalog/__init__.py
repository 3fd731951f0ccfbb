"""Catalog: the system of record of a lake (SQLAlchemy Core over SQLite or PostgreSQL).

Every published output is one row of the ``outputs`` table with its provenance; registering rows
(one transaction, idempotent on ``(method, statistic, inputs_hash, params_hash)``) is what makes
data visible. See :class:`Catalog` and :class:`OutputRecord`.
"""

from lakepipe.catalog.catalog import QUERY_FILTERS, RUN_STATUSES, Catalog
from lakepipe.catalog.hashing import canonical_json, content_hash
from lakepipe.catalog.migrations import MIGRATIONS, Migration
from lakepipe.catalog.records import KINDS, STATUSES, OutputRecord, RegisterResult
from lakepipe.catalog.urls import CATALOG_ENV, catalog_url_for_lake, check_store_uri, redact_url

__all__ = [
    "CATALOG_ENV",
    "KINDS",
    "MIGRATIONS",
    "QUERY_FILTERS",
    "RUN_STATUSES",
    "STATUSES",
    "Catalog",
    "Migration",
    "OutputRecord",
    "RegisterResult",
    "canonical_json",
    "catalog_url_for_lake",
    "check_store_uri",
    "content_hash",
    "redact_url",
]
