"""Catalog API on real SQLite and PostgreSQL databases: publish, query, runs, security, lake defaults."""

from __future__ import annotations

import random
from datetime import UTC
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from lakepipe.catalog import (
    CATALOG_ENV,
    Catalog,
    OutputRecord,
    canonical_json,
    check_store_uri,
    content_hash,
    redact_url,
    schema,
)
from lakepipe.catalog.urls import redact_text
from lakepipe.errors import EnvironmentFailure, InputError, NotFoundError


def afnm(
    i: int,
    *,
    label: str = "stroke",
    atlas: str = "Schaefer100",
    session: str | None = None,
    statistic: str = "score",
    params: dict | None = None,
    **kw,
) -> OutputRecord:
    """An AFNM score record for lesion number ``i``."""
    return OutputRecord(
        kind="derivative",
        method="afnm",
        statistic=statistic,
        cohort="demo",
        participant=f"{i:03d}",
        session=session,
        label=label,
        atlas=atlas,
        params=params if params is not None else {"weighting": "fractional", "matrix": "fcgroupz"},
        inputs={"lesion": content_hash(f"lesion-{i}"), "matrix": content_hash("fc")},
        store_uri=f"derivatives/afnm/atlas-{atlas}.zarr",
        store_index=i,
        shape=(100,),
        **kw,
    )


# -- publish ----------------------------------------------------------------------------------------


