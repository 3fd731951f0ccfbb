"""The :class:`Catalog`: system of record of a lake (SQLite file or PostgreSQL).

Registering is the publish step: data are written first, then their rows are inserted in one
transaction with ``INSERT ... ON CONFLICT DO NOTHING`` on the unique key
``(method, statistic, inputs_hash, params_hash)``, so re-runs and concurrent writers never
duplicate an output. All SQL is built with SQLAlchemy Core expressions (bound parameters only).
"""

from __future__ import annotations

import html
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, and_, distinct, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.sql.elements import ColumnElement

from lakepipe._version import __version__
from lakepipe.bids import check_entity
from lakepipe.catalog import migrations
from lakepipe.catalog.engines import open_engine
from lakepipe.catalog.hashing import canonical_json, jsonable
from lakepipe.catalog.records import OutputRecord, RegisterResult, as_records, check_run_id
from lakepipe.catalog.schema import OUTPUT_KEY, outputs
from lakepipe.catalog.schema import runs as runs_table
from lakepipe.catalog.urls import catalog_url_for_lake, normalize_catalog_url, redact_text, redact_url
from lakepipe.errors import EnvironmentFailure, InputError, NotFoundError

if TYPE_CHECKING:  # pandas is imported on first use: writer processes never need it
    import pandas as pd

