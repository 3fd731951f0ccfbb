"""What FNM's Dask tasks run on the workers: a subject group's running sums for a block of seeds
(:func:`sums_task`), and maps finalised from merged sums and written into the derivative store
(:func:`finalize_task`). Apart from :mod:`lakepipe.methods.fnm`, so that planning an FNM run (and
finding everything already in the lake) imports none of the compute kernels; local workers are
forked from a process that has imported this module."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from lakepipe.compute import bh
from lakepipe.compute.fisher import fisher_kernel
from lakepipe.compute.fnm import FnmSums, finalize_fnm, restore_unit_norm
from lakepipe.io.storage import StoreRef
from lakepipe.io.stores import IncrementalStore
from lakepipe.io.stores.rows import open_rows

#: memory for the subjects a task holds at once: two groups (one computed while the next is read);
#: a group's r, z and z^2 go through cache-resident tiles of the large float64 sums. 256 MiB is one
#: subject of 120 x 235,375 float32 a group: at 100 seeds the same wall time as two (512 MiB), with
#: 170 MB less peak RSS in all (2.34 against 2.51 GB, 2 workers, medians of 3 interleaved)
GROUP_BYTES = 256 * 2**20


def warm_worker() -> None:
    """What a worker's first FNM task would otherwise wait for: this module's imports (unpickling
    this function does them), the Fisher z kernel (loaded from numba's cache and self-checked) and
    the BH radix sort (loaded); already done where the worker was forked from a process that
    preloaded :mod:`lakepipe.compute.fisher_warm`."""
    fisher_kernel()
    bh.warm()


@dataclass(frozen=True)
class SubjectMapsTarget:
    """Where a sums task writes its subjects' own maps: seed rows ``rows`` of the derivative store,
    at positions ``columns`` of its subject axis (one per unit of the task)."""

    store: IncrementalStore
    rows: slice
    columns: tuple[int, ...]


def sums_task(
    ref: StoreRef,
    units: list[list[int]],
    seedw: Any,
    with_r: bool,
    subject_maps: SubjectMapsTarget | None = None,
) -> FnmSums:
    """FNM sums over the subjects ``units`` (store rows; a unit of several rows is one participant's
    runs, whose z maps are averaged before they count as one subject).

    With ``subject_maps``, each unit's own z map (its runs' mean) and r = tanh(z) are written to the
    derivative store as well; units are then added one at a time (each chunk of the subject maps,
    one seed x one subject, is written by this task only)."""
    src = open_rows(ref)  # a copied store's rows, or HDF5 batches read in place: one interface
    n_valid = src.n_valid
    sums = FnmSums.zeros(seedw.n_seeds, seedw.n_voxels, with_r=with_r)
    n_time, n_vox = src.shape[1:]
    rows_per_unit = max(len(u) for u in units)
    # two banks of k subjects (one computed while the next is read), GROUP_BYTES in all or, with many
    # seeds, up to half the bytes of the sums: every group streams the sums through memory once
    # (32 bytes a seed and voxel), so more subjects per group means fewer passes over them; but not
    # more subjects than the sums weigh in series (a few seeds: one subject a group, since streaming
    # their small sums costs less than holding another subject)
    sums_bytes = sums.sum_z.nbytes * (3 if with_r else 2)
    series_bytes = 4 * n_time * n_vox
    group_bytes = max(GROUP_BYTES, sums_bytes // 2)
    k = min(sum(map(len, units)), group_bytes // (2 * series_bytes), max(1, sums_bytes // series_bytes), 8)
    k = int(max(rows_per_unit, k))  # a participant's runs are read together
    # subjects are read (all their chunks at once) into buffers reused for the whole task: no fresh
    # 100 MB array, and its page faults, per subject
    bufs = [np.empty((n_time, n_vox), np.float32) for _ in range(k)]

    def read(rows: list[int], bank: list[np.ndarray] = bufs) -> list[np.ndarray]:
        series = []
        for j, s in enumerate(rows):
            src.read_into(s, bank[j])  # float16 storage is converted into the float32 buffer
            if src.dtype != np.float32:  # and its series, rounded off unit norm, rescaled to it
                restore_unit_norm(bank[j])
            t = n_time if n_valid is None else int(n_valid[s])
            series.append(bank[j][:t])  # rows past a subject's time points are zero: left out
        return series

    if subject_maps is not None:
        g_out = subject_maps.store.group()
        for unit, col in zip(units, subject_maps.columns, strict=True):
            one = FnmSums.zeros(seedw.n_seeds, seedw.n_voxels, with_r=with_r)
            one.add_subjects(read(unit), [src.scale(s) for s in unit], seedw)
            sums.add_mean(one)
            z = (one.sum_z / one.n).astype(np.float32)
            maps = {"zmap_subjects": z, "rmap_subjects": np.tanh(z)}
            subject_maps.store.write_rows((subject_maps.rows, col, slice(None)), maps, group=g_out)
        return sums
    singles = [u[0] for u in units if len(u) == 1]
    groups = [singles[a : a + k] for a in range(0, len(singles), k)]
    # the next group is read in a thread while this one is computed: a read waits on Zarr's event
    # loop and on the files far longer than it keeps a core busy (~40 % of its wall time, measured),
    # and the GEMMs release the GIL, so reading hides behind computing instead of adding to it
    banks = (bufs, [np.empty_like(b) for b in bufs] if len(groups) > 1 else bufs)

    def read_group(i: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return read(groups[i], banks[i % 2]), [src.scale(s) for s in groups[i]]

    with ThreadPoolExecutor(1, thread_name_prefix="fnm-read") as pool:
        ahead = pool.submit(read_group, 0) if groups else None
        for i in range(len(groups)):
            assert ahead is not None
            series, scales = ahead.result()
            if i + 1 < len(groups):
                ahead = pool.submit(read_group, i + 1)
            sums.add_subjects(series, scales, seedw)
    for unit in (u for u in units if len(u) > 1):
        runs = FnmSums.zeros(seedw.n_seeds, seedw.n_voxels, with_r=with_r)
        runs.add_subjects(read(unit), [src.scale(s) for s in unit], seedw)
        sums.add_mean(runs)
    return sums


def seed_rows(sums: FnmSums, rows: range) -> FnmSums:
    """The sums of some seeds (rows) only."""
    sl = slice(rows.start, rows.stop)
    return FnmSums(sums.sum_z[sl], sums.sum_z2[sl], None if sums.sum_r is None else sums.sum_r[sl], sums.n)


def merge(parts: list[FnmSums]) -> FnmSums:
    total = parts[0]
    for p in parts[1:]:
        total = total.merge(p)
    return total


def finalize_task(
    sums: FnmSums,
    out: IncrementalStore,
    rows: slice,
    names: tuple[str, ...],
    with_avgr: bool,
    parcel_avg: Any,
) -> tuple[slice, dict[str, np.ndarray]]:
    """Maps from sums, written into their rows of the derivative store (one chunk per seed row, so
    tasks for other rows write other chunks); the small parcel summaries are returned, for the
    caller to write (their chunks hold many seed rows: concurrent writers would overwrite each other)."""
    maps = finalize_fnm(sums, with_avgr=with_avgr, with_pfdr="pfdrmap" in names)
    out.write_rows(rows, {name: maps[name] for name in names})
    parcels = {}
    if parcel_avg is not None:
        for name in names:
            parcels[name] = np.asarray((parcel_avg.T @ maps[name].T.astype(np.float64)).T, np.float32)
    return rows, parcels