def test_register_is_idempotent(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    first = cat.register([afnm(i) for i in range(10)])
    assert (first.inserted, first.skipped, len(first.ids)) == (10, 0, 10)
    again = cat.register([afnm(i) for i in range(10)])
    assert (again.inserted, again.skipped, again.ids) == (0, 10, ())
    mixed = cat.register([afnm(i) for i in range(5, 15)] + [afnm(14), afnm(20), afnm(20)])
    assert (mixed.inserted, mixed.skipped) == (6, 7)
    assert cat.count() == 16
    other = cat.register([afnm(0, params={"weighting": "binary", "matrix": "fcgroupz"})])
    assert other.inserted == 1  # same inputs, other parameters: a new output
    assert cat.count() == 17
    assert cat.register([]).total == 0
    assert "registered 0" in str(again)


def test_identical_inputs_of_two_participants_are_two_outputs(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    same = {"lesion": content_hash(b"the same mask bytes")}
    recs = [
        OutputRecord(
            kind="lesion",
            method="ingest",
            statistic="mask",
            cohort="demo",
            participant=p,
            label="stroke",
            inputs=same,
            store_uri="lesions/demo.zarr",
            store_index=p,
        )
        for p in ("01", "02")
    ]
    assert recs[0].inputs == recs[1].inputs and recs[0].key != recs[1].key
    assert cat.register(recs).inserted == 2
    assert cat.register(recs).skipped == 2


def test_register_is_one_transaction(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    good = [afnm(i) for i in range(5)]
    with pytest.raises(NotFoundError, match="unknown run id"):
        cat.register(good + [afnm(9, run_id="nosuchrun")])
    assert cat.count() == 0  # nothing of the failed batch is visible
    with pytest.raises(TypeError):
        cat.register([*good, {"kind": "derivative"}])  # type: ignore[list-item]
    assert cat.count() == 0


def test_query_filters_and_order(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    records = [
        afnm(i, label=lab, session=ses, statistic=stat)
        for i in (3, 1, 2)
        for lab in ("stroke", "tbi")
        for ses in (None, "2", "1")
        for stat in ("score", "zscore")
    ]
    records += [afnm(i, atlas="Glasser360") for i in range(3)]
    records.append(
        OutputRecord(
            kind="derivative",
            method="parcellate",
            statistic="fcgroupz",
            atlas="Schaefer100",
            connectome="GSP1000",
            store_uri="derivatives/parcellate/atlas-Schaefer100.zarr",
        )
    )
    random.Random(0).shuffle(records)
    cat.register(records)

    df = cat.query(method="afnm", atlas="Schaefer100")
    assert len(df) == 3 * 2 * 3 * 2
    keys = list(zip(df.participant, df.session.fillna(""), df.label, df.statistic, strict=True))
    assert keys == sorted(keys)  # missing session first, then byte order
    assert pd.isna(df.session.iloc[0])
    assert set(df.columns) >= {"id", "params", "inputs", "params_hash", "store_uri", "store_index", "created"}
    assert df.params.iloc[0] == {"weighting": "fractional", "matrix": "fcgroupz"}
    assert set(df.inputs.iloc[0]) == {"lesion", "matrix"}
    assert df["shape"].iloc[0] == (100,)
    assert str(df.created.dt.tz) == "UTC"
    assert df.equals(cat.query(method="afnm", atlas="Schaefer100"))  # deterministic

    assert len(cat.query(participant="sub-001", atlas="Schaefer100")) == 12
    assert len(cat.query(participant=["001", "002"], label="tbi", session="1")) == 4
    assert len(cat.query(statistic=["score"], atlas=("Glasser360",))) == 3
    assert len(cat.query(session=[])) == 0
    assert cat.query(connectome="GSP1000").statistic.tolist() == ["fcgroupz"]
    assert len(cat.query(params_hash=afnm(0).params_hash)) == len(records) - 1
    assert cat.query(kind="atlas").empty and "participant" in cat.query(kind="atlas").columns
    with pytest.raises(InputError, match="unknown catalog filter"):
        cat.query(subject="001")
    with pytest.raises(InputError, match="BIDS-safe"):
        cat.query(label="x' OR '1'='1")


def test_existing_keys_and_get(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    done = [afnm(i) for i in range(4)]
    result = cat.register(done)
    todo = [afnm(i) for i in range(8)]
    keys = [r.skip_key for r in todo]
    assert cat.existing_keys("afnm", keys) == set(keys[:4])
    assert cat.existing_keys("fnm", keys) == set()
    assert cat.existing_keys("afnm", []) == set()
    assert cat.missing(todo) == todo[4:]

    row = cat.get(result.ids[0])
    assert row["method"] == "afnm" and isinstance(row["params"], dict)
    assert row["created"].tzinfo == UTC
    rebuilt = OutputRecord.from_row(row)
    assert rebuilt.key in {r.key for r in done}
    with pytest.raises(NotFoundError):
        cat.get(10**9)
    assert cat.store_uris() == {"derivatives/afnm/atlas-Schaefer100.zarr"}


def test_runs_and_summary(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    run = cat.start_run("lakepipe run afnm --cohort demo", {"cohort": "demo", "atlas": ("Schaefer100",)})
    res = cat.register([afnm(i) for i in range(6)], run_id=run)
    cat.finish_run(run, res.inserted, res.skipped)
    cat.register([afnm(i, atlas="Glasser360") for i in range(2)])
    runs = cat.runs()
    assert runs.run_id.tolist() == [run]
    assert runs.loc[0, "status"] == "finished" and runs.loc[0, "n_outputs"] == 6
    assert runs.loc[0, "params"] == {"cohort": "demo", "atlas": ["Schaefer100"]}
    assert runs.loc[0, "finished"] >= runs.loc[0, "started"]
    assert len(cat.query(run_id=run)) == 6
    with pytest.raises(NotFoundError):
        cat.finish_run("nosuchrun", 0, 0)
    with pytest.raises(InputError):
        cat.finish_run(run, 0, 0, status="weird")

    summary = cat.summary()
    assert summary[["atlas", "n_outputs", "n_participants"]].values.tolist() == [
        ["Glasser360", 2, 2],
        ["Schaefer100", 6, 6],
    ]
    text = repr(cat)
    assert "schema v1" in text and "8 outputs, 1 runs" in text
    assert "Schaefer100" in cat._repr_html_()


# -- security -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["../x", "a b", "a/b", "", "x;drop", "a_b", "é"])
@pytest.mark.parametrize("field", ["participant", "session", "label"])
def test_unsafe_entities_rejected(field: str, value: str) -> None:
    values = {"participant": "01", "session": "1", "label": "stroke", field: value}
    with pytest.raises(InputError, match="not BIDS-safe"):
        OutputRecord(kind="derivative", method="afnm", statistic="score", store_uri="x.zarr", **values)


def test_entities_normalised() -> None:
    rec = OutputRecord(
        kind="lesion",
        method="ingest",
        statistic="mask",
        participant="sub-01",
        session="ses-2",
        label="label-stroke",
        store_uri="lesions/demo.zarr",
    )
    assert (rec.participant, rec.session, rec.label) == ("01", "2", "stroke")
    with pytest.raises(InputError):
        OutputRecord(kind="thing", method="ingest", statistic="mask", store_uri="x.zarr")
    with pytest.raises(InputError):
        OutputRecord(kind="lesion", method="../up", statistic="mask", store_uri="x.zarr")
    with pytest.raises(InputError):
        OutputRecord(kind="lesion", method="ingest", statistic="mask", atlas="a/b", store_uri="x.zarr")
    with pytest.raises(AttributeError):  # frozen (dataclasses.FrozenInstanceError)
        rec.label = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "uri",
    [
        "s3://AKIAKEY:wJalr/SECRET+key@bucket/lake/x.zarr",
        "postgresql://u:hunter2@db/x",
        "/abs/path.zarr",
        "file:///abs/path.zarr",
        "s3://bucket/lake/x.zarr",
        "../outside.zarr",
        "a/../../b.zarr",
        "x.zarr?token=abc",
        "a b.zarr",
        "~/x.zarr",
        "",
    ],
)
def test_store_uri_refused(uri: str) -> None:
    with pytest.raises(InputError) as err:
        check_store_uri(uri)
    for secret in ("SECRET", "hunter2"):
        assert secret not in str(err.value)
    with pytest.raises(InputError):
        OutputRecord(kind="derivative", method="afnm", statistic="score", store_uri=uri)


def test_store_uri_accepted() -> None:
    for uri in ("lesions/demo.zarr", "derivatives/afnm/atlas-Schaefer100_desc-x.zarr", "a.zarr/"):
        assert check_store_uri(uri) == uri


def test_redaction() -> None:
    cases = {
        "postgresql+psycopg://me:hunter2@db:5432/lake": "postgresql+psycopg://me:***@db:5432/lake",
        "postgresql://me:hun@ter2@db/lake?sslpassword=x&sslmode=require": "postgresql://me:***@db/lake?sslpassword=***&sslmode=require",
        "s3://AKIA:se/cr+et@bucket/lake": "s3://AKIA:***@bucket/lake",
        "s3://bucket/lake": "s3://bucket/lake",
        "postgresql://me@db/lake": "postgresql://me@db/lake",
        "sqlite:////tmp/catalog.sqlite": "sqlite:////tmp/catalog.sqlite",
        "https://h/x.zarr?X-Amz-Signature=abc&a=1": "https://h/x.zarr?X-Amz-Signature=***&a=1",
        "./lake": "./lake",
    }
    for url, expected in cases.items():
        assert redact_url(url) == expected
    assert redact_text("--catalog postgresql://u:pw@h/db --lake s3://k:s@b/l") == (
        "--catalog postgresql://u:***@h/db --lake s3://k:***@b/l"
    )


def test_no_credentials_stored_or_shown(catalog_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="lakepipe")
    secret = "Tr0ub4dor&3"
    with pytest.raises(InputError, match="credentials"):
        afnm(1, params={"matrix_url": f"s3://AKIA:{secret}@bucket/m.zarr"})
    cat = Catalog(catalog_url)
    run = cat.start_run(
        f"lakepipe run afnm --catalog postgresql://me:{secret}@db/lake",
        {"catalog": f"postgresql://me:{secret}@db/lake", "lake": "s3://bucket/lake"},
    )
    cat.register([afnm(1)], run_id=run)
    cat.finish_run(run, 1, 0)
    engine = sa.create_engine(catalog_url)
    try:
        with engine.connect() as conn:
            dump = " ".join(
                str(row)
                for table in (schema.outputs, schema.runs, schema.schema_version)
                for row in conn.execute(sa.select(table))
            )
    finally:
        engine.dispose()
    assert secret not in dump and "me:***@db" in dump
    url_password = sa.make_url(catalog_url).password
    shown = repr(cat) + cat._repr_html_() + cat.url + caplog.text
    for text in (secret, url_password):
        if text:
            assert text not in dump and text not in shown
    if url_password:
        assert ":***@" in repr(cat)


# -- opening ----------------------------------------------------------------------------------------


def test_for_lake_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    lake = tmp_path / "lake"
    cat = Catalog.for_lake(str(lake))
    cat.register([afnm(1)])
    assert (lake / "catalog.sqlite").is_file()
    assert Catalog.for_lake(f"file://{lake}").count() == 1
    with sa.create_engine(f"sqlite:///{lake / 'catalog.sqlite'}").connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    monkeypatch.setenv(CATALOG_ENV, str(tmp_path / "elsewhere.sqlite"))
    assert Catalog.for_lake(str(lake)).count() == 0
    assert (tmp_path / "elsewhere.sqlite").is_file()


def test_for_lake_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    lake = f"memory://lake-{random.random():.12f}"
    Catalog.for_lake(lake).register([afnm(1), afnm(2)])
    assert Catalog.for_lake(lake + "/").count() == 2  # same lake, same in-process database
    assert Catalog.for_lake(lake + "x").count() == 0


def test_for_lake_remote_needs_url(catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    with pytest.raises(InputError, match=CATALOG_ENV) as err:
        Catalog.for_lake("s3://AKIA:supersecret@bucket/lake")
    assert "--catalog" in str(err.value) and "supersecret" not in str(err.value)
    Catalog.for_lake("s3://bucket/lake", catalog_url).register([afnm(1)])
    monkeypatch.setenv(CATALOG_ENV, catalog_url)
    assert Catalog.for_lake("s3://bucket/lake").count() == 1


def test_create_false_and_bad_urls(catalog_url: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        Catalog(catalog_url, create=False)
    Catalog(catalog_url)
    assert Catalog(catalog_url, create=False).schema_version == 1
    with pytest.raises(NotFoundError):
        Catalog(str(tmp_path / "missing.sqlite"), create=False)
    with pytest.raises(InputError, match="not supported"):
        Catalog("mysql://u:pw@localhost/db")
    # an unreachable server is the environment's failure (exit 1), not bad input; no password shown
    with pytest.raises(EnvironmentFailure, match="cannot open") as err:
        Catalog("postgresql://u:pw-not-shown@127.0.0.1:1/db")
    assert "pw-not-shown" not in str(err.value) and err.value.exit_code == 1


# -- hashing ----------------------------------------------------------------------------------------


def test_canonical_json_and_hashes() -> None:
    a = {"b": [1, 2.5], "a": {"y": True, "x": None}}
    b = {"a": {"x": None, "y": np.bool_(True)}, "b": (np.int64(1), np.float64(2.5))}
    assert canonical_json(a) == canonical_json(b) == '{"a":{"x":null,"y":true},"b":[1,2.5]}'
    assert content_hash(a) == content_hash(b) and len(content_hash(a)) == 64
    assert content_hash(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert canonical_json({"s": {3, 1, 2}, "p": Path("/x")}) == '{"p":"/x","s":[1,2,3]}'
    for bad in ({"x": float("nan")}, {1: "x"}, {"x": object()}):
        with pytest.raises((TypeError, ValueError)):
            canonical_json(bad)
    r1 = afnm(1, params={"matrix": "fcgroupz", "weighting": "fractional"})
    r2 = afnm(1, params={"weighting": "fractional", "matrix": "fcgroupz"})
    assert r1.params_hash == r2.params_hash == content_hash(r1.params)
    assert r1.inputs_hash == content_hash({"entities": r1.entities, "inputs": r1.inputs})
    assert r1.entities == {
        "kind": "derivative",
        "cohort": "demo",
        "participant": "001",
        "label": "stroke",
        "atlas": "Schaefer100",
    }
    assert r1.key == r2.key
    assert hash(r1) == hash(r2) and r1 == r2