__all__ = ["Catalog", "QUERY_FILTERS", "RUN_STATUSES"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Keyword filters accepted by :meth:`Catalog.query`, :meth:`Catalog.count` and :meth:`Catalog.summary`.
QUERY_FILTERS = (
    "kind",
    "method",
    "cohort",
    "participant",
    "session",
    "label",
    "atlas",
    "connectome",
    "statistic",
    "run_id",
    "params_hash",
    "inputs_hash",
    "store_uri",
    "status",
)
#: States of a row in ``runs``.
RUN_STATUSES = ("running", "finished", "failed", "interrupted")

_ENTITY_FILTERS = {"participant": "sub", "session": "ses", "label": "label"}
_JSON_COLUMNS = ("params", "inputs", "shape")
_ORDER = ("participant", "session", "label", "statistic")
_CHUNK = 500
_RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
_ATTEMPTS = 5
#: what a recomputation (``register(replace=True)``) changes in the row of an output
_REPLACED_COLUMNS = (
    "store_uri",
    "store_index",
    "shape",
    "params",
    "inputs",
    "lakepipe_version",
    "created",
    "run_id",
)


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _loads(value: str | None) -> Any:
    """JSON text to Python; missing values (None, or NaN from pandas' string columns) to None."""
    return json.loads(value) if isinstance(value, str) else None


def _parse_json_columns(row: dict[str, Any]) -> dict[str, Any]:
    for name in _JSON_COLUMNS:
        row[name] = _loads(row[name])
    if row["shape"] is not None:
        row["shape"] = tuple(row["shape"])
    return row


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return redact_text(lines[0] if lines else type(orig).__name__)


def _redact_values(obj: Any) -> Any:
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: _redact_values(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact_values(v) for v in obj]
    return obj


class Catalog:
    """Catalog of the outputs published in a lake.

    Parameters
    ----------
    url
        SQLAlchemy URL (``sqlite:///path/catalog.sqlite``, ``postgresql+psycopg://user:pw@host/db``)
        or a plain path to a SQLite file. ``postgresql://`` selects psycopg 3.
    create
        Create (and migrate) the schema when the database has none. With ``create=False`` a
        database without a lakepipe catalog raises :class:`~lakepipe.errors.NotFoundError`.
        An older schema is always migrated; a newer one is refused.

    Attributes
    ----------
    url
        The URL with its password redacted (safe to print and log).
    schema_version
        Schema version of the database once opened.

    Examples
    --------
    >>> cat = Catalog("sqlite://")
    >>> cat.register([OutputRecord(kind="atlas", method="ingest", statistic="labels",
    ...                            atlas="Schaefer100", store_uri="atlases/Schaefer100.zarr")]).inserted
    1
    """

    def __init__(self, url: str, *, create: bool = True):
        self._url = normalize_catalog_url(url)
        self.url = redact_url(self._url)
        try:
            sa_url = make_url(self._url)
        except ArgumentError:
            raise InputError("not a valid catalog URL", self.url) from None
        if sa_url.get_backend_name() == "sqlite" and sa_url.database and sa_url.query.get("mode") != "memory":
            path = Path(sa_url.database.removeprefix("file:")) if sa_url.database != ":memory:" else None
            if path is not None:
                if not create and not path.exists():
                    raise NotFoundError("no catalog database at this path", self.url)
                if create:
                    path.parent.mkdir(parents=True, exist_ok=True)
        self._db = open_engine(self._url)
        try:
            self.schema_version = self._prepare(create)
        except OperationalError as exc:
            self._db.dispose()
            raise EnvironmentFailure(f"cannot open the catalog: {_reason(exc)}", self.url) from None
        log.debug("opened catalog %s (schema v%d)", self.url, self.schema_version)

    @classmethod
    def for_lake(cls, lake_url: str, catalog_url: str | None = None) -> Catalog:
        """Catalog of the lake at ``lake_url``.

        ``catalog_url``, else ``$LAKEPIPE_CATALOG``, else ``<lake>/catalog.sqlite`` for a local lake
        or an in-process SQLite database for a ``memory://`` lake (shared by every catalog opened
        for that lake URL in this process). A remote lake (``s3://``...) without a catalog URL is
        an :class:`~lakepipe.errors.InputError`: pass ``--catalog`` or set ``LAKEPIPE_CATALOG``.
        """
        return cls(catalog_url_for_lake(lake_url, catalog_url))

    # -- set-up -------------------------------------------------------------------------------------

    def _prepare(self, create: bool) -> int:
        with self._db.transaction() as conn:
            version = migrations.current_version(conn)
        migrations.check_not_newer(version, source=self.url)
        if version == 0 and not create:
            raise NotFoundError("the database holds no lakepipe catalog (open it with create=True)", self.url)
        latest = migrations.latest_version()
        if version < latest:
            applied = self._write(lambda conn: migrations.upgrade(conn, source=self.url))
            if applied:
                log.info("catalog %s: schema now v%d (applied %s)", self.url, latest, applied)
        return latest

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction, retrying on deadlock or lock timeouts."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._db.transaction(write=True) as conn:
                    return work(conn)
            except DBAPIError as exc:
                sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
                locked = self._db.dialect == "sqlite" and "locked" in str(exc.orig).lower()
                if attempt == _ATTEMPTS or not (sqlstate in _RETRY_SQLSTATES or locked):
                    raise
                delay = random.uniform(0.05, 0.2) * attempt
                log.warning("catalog %s: transaction retried after %s", self.url, _reason(exc))
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Release pooled connections (an in-memory catalog keeps its data)."""
        self._db.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- publishing ---------------------------------------------------------------------------------

    def _insert(self, replace: bool) -> Any:
        dialect = postgresql if self._db.dialect == "postgresql" else sqlite
        stmt = dialect.insert(outputs)
        key = [outputs.c[name] for name in OUTPUT_KEY]
        if replace:  # the new data and provenance; the key (and the row id) stay
            new = {c: stmt.excluded[c] for c in _REPLACED_COLUMNS}
            return stmt.on_conflict_do_update(index_elements=key, set_=new).returning(outputs.c.id)
        return stmt.on_conflict_do_nothing(index_elements=key).returning(outputs.c.id)

    def register(
        self, records: Iterable[OutputRecord], *, run_id: str | None = None, replace: bool = False
    ) -> RegisterResult:
        """Publish ``records`` in one transaction; already published keys are skipped, not duplicated.

        Parameters
        ----------
        records
            Outputs whose data are already written.
        run_id
            Run (from :meth:`start_run`) to attach every record to; overrides the records' own.
        replace
            Replace outputs already published under the same keys (a recomputation): their rows
            then point to the new data, run and time, in the same transaction as the new rows.

        Returns
        -------
        RegisterResult
            Numbers inserted, skipped and replaced, ids of the inserted and replaced rows.
        """
        recs = as_records(records)
        if not recs:
            return RegisterResult(0, 0)
        if run_id is not None:
            check_run_id(run_id)
        now = datetime.now(UTC)
        rows = []
        for rec in recs:
            row = rec.to_row()
            if run_id is not None:
                row["run_id"] = run_id
            if row["created"] is None:
                row["created"] = now
            rows.append(row)
        # One global order for every writer: concurrent PostgreSQL transactions then wait on each
        # other's unique-key locks in the same order and cannot deadlock.
        rows.sort(key=lambda r: tuple(r[name] for name in OUTPUT_KEY))
        run_ids = sorted({r["run_id"] for r in rows} - {None})
        stmt = self._insert(replace)
        if replace:  # one row per key: the last record of a key wins
            rows = list({tuple(r[name] for name in OUTPUT_KEY): r for r in rows}.values())

        def work(conn: Connection) -> tuple[list[int], int]:
            if run_ids:
                known = set(conn.scalars(select(runs_table.c.run_id).where(runs_table.c.run_id.in_(run_ids))))
                missing = [r for r in run_ids if r not in known]
                if missing:
                    raise NotFoundError(f"unknown run id {missing[0]!r} (use start_run first)", self.url)
            existing = self._existing_in(conn, rows) if replace else 0
            ids: list[int] = []
            for chunk in _chunks(rows):
                ids.extend(conn.execute(stmt, list(chunk)).scalars().all())
            return ids, existing

        ids, replaced = self._write(work)
        inserted = len(ids) - replaced
        result = RegisterResult(
            inserted=inserted, skipped=len(recs) - len(ids), ids=tuple(sorted(ids)), replaced=replaced
        )
        log.info("catalog %s: %s%s", self.url, result, f" (run {run_id})" if run_id else "")
        return result

    @staticmethod
    def _existing_in(conn: Connection, rows: list[dict[str, Any]]) -> int:
        """How many of ``rows``' keys are already in the table (inside the caller's transaction)."""
        n = 0
        for chunk in _chunks(rows):
            hashes = sorted({r["inputs_hash"] for r in chunk})
            stmt = select(*(outputs.c[name] for name in OUTPUT_KEY)).where(outputs.c.inputs_hash.in_(hashes))
            found = {tuple(row) for row in conn.execute(stmt)}
            n += sum(tuple(r[name] for name in OUTPUT_KEY) in found for r in chunk)
        return n

    def existing_keys(self, method: str, keys: Iterable[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """Which ``(statistic, inputs_hash, params_hash)`` keys of ``method`` are already published.

        Pipelines call this before computing, to skip outputs a previous run published.
        """
        wanted = {tuple(k) for k in keys}
        if not wanted:
            return set()
        found: set[tuple[str, str, str]] = set()
        statistics = sorted({k[0] for k in wanted})
        hashes = sorted({k[1] for k in wanted})
        cols = (outputs.c.statistic, outputs.c.inputs_hash, outputs.c.params_hash)
        with self._db.transaction() as conn:
            for chunk in _chunks(hashes):
                stmt = select(*cols).where(
                    outputs.c.method == method,
                    outputs.c.status == "published",
                    outputs.c.statistic.in_(statistics),
                    outputs.c.inputs_hash.in_(list(chunk)),
                )
                found.update(tuple(row) for row in conn.execute(stmt))
        return found & wanted

    def missing(self, records: Iterable[OutputRecord]) -> list[OutputRecord]:
        """The records of ``records`` not published yet (in their order): what a run must compute."""
        recs = as_records(records)
        published: set[tuple[str, ...]] = set()
        for method in sorted({r.method for r in recs}):
            keys = self.existing_keys(method, [r.skip_key for r in recs if r.method == method])
            published.update((method, *k) for k in keys)
        return [r for r in recs if r.key not in published]

    # -- runs ---------------------------------------------------------------------------------------

    def start_run(self, command: str, params: dict[str, Any]) -> str:
        """Record the start of a run and return its id (credentials in the command are redacted)."""
        try:
            plain = _redact_values(jsonable(params or {}))
        except (TypeError, ValueError) as exc:
            raise InputError(f"run parameters cannot be stored as JSON: {exc}") from None
        run_id = uuid.uuid4().hex
        row = {
            "run_id": run_id,
            "command": redact_text(str(command)),
            "params": canonical_json(plain),
            "started": datetime.now(UTC),
            "status": "running",
            "lakepipe_version": __version__,
        }
        self._write(lambda conn: conn.execute(runs_table.insert().values(**row)))
        log.info("catalog %s: run %s started: %s", self.url, run_id, row["command"])
        return run_id

    def finish_run(self, run_id: str, n_outputs: int, n_skipped: int, status: str = "finished") -> None:
        """Record the end of run ``run_id`` with its counts."""
        if status not in RUN_STATUSES:
            raise InputError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
        values = {
            "finished": datetime.now(UTC),
            "n_outputs": int(n_outputs),
            "n_skipped": int(n_skipped),
            "status": status,
        }
        stmt = runs_table.update().where(runs_table.c.run_id == run_id).values(**values)
        if self._write(lambda conn: conn.execute(stmt).rowcount) == 0:
            raise NotFoundError(f"unknown run id {run_id!r}", self.url)
        log.info(
            "catalog %s: run %s %s (%d outputs, %d skipped)", self.url, run_id, status, n_outputs, n_skipped
        )

    def runs(self) -> pd.DataFrame:
        """Every run, oldest first, with ``params`` parsed back to dicts."""
        import pandas as pd

        cols = list(runs_table.c)
        with self._db.transaction() as conn:
            stmt = select(*cols).order_by(runs_table.c.started, runs_table.c.run_id)
            rows = [tuple(row) for row in conn.execute(stmt)]
        df = pd.DataFrame.from_records(rows, columns=[c.name for c in cols])
        df["params"] = [_loads(v) for v in df["params"]]
        for name in ("started", "finished"):
            df[name] = pd.to_datetime(df[name], utc=True)
        return df

    # -- reading ------------------------------------------------------------------------------------

    def _where(self, filters: dict[str, Any]) -> list[ColumnElement[bool]]:
        unknown = sorted(set(filters) - set(QUERY_FILTERS))
        if unknown:
            raise InputError(f"unknown catalog filter {unknown[0]!r}; use one of {', '.join(QUERY_FILTERS)}")
        clauses = []
        for name, value in filters.items():
            if value is None:
                continue
            values = [value] if isinstance(value, (str, int)) else list(value)
            if name in _ENTITY_FILTERS:
                values = [check_entity(str(v), _ENTITY_FILTERS[name]) for v in values]
            else:
                values = [str(v) for v in values]
            col = outputs.c[name]
            clauses.append(col == values[0] if len(values) == 1 else col.in_(values))
        return clauses

    def _order(self) -> list[Any]:
        pg = self._db.dialect == "postgresql"
        keys = [outputs.c[n].collate("C") if pg else outputs.c[n] for n in _ORDER]
        return [k.asc().nulls_first() for k in keys] + [outputs.c.id.asc()]

    def query(self, **filters: str | Iterable[str] | None) -> pd.DataFrame:
        """Published outputs matching ``filters``, as a DataFrame.

        Parameters
        ----------
        **filters
            Any of :data:`QUERY_FILTERS`; a value is a string or a list of strings (any of them);
            ``None`` means no filter. ``status`` defaults to ``"published"``. Participant, session
            and label values are checked like BIDS entities (a ``sub-`` prefix is accepted).

        Returns
        -------
        pandas.DataFrame
            One row per output, every column of the ``outputs`` table, ordered by participant,
            session, label, statistic, id (missing values first, byte order on every backend);
            ``params``, ``inputs`` and ``shape`` parsed from JSON, ``created`` in UTC.
        """
        import pandas as pd

        filters.setdefault("status", "published")
        cols = list(outputs.c)
        stmt = select(*cols).where(and_(True, *self._where(filters))).order_by(*self._order())
        with self._db.transaction() as conn:
            rows = [tuple(row) for row in conn.execute(stmt)]
        df = pd.DataFrame.from_records(rows, columns=[c.name for c in cols])
        for name in _JSON_COLUMNS:
            df[name] = [_loads(v) for v in df[name]]
        df["shape"] = [None if v is None else tuple(v) for v in df["shape"]]
        df["created"] = pd.to_datetime(df["created"], utc=True)
        return df

    def lookup(self, method: str, keys: Iterable[tuple[str, str, str]]) -> pd.DataFrame:
        """Published rows of ``method`` with these ``(statistic, inputs_hash, params_hash)`` keys,
        in the order of ``keys`` (keys not published are left out); columns as :meth:`query`."""
        import pandas as pd

        wanted = list(dict.fromkeys(tuple(k) for k in keys))
        cols = list(outputs.c)
        found: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        with self._db.transaction() as conn:
            for chunk in _chunks(sorted({k[1] for k in wanted})):
                stmt = select(*cols).where(
                    outputs.c.method == method,
                    outputs.c.status == "published",
                    outputs.c.inputs_hash.in_(list(chunk)),
                )
                for row in conn.execute(stmt):
                    rec = row._mapping
                    found[(rec["statistic"], rec["inputs_hash"], rec["params_hash"])] = tuple(row)
        rows = [found[k] for k in wanted if k in found]
        df = pd.DataFrame.from_records(rows, columns=[c.name for c in cols])
        for name in _JSON_COLUMNS:
            df[name] = [_loads(v) for v in df[name]]
        df["shape"] = [None if v is None else tuple(v) for v in df["shape"]]
        df["created"] = pd.to_datetime(df["created"], utc=True)
        return df

    def count(self, **filters: str | Iterable[str] | None) -> int:
        """Number of outputs matching ``filters`` (same filters as :meth:`query`)."""
        filters.setdefault("status", "published")
        stmt = select(func.count()).select_from(outputs).where(and_(True, *self._where(filters)))
        with self._db.transaction() as conn:
            return int(conn.scalar(stmt) or 0)

    def get(self, id: int) -> dict[str, Any]:
        """Row ``id`` as a dict (JSON columns parsed); :class:`~lakepipe.errors.NotFoundError` if absent."""
        if isinstance(id, bool) or not isinstance(id, int):
            raise InputError(f"output id must be an integer, not {id!r}")
        with self._db.transaction() as conn:
            row = conn.execute(select(outputs).where(outputs.c.id == id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no output with id {id}", self.url)
        return _parse_json_columns(dict(row))

    def store_uris(self) -> set[str]:
        """Every store URI the catalog references (what garbage collection must keep)."""
        with self._db.transaction() as conn:
            return set(conn.scalars(select(outputs.c.store_uri).distinct()))

    def summary(self, **filters: str | Iterable[str] | None) -> pd.DataFrame:
        """Counts of published outputs by kind, method, cohort, atlas, connectome and statistic.

        Columns: those six, then ``n_outputs``, ``n_participants`` and ``last_created``.
        """
        import pandas as pd

        filters.setdefault("status", "published")
        group = [outputs.c[n] for n in ("kind", "method", "cohort", "atlas", "connectome", "statistic")]
        stmt = (
            select(
                *group,
                func.count().label("n_outputs"),
                func.count(distinct(outputs.c.participant)).label("n_participants"),
                func.max(outputs.c.created).label("last_created"),
            )
            .where(and_(True, *self._where(filters)))
            .group_by(*group)
            .order_by(*[c.asc().nulls_first() for c in group])
        )
        with self._db.transaction() as conn:
            rows = [tuple(row) for row in conn.execute(stmt)]
        columns = [c.name for c in group] + ["n_outputs", "n_participants", "last_created"]
        df = pd.DataFrame.from_records(rows, columns=columns)
        df["last_created"] = pd.to_datetime(df["last_created"], utc=True)
        return df

    # -- display ------------------------------------------------------------------------------------

    def _counts(self) -> tuple[int, int] | None:
        try:
            with self._db.transaction() as conn:
                published = outputs.c.status == "published"
                n_out = conn.scalar(select(func.count()).select_from(outputs).where(published))
                n_runs = conn.scalar(select(func.count()).select_from(runs_table))
            return int(n_out or 0), int(n_runs or 0)
        except DBAPIError:
            return None

    def __repr__(self) -> str:
        counts = self._counts()
        state = "unreachable" if counts is None else f"{counts[0]} outputs, {counts[1]} runs"
        return f"<Catalog {self.url} schema v{self.schema_version}: {state}>"

    def _repr_html_(self) -> str:
        counts = self._counts()
        head = (
            f"<b>lakepipe catalog</b> <code>{html.escape(self.url)}</code><br>"
            f"schema v{self.schema_version} · {self._db.dialect} · "
        )
        if counts is None:
            return head + "unreachable"
        head += f"{counts[0]} published outputs · {counts[1]} runs"
        if counts[0] == 0:
            return head
        table = self.summary().head(50).to_html(index=False, na_rep="", escape=True)
        return f"<div>{head}{table}</div>"
