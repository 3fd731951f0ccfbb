"""Registering HDF5 connectome batches in place, and the one-command path (folders given to a method).

:func:`ingest_in_place` registers a folder of GSP1000-style HDF5 batches as a connectome without
copying its series: one Dask task per subject reads the subject once and stores its per-voxel mean
and scale (norm of the centred series); the lake then holds those, the mask geometry and where each
subject's rows are (see :mod:`lakepipe.io.stores.inplace`). As for a copied ingest, subjects are
committed and registered every ``commit_every`` subjects, a killed registration resumes there, and
new batches in the folder are added on the next call. A batch that changed since it was registered
is read again: the connectome is rebuilt (only its small store; the batches are never written).

:func:`lakepipe.ingest.resolve.resolve_inputs` lets a method run straight on folders: a
``connectome`` that is a folder of HDF5 batches rather than a connectome of the lake is registered
in place here (:func:`connectome_for_folder`) on first use, under a name made from the folder's path
and the batches' sizes and times (:func:`inplace_name`), and reused while they are unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from lakepipe.bids import check_entity
from lakepipe.catalog import OutputRecord
from lakepipe.compute.correlation import center_unit
from lakepipe.errors import InputError
from lakepipe.ingest.resolve import name_from_folder
from lakepipe.ingest.result import IngestResult
from lakepipe.io import layout
from lakepipe.io.bidsfind import DEFAULT_SPACE
from lakepipe.io.sources import ConnectomeSource, SubjectRef, open_source
from lakepipe.io.storage import exists, join, open_group, remove
from lakepipe.io.stores.inplace import (
    INPLACE_STORAGE,
    BatchRecord,
    InplaceStats,
    InplaceWriter,
    batch_record,
    reset_store,
)
from lakepipe.lake import Lake
from lakepipe.progress import progress
from lakepipe.runtime import RunContext
from lakepipe.space import grid_matches_space

log = logging.getLogger(__name__)
_H5 = (".h5", ".hdf5")


def _stats_task(src: ConnectomeSource, ref: SubjectRef, stats: InplaceStats, row: int) -> tuple[str, int]:
    """Read one subject (as a copied ingest does) and store its mean and scale (runs on a worker)."""
    data = src.read_checked(ref)
    _, scale, mean = center_unit(data, axis=0)
    stats.write(row, scale, mean)
    return ref.subject_id, int(data.shape[0])


def inplace_record(name: str, ref: SubjectRef, store_uri: str, shape: tuple[int, int]) -> OutputRecord:
    """The catalog record of one subject of an in-place connectome (its input: the batch file's name,
    size and time, and its row)."""
    return OutputRecord(
        kind="connectome",
        method="ingest",
        connectome=name,
        statistic="timeseries",
        params={"connectome": name, "subject": ref.subject_id, "storage": INPLACE_STORAGE},
        inputs={"source": ref.fingerprint or ref.subject_id},
        store_uri=store_uri,
        store_index=ref.subject_id,
        shape=shape,
    )


def batch_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.endswith(_H5) and p.is_file())


def recorded_attrs(lake: Lake, name: str) -> dict[str, Any] | None:
    """The attributes of connectome ``name``'s store, or None when there is none."""
    url = layout.connectome_store(lake.url, name)
    if not exists(join(url, "zarr.json")):
        return None
    return dict(open_group(url).attrs)


def batches_unchanged(attrs: dict[str, Any], root: Path, files: list[Path]) -> bool:
    """Whether an in-place store records exactly these files, with their current sizes and times."""
    info = attrs.get("inplace") or {}
    if attrs.get("storage") != INPLACE_STORAGE or info.get("root") != str(root):
        return False
    recorded = {b["file"]: (b["size"], b["mtime_ns"]) for b in info.get("batches", [])}
    now = {}
    for p in files:
        st = os.stat(p)
        now[p.name] = (st.st_size, st.st_mtime_ns)
    return recorded == now


