"""Load: several writer processes publish overlapping outputs at once; none lost, none duplicated."""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from lakepipe.catalog import Catalog, OutputRecord, content_hash, schema

N_WRITERS = 4
N_OUTPUTS = 2400  # distinct outputs
HOT = 40  # outputs every writer publishes in its first transaction, all at the same moment
BATCH = 50


def _record(u: int) -> OutputRecord:
    return OutputRecord(
        kind="derivative",
        method="afnm",
        statistic="score",
        cohort="load",
        participant=f"P{u:05d}",
        label="stroke",
        atlas="Schaefer100",
        params={"weighting": "fractional"},
        inputs={"lesion": content_hash(f"lesion-{u}"), "matrix": content_hash("fc")},
        store_uri="derivatives/afnm/atlas-Schaefer100.zarr",
        store_index=u,
        shape=(100,),
    )


def _share(writer: int) -> list[int]:
    """Outputs a writer publishes: its own quarter, a third of its neighbour's, the hot set, repeats."""
    own = [u for u in range(HOT, N_OUTPUTS) if u % N_WRITERS == writer]
    neighbour = [u for u in range(HOT, N_OUTPUTS) if u % N_WRITERS == (writer + 1) % N_WRITERS and u % 3 == 0]
    rest = own + neighbour + own[:10]  # the last ones repeat within the run
    random.Random(writer).shuffle(rest)
    return list(range(HOT)) + rest


def _writer(url: str, writer: int, barrier, results) -> None:
    """Child process: open the (possibly not yet created) catalog, then publish in batches."""
    try:
        records = [_record(u) for u in _share(writer)]
        barrier.wait(timeout=60)
        start = time.perf_counter()
        cat = Catalog(url)  # all writers create/migrate the schema at once
        run = cat.start_run(f"load writer {writer}", {"writer": writer})
        inserted = skipped = 0
        for i in range(0, len(records), BATCH):
            res = cat.register(records[i : i + BATCH], run_id=run)
            inserted += res.inserted
            skipped += res.skipped
        cat.finish_run(run, inserted, skipped)
        results.put((writer, inserted, skipped, time.perf_counter() - start, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put((writer, 0, 0, 0.0, f"{type(exc).__name__}: {exc}"))


@pytest.mark.timeout(180)
def test_concurrent_writers_lose_and_duplicate_nothing(catalog_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(N_WRITERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(catalog_url, w, barrier, results)) for w in range(N_WRITERS)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    out = [results.get(timeout=150) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    wall = time.perf_counter() - t0
    errors = [e for *_, e in out if e]
    assert not errors, errors

    attempted = sum(len(_share(w)) for w in range(N_WRITERS))
    inserted = sum(r[1] for r in out)
    skipped = sum(r[2] for r in out)
    assert attempted >= 3000
    assert inserted == N_OUTPUTS and skipped == attempted - N_OUTPUTS

    cat = Catalog(catalog_url)
    df = cat.query(method="afnm", cohort="load")
    assert len(df) == N_OUTPUTS == cat.count()
    assert sorted(map(int, df.store_index)) == list(range(N_OUTPUTS))  # none lost
    assert df.set_index(["statistic", "inputs_hash", "params_hash"]).index.is_unique  # none doubled
    assert df.participant.is_monotonic_increasing
    runs = cat.runs()
    assert len(runs) == N_WRITERS and (runs.status == "finished").all()
    assert runs.n_outputs.sum() == N_OUTPUTS
    engine = sa.create_engine(catalog_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(schema.schema_version)) == 1
    finally:
        engine.dispose()
    slowest = max(r[3] for r in out)
    print(
        f"\n{N_WRITERS} writers, {attempted} records ({N_OUTPUTS} distinct): "
        f"{wall:.1f} s wall incl. process start, slowest writer {slowest:.2f} s"
    )
    assert wall < 60


def _threads(cat: Catalog) -> None:
    """Dask-style threads publishing overlapping outputs through one Catalog object."""
    chunks = [[_record(u) for u in range(start, start + 60)] for start in range(0, 300, 30)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(cat.register, chunks))
    assert sum(r.inserted for r in results) == 330 and cat.count() == 330
    assert sum(r.skipped for r in results) == 600 - 330


def test_threads_share_one_catalog(catalog_url: str) -> None:
    _threads(Catalog(catalog_url))


def test_threads_share_one_memory_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAKEPIPE_CATALOG", raising=False)
    _threads(Catalog.for_lake(f"memory://threads-{random.random():.12f}"))
