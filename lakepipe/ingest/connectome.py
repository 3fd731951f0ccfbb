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
from lakepipe.io.sources import ConnectomeSource, open_source
from lakepipe.io.storage import exists, join, remove
from lakepipe.lake import Lake
from lakepipe.progress import progress
from lakepipe.runtime import RunContext
from lakepipe.space import grid_matches_space

log = logging.getLogger(__name__)


def subject_record(
    name: str, subject: str, fingerprint: str, store_uri: str, src: ConnectomeSource
) -> OutputRecord:
    """The catalog record of one ingested connectome subject."""
    return OutputRecord(
        kind="connectome",
        method="ingest",
        connectome=name,
        statistic="timeseries",
        params={"connectome": name, "subject": subject, "storage": stores.STORAGE_CONVENTION},
        inputs={"source": fingerprint or subject},
        store_uri=store_uri,
        store_index=subject,
        shape=[src.n_time, src.n_features],
    )


def ingest_connectome(
    lake: Lake,
    source: str | Path,
    *,
    name: str,
    source_format: str | None = None,
    space: str = DEFAULT_SPACE,
    commit_every: int = 32,
    run: RunContext | None = None,
    **options: Any,
) -> IngestResult:
    """Stream a connectome source folder into ``connectomes/<name>.zarr``.

    ``source_format`` names the format (``hdf5``, ``nifti``, ``parcels``; detected from the folder
    by default); ``options`` go to the format (``mask=`` for a NIfTI folder, ``regions=`` for
    parcel series).
    """
    name = check_entity(name, "connectome")
    src = open_source(source, source_format=source_format, **options)
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
    writer = stores.ConnectomeWriter(
        lake.url,
        name,
        kind=src.kind,
        n_time=src.n_time,
        geometry=src.geometry,
        regions=src.regions,
        space=space,
        source=str(source),
    )
    registered = set(lake.catalog.query(kind="connectome", connectome=name)["store_index"])
    committed = writer.subject_ids()
    fingerprints = {r.subject_id: r.fingerprint for r in src.subjects}
    done = set(committed)
    todo = [r for r in src.subjects if r.subject_id not in done]
    result = IngestResult(
        "connectome", name, store=url, skipped=[r.subject_id for r in src.subjects if r.subject_id in done]
    )
    with lake.joined_run(run, f"lakepipe ingest connectome {source}", {"name": name}) as ctx:
        # subjects committed to the store but not registered (killed between the two): register now
        orphans = [s for s in committed if s not in registered]
        if orphans:
            ctx.publish([subject_record(name, s, fingerprints.get(s, ""), store_uri, src) for s in orphans])

        def flush() -> None:
            ids = writer.commit()
            if ids:
                ctx.publish([subject_record(name, s, fingerprints[s], store_uri, src) for s in ids])
                result.written.extend(ids)

        try:
            for ref, data in progress(src.iter_subjects(todo), total=len(todo), desc=f"ingest {name}"):
                unit, scale, mean = center_unit(data, axis=0)
                writer.write(ref.subject_id, unit, scale, mean)
                if len(writer.pending) >= commit_every:
                    flush()
            flush()
        except BaseException:
            writer.pending.clear()
            writer.commit()  # drop uncommitted leftovers
            if fresh and not result.written:
                remove(url)
            raise
        ctx.count_skipped(len(result.skipped))
    log.info(result.summary())
    return result
