"""Ingesting an atlas into ``atlases/<name>.zarr``: a label NIfTI plus its label table, or a 4D
probabilistic NIfTI (one probability map per volume) plus a table with one row per volume.

A probabilistic atlas keeps its maps (one Zarr chunk per map, read one at a time) and gets its
maximum-probability label volume (each voxel labelled with its most probable region, 0 where every
map is 0; ties: the earlier volume), so label-atlas methods (parcellate, afnm) work on it as well and
``lakepipe assign`` reports siibra's metrics with the probabilities."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lakepipe.bids import check_entity, parse_entities
from lakepipe.catalog import OutputRecord, content_hash
from lakepipe.errors import InputError
from lakepipe.ingest.result import IngestResult
from lakepipe.io import layout, stores
from lakepipe.io.bidsfind import DEFAULT_SPACE
from lakepipe.io.labels import check_labels_match, read_label_table
from lakepipe.io.nifti import check_affine, load_image, load_label_volume, read_data
from lakepipe.lake import Lake
from lakepipe.runtime import RunContext
from lakepipe.space import Grid, grid_matches_space

log = logging.getLogger(__name__)
#: probabilistic atlases up to this size are read into memory at once
MAX_IN_MEMORY_BYTES = 2 * 2**30


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
    img = load_image(nifti)
    if len(img.shape) == 4 and img.shape[3] > 1:
        return _ingest_probabilistic(lake, img, nifti, labels, name, space, run)
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
    return _register(
        lake,
        run,
        nifti,
        name,
        digest,
        volume,
        grid,
        table,
        space,
        {"labels_source": str(Path(labels).name), "absent_labels": absent},
        statistic="dseg",
        params={},
        shape=tuple(grid.shape),
    )


def _register(
    lake: Lake,
    run: RunContext | None,
    nifti: Path,
    name: str,
    digest: str,
    volume: np.ndarray,
    grid: Grid,
    table: Any,
    space: str,
    attrs: dict[str, Any],
    *,
    statistic: str,
    params: dict[str, Any],
    shape: tuple[int, ...],
    before_write: Callable[[], None] | None = None,
    **write: Any,
) -> IngestResult:
    """Write an atlas store and register it, or skip it when the same content is registered under
    ``name`` (other content under that name is an input error); ``before_write`` runs only for a new
    atlas, ``write`` goes to :func:`lakepipe.io.stores.write_atlas`."""
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
    if before_write is not None:
        before_write()
    with lake.joined_run(run, f"lakepipe ingest atlas {nifti}", {"name": name}) as ctx:
        meta = {"source": str(nifti.name), "sha256": digest, **attrs}
        stores.write_atlas(lake.url, name, volume, grid, table, space, meta, **write)
        ctx.publish(
            [
                OutputRecord(
                    kind="atlas",
                    method="ingest",
                    atlas=name,
                    statistic=statistic,
                    params={"atlas": name, "space": space, **params},
                    inputs={"atlas": digest},
                    store_uri=layout.relative(lake.url, url),
                    store_index=name,
                    shape=shape,
                )
            ]
        )
    result.written.append(name)
    log.info(result.summary())
    return result


def _probabilistic_labels(maps: Any, table_index: np.ndarray) -> tuple[np.ndarray, str]:
    """The maximum-probability label volume and a content hash of the maps, one map at a time."""
    shape = tuple(int(s) for s in maps.shape[:3])
    best = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    h = hashlib.sha256()
    for j in range(maps.shape[3]):
        p = np.asarray(maps[..., j], np.float32)
        h.update(p.tobytes())
        better = p > best
        labels[better] = int(table_index[j])
        best[better] = p[better]
    return labels, h.hexdigest()


def _ingest_probabilistic(
    lake: Lake, img: Any, nifti: Path, labels: str | Path, name: str, space: str, run: RunContext | None
) -> IngestResult:
    from lakepipe.compute.assign import validate_probabilistic_atlas

    check_affine(img.affine, nifti)
    shape = tuple(int(s) for s in img.shape)
    grid = Grid((shape[0], shape[1], shape[2]), np.asarray(img.affine, float))
    if not grid_matches_space(grid, space):
        raise InputError(f"grid {grid.shape} does not match the stated space {space}", nifti)
    table = read_label_table(labels)
    try:
        validate_probabilistic_atlas(img.dataobj, table, check_values=False)
    except ValueError as exc:
        raise InputError(str(exc), labels) from None
    # read once when it fits comfortably in memory (a compressed file's volumes cannot be read one at a
    # time without decompressing from the start), else map by map through nibabel's proxy
    small = int(np.prod(shape)) * 4 <= MAX_IN_MEMORY_BYTES
    maps = read_data(img, nifti, np.float32) if small else img.dataobj
    try:
        validate_probabilistic_atlas(maps, None, check_values=True)
    except ValueError as exc:
        raise InputError(str(exc), nifti) from None
    except (EOFError, OSError) as exc:
        raise InputError(f"corrupt or truncated NIfTI data ({exc})", nifti) from exc
    volume, maps_hash = _probabilistic_labels(maps, table["index"].to_numpy())
    h = hashlib.sha256(maps_hash.encode())
    h.update(np.round(grid.affine, 6).tobytes())
    digest = content_hash({"probseg": h.hexdigest(), "table": table.to_csv(index=False)})

    def report_empty() -> None:
        empty = table["name"][~np.isin(table["index"], np.unique(volume))].tolist()
        if empty:
            log.info(
                "atlas %s: %d map(s) are nowhere the most probable region: %s", name, len(empty), empty[:10]
            )

    return _register(
        lake,
        run,
        nifti,
        name,
        digest,
        volume,
        grid,
        table,
        space,
        {
            "labels_source": str(Path(labels).name),
            "absent_labels": [],
            "dseg": "maximum-probability labels (ties: the earlier map; 0 where every map is 0)",
        },
        statistic="probseg",
        params={"kind": "probabilistic", "n_maps": int(shape[3])},
        shape=shape,
        before_write=report_empty,
        kind="probabilistic",
        maps=maps,
    )
