"""Catalog schema versions: fresh databases match the tables, old ones are upgraded step by step."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from lakepipe.catalog import Catalog, OutputRecord, migrations, schema
from lakepipe.catalog.engines import open_engine
from lakepipe.errors import InputError


def _record(i: int) -> OutputRecord:
    return OutputRecord(
        kind="lesion",
        method="ingest",
        statistic="mask",
        cohort="demo",
        participant=f"{i:02d}",
        label="stroke",
        inputs={"source": f"{i:064x}"},
        store_uri="lesions/demo.zarr",
        store_index=f"sub-{i:02d}",
    )


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def _versions(url: str) -> list[int]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(sa.select(schema.schema_version.c.version).order_by("version")))
    finally:
        engine.dispose()


def _build_v1(url: str) -> None:
    """A database exactly as v1 of lakepipe left it, with data in it."""
    db = open_engine(url)
    with db.transaction(write=True) as conn:
        assert migrations.upgrade(conn, migrations.MIGRATIONS[:1]) == [1]
    db.dispose()
    Catalog(url).register([_record(i) for i in range(3)])


def test_fresh_database_matches_schema(catalog_url: str) -> None:
    Catalog(catalog_url)
    engine = _engine(catalog_url)
    try:
        insp = sa.inspect(engine)
        for table in schema.metadata.sorted_tables:
            cols = {c["name"]: c for c in insp.get_columns(table.name)}
            assert list(cols) == [c.name for c in table.columns], table.name
            for col in table.columns:
                assert cols[col.name]["nullable"] == col.nullable, (table.name, col.name)
        indexes = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("outputs")}
        for ix in schema.outputs.indexes:
            assert indexes[ix.name] == [c.name for c in ix.columns]
        uniques = insp.get_unique_constraints("outputs")
        assert [u["column_names"] for u in uniques] == [list(schema.OUTPUT_KEY)]
        fks = insp.get_foreign_keys("outputs")
        assert [(f["referred_table"], f["constrained_columns"]) for f in fks] == [("runs", ["run_id"])]
    finally:
        engine.dispose()
    assert _versions(catalog_url) == [1]


def _add_note(conn: sa.Connection) -> None:
    conn.execute(sa.text("ALTER TABLE outputs ADD COLUMN note TEXT"))


def _index_note(conn: sa.Connection) -> None:
    conn.execute(sa.text("CREATE INDEX ix_outputs_note ON outputs (note)"))


def test_old_version_is_upgraded_in_order(catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _build_v1(catalog_url)
    calls: list[int] = []

    def step(version: int, fn):
        def apply(conn: sa.Connection) -> None:
            calls.append(version)
            fn(conn)

        return migrations.Migration(version, f"test step {version}", apply)

    newer = (*migrations.MIGRATIONS, step(2, _add_note), step(3, _index_note))
    monkeypatch.setattr(migrations, "MIGRATIONS", newer)
    cat = Catalog(catalog_url)
    assert cat.schema_version == 3 and calls == [2, 3]
    assert _versions(catalog_url) == [1, 2, 3]
    assert cat.count() == 3  # data kept
    engine = _engine(catalog_url)
    try:
        insp = sa.inspect(engine)
        assert "note" in {c["name"] for c in insp.get_columns("outputs")}
        assert "ix_outputs_note" in {ix["name"] for ix in insp.get_indexes("outputs")}
    finally:
        engine.dispose()
    Catalog(catalog_url)  # already current: nothing re-applied
    assert calls == [2, 3]

    monkeypatch.setattr(migrations, "MIGRATIONS", newer[:1])
    with pytest.raises(InputError, match="newer than this lakepipe"):
        Catalog(catalog_url)


def test_failed_step_leaves_old_version(catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _build_v1(catalog_url)

    def broken(conn: sa.Connection) -> None:
        _add_note(conn)
        raise RuntimeError("step failed halfway")

    monkeypatch.setattr(
        migrations, "MIGRATIONS", (*migrations.MIGRATIONS, migrations.Migration(2, "broken", broken))
    )
    with pytest.raises(RuntimeError, match="halfway"):
        Catalog(catalog_url)
    assert _versions(catalog_url) == [1]
    engine = _engine(catalog_url)
    try:
        assert "note" not in {c["name"] for c in sa.inspect(engine).get_columns("outputs")}
    finally:
        engine.dispose()
    monkeypatch.setattr(
        migrations, "MIGRATIONS", (*migrations.MIGRATIONS[:1], migrations.Migration(2, "fixed", _add_note))
    )
    assert Catalog(catalog_url).schema_version == 2


def test_steps_must_be_numbered_in_order() -> None:
    noop = lambda conn: None  # noqa: E731
    with pytest.raises(ValueError, match="numbered"):
        migrations.latest_version([migrations.Migration(1, "a", noop), migrations.Migration(3, "b", noop)])
    assert migrations.latest_version() == len(migrations.MIGRATIONS)