def ingest_in_place(
    lake: Lake,
    source: str | Path,
    *,
    name: str,
    space: str = DEFAULT_SPACE,
    commit_every: int = 32,
    run: RunContext | None = None,
) -> IngestResult:
    """Register a folder of HDF5 batches as connectome ``name`` without copying the series.

    The lake stores each subject's per-voxel mean and scale and the mask geometry; methods read the
    series from the batches, centred and scaled exactly as a copied ingest stores them. The batches
    must stay where they are, unchanged: a changed one makes every read fail until it is registered
    again (this call rebuilds the connectome then). New batches are added; subjects already
    registered are skipped.
    """
    import dask

    name = check_entity(name, "connectome")
    root = Path(source).expanduser()
    if not root.is_dir():
        raise InputError("connectome source must be a folder of HDF5 batches", root)
    root = root.resolve()
    files = batch_files(root)
    if not files:
        raise InputError("--in-place reads HDF5 batches (*.h5): none in this folder", root)
    src = open_source(root, source_format="hdf5")
    src.space = space
    assert src.geometry is not None
    if not grid_matches_space(src.geometry.grid, space):
        raise InputError(f"connectome grid {src.geometry.grid.shape} does not match space {space}", root)
    if not src.subjects:
        raise InputError("the HDF5 batches hold no subjects", root)
    url = layout.connectome_store(lake.url, name)
    store_uri = layout.relative(lake.url, url)
    batches = [batch_record(p) for p in files]
    attrs = recorded_attrs(lake, name)
    if attrs is not None and attrs.get("storage") == INPLACE_STORAGE:
        old = {b["file"]: BatchRecord.from_attrs(b) for b in (attrs.get("inplace") or {}).get("batches", [])}
        now = {b.file: b for b in batches}
        same_root = (attrs.get("inplace") or {}).get("root") == str(root)
        if not same_root or any(now.get(f) != rec for f, rec in old.items()):
            log.warning("connectome '%s': batches changed since registration; registering them again", name)
            reset_store(lake.url, name)
    fresh = not exists(join(url, "zarr.json"))
    writer = InplaceWriter(
        lake.url, name, root=root, n_time=src.n_time, geometry=src.geometry, space=space, batches=batches
    )
    registered = set(lake.catalog.query(kind="connectome", connectome=name)["store_index"])
    committed = writer.subject_ids()
    done = set(committed)
    refs = {r.subject_id: r for r in src.subjects}
    todo = [r for r in src.subjects if r.subject_id not in done]
    result = IngestResult("connectome", name, store=url, skipped=[s for s in committed if s in refs])
    shape = (src.n_time, src.n_features)

    with lake.joined_run(run, f"lakepipe ingest connectome {root} --in-place", {"name": name}) as ctx:
        orphans = [refs[s] for s in committed if s not in registered and s in refs]
        if orphans:  # committed, not registered (killed between the two)
            ctx.publish([inplace_record(name, r, store_uri, shape) for r in orphans])
        try:
            for a in progress(range(0, len(todo), commit_every), desc=f"register {name} in place"):
                window = todo[a : a + commit_every]
                rows = writer.reserve(len(window))
                stats = writer.stats()
                tasks = [
                    dask.delayed(_stats_task, pure=False)(src, ref, stats, row)
                    for ref, row in zip(window, rows, strict=True)
                ]
                written = ctx.runtime.compute(*tasks, desc=f"register {name} in place")
                ids = writer.commit(
                    [sid for sid, _ in written],
                    [n for _, n in written],
                    [writer.batch_index(r.path.name) for r in window],
                    [int(r.row or 0) for r in window],
                )
                ctx.publish([inplace_record(name, refs[s], store_uri, shape) for s in ids])
                result.written.extend(ids)
        except BaseException:
            writer.rollback()
            if fresh and not result.written:
                remove(url)
            raise
        ctx.count_skipped(len(result.skipped))
    log.info(result.summary() + " (registered in place)")
    return result


# ------------------------------------------------------------------------------- folders as inputs


def inplace_name(folder: str | Path) -> str:
    """The name a folder of HDF5 batches is registered under by :func:`resolve_inputs`: the folder's
    name and a hash of its path and of its batches' names, sizes and modification times."""
    root = Path(folder).expanduser().resolve()
    h = hashlib.sha256(str(root).encode())
    for p in batch_files(root):
        st = os.stat(p)
        h.update(f"|{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return f"{name_from_folder(root, 'connectome')[:40]}{h.hexdigest()[:8]}"


def connectome_for_folder(
    lake: Lake, folder: str | Path, *, space: str = DEFAULT_SPACE, run: RunContext | None = None
) -> str:
    """The in-place connectome of ``folder``: registered on first use, reused while unchanged."""
    root = Path(folder).expanduser().resolve()
    name = inplace_name(root)
    attrs = recorded_attrs(lake, name)
    if (
        attrs is not None
        and batches_unchanged(attrs, root, batch_files(root))
        and lake.catalog.count(kind="connectome", connectome=name) >= int(attrs.get("n_subjects", 0)) > 0
    ):
        log.info("connectome folder %s: registered in place as '%s', reused", root, name)
        return name
    ingest_in_place(lake, root, name=name, space=space, run=run)
    return name
