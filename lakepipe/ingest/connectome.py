"""Ingesting a connectome source (HDF5 batches, 4D NIfTI folder, parcel series) into
``connectomes/<name>.zarr``, streamed one subject at a time.

Series are stored centred and unit-norm per voxel plus their ``scale`` and ``mean`` (see
:mod:`lakepipe.io.stores.connectomes`). Subjects already registered are skipped, new ones appended;
every ``commit_every`` subjects the written ones are committed and registered, so a killed ingest
resumes there. Peak memory is a few copies of one subject's (time x voxel) array, whatever the
subject count.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lakepipe.bids import check_entity
from lakepipe.catalog import OutputRecord
from lakepipe.compute.correlation import center_unit
from lakepipe.errors import InputError
from lakepipe.ingest.result import IngestResult
from lakepipe.io import layout, stores
from lakepipe.io.bidsfind import DEFAULT_SPACE
from lakepipe.io.sources import ConnectomeSource, SubjectRef, open_source
from lakepipe.io.storage import exists, join, remove
from lakepipe.io.stores.connectomes import ConnectomeRows
from lakepipe.io.stores.rowtables import append_row_tables
from lakepipe.lake import Lake
from lakepipe.progress import progress
from lakepipe.runtime import RunContext
from lakepipe.space import grid_matches_space

log = logging.getLogger(__name__)


def subject_record(
    name: str,
    subject: str,
    fingerprint: str,
    store_uri: str,
    src: ConnectomeSource,
    options: dict[str, Any] | None = None,
) -> OutputRecord:
    """The catalog record of one ingested connectome subject (its source's recorded options, e.g. the
    cleaning, are parameters: a change gives another output)."""
    params: dict[str, Any] = {"connectome": name, "subject": subject, "storage": stores.STORAGE_CONVENTION}
    if options:
        params["options"] = options
    return OutputRecord(
        kind="connectome",
        method="ingest",
        connectome=name,
        statistic="timeseries",
        params=params,
        inputs={"source": fingerprint or subject},
        store_uri=store_uri,
        store_index=subject,
        shape=(src.n_time, src.n_features),
    )


def _ingest_subject(
    src: ConnectomeSource, ref: SubjectRef, rows: ConnectomeRows, row: int
) -> tuple[str, int]:
    """Read, clean, centre and store one subject in its row (runs on a worker; memory: one subject)."""
    data = src.read_checked(ref)
    unit, scale, mean = center_unit(data, axis=0)
    return ref.subject_id, rows.write(row, unit, scale, mean)


def ingest_connectome(
    lake: Lake,
    source: str | Path,
    *,
    name: str,
    source_format: str | None = None,
    space: str = DEFAULT_SPACE,
    dtype: str = "float32",
    commit_every: int = 32,
    run: RunContext | None = None,
    in_place: bool = False,
    **options: Any,
) -> IngestResult:
    """Ingest a connectome source folder into ``connectomes/<name>.zarr``, one Dask task per subject.

    Each task reads (and, for fMRIPrep derivatives, cleans) one subject and writes its own row of
    the store directly (local or object storage); every ``commit_every`` subjects the rows are
    committed and registered, so a killed command resumes there and a killed worker's subject is
    recomputed elsewhere. Memory per worker: one subject's (time x voxel) series.

    ``source_format`` names the format (``hdf5``, ``nifti``, ``parcels``, ``fmriprep``; detected from
    the folder by default); ``options`` go to the format (``mask=`` for a NIfTI folder, ``regions=``
    for parcel series, the cleaning options for fMRIPrep); the format's recorded options (cleaning,
    resampling) go into the store's metadata and each subject's record. ``dtype`` is the stored
    precision (``float32``, or ``float16`` to halve what every pass reads). ``in_place=True``
    registers HDF5 batches without copying their series (:mod:`lakepipe.ingest.inplace`).
    """
    import dask

    if in_place:
        from lakepipe.ingest.inplace import ingest_in_place

        if (source_format or "hdf5") != "hdf5" or options or dtype != "float32":
            raise InputError("--in-place reads HDF5 batches as they are: no other format, dtype or option")
        return ingest_in_place(lake, source, name=name, space=space, commit_every=commit_every, run=run)
    name = check_entity(name, "connectome")
    if dtype not in ("float32", "float16"):
        raise InputError(f"--dtype must be float32 or float16, not {dtype!r}")
    src = open_source(source, source_format=source_format, space=space, **options)
    src.space = space
    if src.kind == "voxel":
        assert src.geometry is not None
        if not grid_matches_space(src.geometry.grid, space):
            raise InputError(
                f"connectome grid {src.geometry.grid.shape} does not match space {space}", source
            )
    url = layout.connectome_store(lake.url, name)
    store_uri = layout.relative(lake.url, url)
    fresh = not exists(join(url, "zarr.json"))
    recorded = src.recorded_options()
    writer = stores.ConnectomeWriter(
        lake.url,
        name,
        kind=src.kind,
        n_time=src.n_time,
        geometry=src.geometry,
        regions=src.regions,
        space=space,
        source=str(source),
        dtype=dtype,
        options=recorded,
    )
    registered = set(lake.catalog.query(kind="connectome", connectome=name)["store_index"])
    committed = writer.subject_ids()
    fingerprints = {r.subject_id: r.fingerprint for r in src.subjects}
    done = set(committed)
    todo = [r for r in src.subjects if r.subject_id not in done]
    result = IngestResult(
        "connectome", name, store=url, skipped=[r.subject_id for r in src.subjects if r.subject_id in done]
    )

    def records(ids: list[str]) -> list[OutputRecord]:
        return [subject_record(name, s, fingerprints.get(s, ""), store_uri, src, recorded) for s in ids]

    with lake.joined_run(run, f"lakepipe ingest connectome {source}", {"name": name}) as ctx:
        # subjects committed to the store but not registered (killed between the two): register now
        orphans = [s for s in committed if s not in registered]
        if orphans:
            ctx.publish(records(orphans))
        try:
            for a in progress(range(0, len(todo), commit_every), desc=f"ingest {name}"):
                window = todo[a : a + commit_every]
                rows = writer.reserve(len(window))
                target = writer.rows()
                tasks = [
                    dask.delayed(_ingest_subject, pure=False)(src, ref, target, row)
                    for ref, row in zip(window, rows, strict=True)
                ]
                written = ctx.runtime.compute(*tasks, desc=f"ingest {name}")
                if hasattr(src, "row_tables"):  # per-row facts (HCP: task, run, events), before the commit
                    append_row_tables(url, src.row_tables(window))
                ids = writer.commit(
                    [sid for sid, _ in written],
                    [n for _, n in written],
                    [r.group or r.subject_id for r in window],
                )
                ctx.publish(records(ids))
                result.written.extend(ids)
        except BaseException:
            writer.rollback()  # drop uncommitted leftovers
            if fresh and not result.written:
                remove(url)
            raise
        ctx.count_skipped(len(result.skipped))
    log.info(result.summary())
    return result
