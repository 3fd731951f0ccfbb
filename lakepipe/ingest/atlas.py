"""Ingesting an atlas (label NIfTI plus its label table) into ``atlases/<name>.zarr``."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from lakepipe.bids import check_entity, parse_entities
from lakepipe.catalog import OutputRecord, content_hash
from lakepipe.errors import InputError
from lakepipe.ingest.result import IngestResult
from lakepipe.io import layout, stores
from lakepipe.io.bidsfind import DEFAULT_SPACE
from lakepipe.io.labels import check_labels_match, read_label_table
from lakepipe.io.nifti import load_label_volume
from lakepipe.lake import Lake
from lakepipe.runtime import RunContext
from lakepipe.space import Grid, grid_matches_space

log = logging.getLogger(__name__)


def _array_hash(volume: np.ndarray, grid: Grid) -> str:
    h = hashlib.sha256(np.ascontiguousarray(volume).tobytes())
    h.update(np.round(grid.affine, 6).tobytes())
    return h.hexdigest()


def ingest_atlas(
    lake: Lake,
    nifti: str | Path,
    *,
    labels: str | Path,
    name: str,
    space: str | None = None,
    run: RunContext | None = None,
) -> IngestResult:
    """Ingest a label volume and its label file (BIDS ``_dseg.txt`` or an index/name[/network] TSV)."""
    name = check_entity(name, "atlas")
    nifti = Path(nifti)
    ent = parse_entities(nifti.name)
    space = space or ent.get("tpl") or ent.get("space") or DEFAULT_SPACE
    volume, grid = load_label_volume(nifti)
    if not grid_matches_space(grid, space):
        raise InputError(f"grid {grid.shape} does not match the stated space {space}", nifti)
    table = read_label_table(labels)
    absent = check_labels_match(table, volume, labels)
    if absent:
        log.warning(
            "atlas %s: %d labelled region(s) have no voxel in the volume: %s", name, len(absent), absent[:10]
        )
    digest = content_hash({"dseg": _array_hash(volume, grid), "table": table.to_csv(index=False)})
    url = layout.atlas_store(lake.url, name)
    result = IngestResult("atlas", name, store=url)
    existing = lake.catalog.query(kind="atlas", atlas=name)
    if len(existing):
        if existing.iloc[0]["inputs"].get("atlas") != digest:
            raise InputError(
                f"atlas '{name}' is already in the lake with other content; choose another --name", nifti
            )
        result.skipped.append(name)
        return result
    with lake.joined_run(run, f"lakepipe ingest atlas {nifti}", {"name": name}) as ctx:
        stores.write_atlas(
            lake.url,
            name,
            volume,
            grid,
            table,
            space,
            {
                "source": str(nifti.name),
                "labels_source": str(Path(labels).name),
                "sha256": digest,
                "absent_labels": absent,
            },
        )
        ctx.publish(
            [
                OutputRecord(
                    kind="atlas",
                    method="ingest",
                    atlas=name,
                    statistic="dseg",
                    params={"atlas": name, "space": space},
                    inputs={"atlas": digest},
                    store_uri=layout.relative(lake.url, url),
                    store_index=name,
                    shape=tuple(grid.shape),
                )
            ]
        )
    result.written.append(name)
    log.info(result.summary())
    return result
