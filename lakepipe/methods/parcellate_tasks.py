"""The worker tasks of :mod:`lakepipe.methods.parcellate`: one subject group's sum of per-subject
Fisher-z group FC, read from the connectome store (imported by the workers, not by a command that
finds its output already in the lake)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lakepipe.compute.groupfc import ParcelAverager, subject_fc_z
from lakepipe.io.storage import StoreRef, get_array
from lakepipe.io.stores.rows import BlockGetter, RowReader, open_rows


def _n_valid(g: Any, n_time: int) -> np.ndarray | None:
    """Each row's number of time points (rows past them are zero), None for stores without it."""
    return np.asarray(g["n_valid"][:]) if "n_valid" in g else None


#: when a task loads numba for the parcel sums: where the seconds they save pass loading numba
#: (~0.7 s). scipy's mat-vec costs ~2.7 ns a value of every block holding a labelled voxel (it
#: converts whole block rows), the kernel ~1.1 ns a labelled value (120 x 235,375, 400 parcels: 78
#: vs 30 ms a subject); the tutorial's parcellate ran slower with them (4.7-5.2 vs 4.5 s)
NUMBA_LOAD_S = 0.7
SCIPY_S_PER_SPAN_VALUE = 2.7e-9
KERNEL_S_PER_VALUE = 1.1e-9


def _numba_pays(n_values: int, labels: np.ndarray, block: int) -> bool:
    """Whether the numba parcel sums save more than loading numba costs (or it is loaded already),
    for ``n_values`` subject time points."""
    if "numba" in sys.modules:
        return True
    labelled = np.flatnonzero(labels)
    span = min(np.unique(labelled // block).size * block, labels.size)
    saved = n_values * (SCIPY_S_PER_SPAN_VALUE * span - KERNEL_S_PER_VALUE * labelled.size)
    return bool(saved >= NUMBA_LOAD_S)


#: one subject's inputs to the parcel sums: its blocks by voxel range, its per-voxel scale and mean
SubjectBlocks = tuple[Callable[[int, int], np.ndarray], np.ndarray, np.ndarray]


def voxel_group_sum(ref: StoreRef, units: list[list[int]], labels: np.ndarray, n_regions: int) -> np.ndarray:
    """Sum over the subjects ``units`` (store rows; several rows: one participant's runs, averaged) of
    per-subject Fisher-z FC between parcels (runs on a worker). Reads run a step ahead in a thread
    (:func:`_streamed_blocks` where the chunks are local files, else :func:`_whole_rows`)."""
    src = open_rows(ref)  # a copied store's rows, or HDF5 batches read in place: one interface
    total = np.zeros((n_regions, n_regions))
    n_time = src.shape[1]
    rows = [s for unit in units for s in unit]
    fast = _numba_pays(len(rows) * n_time, labels, src.block)
    # built once for the task's subjects; parcel sums a store chunk (voxel block) at a time
    averager = ParcelAverager(labels, n_regions, block=src.block, use_numba=fast)
    get_block = src.block_getter()
    with ThreadPoolExecutor(1, thread_name_prefix="parcellate-read") as pool:
        subjects = (
            _whole_rows(src, rows, pool)
            if get_block is None
            else _streamed_blocks(src, get_block, averager.spans, rows, pool)
        )
        for unit in units:
            z = np.zeros((n_regions, n_regions))
            for s in unit:
                blocks, scale, mean = next(subjects)
                series = averager.series(blocks, scale, mean, n_time)
                t = n_time if src.n_valid is None else int(src.n_valid[s])
                z += subject_fc_z(series[:t])
            total += z / len(unit)
    return total


def _whole_rows(src: RowReader, rows: list[int], pool: ThreadPoolExecutor) -> Iterator[SubjectBlocks]:
    """Each row read whole (its chunks fetched concurrently) into one of two buffers reused by the
    task (in a worker, glibc's trim setting makes every fresh array a new mmap, page faults and all),
    the next one in ``pool`` while this one is averaged: a read waits on Zarr's event loop and the
    files far longer than it keeps a core busy, so reading hides behind the parcel sums."""
    bufs = [np.empty(src.shape[1:], np.float32) for _ in range(min(2, len(rows)))]

    def read(i: int) -> SubjectBlocks:
        buf = src.read_into(rows[i], bufs[i % 2])  # float16 storage is converted into float32
        return (lambda a, b: buf[:, a:b]), src.scale(rows[i]), src.mean(rows[i])

    ahead = pool.submit(read, 0) if rows else None
    for i in range(len(rows)):
        assert ahead is not None
        subject = ahead.result()
        if i + 1 < len(rows):  # into the other buffer (its row is done) while this one is averaged
            ahead = pool.submit(read, i + 1)
        yield subject


def _streamed_blocks(
    src: RowReader,
    get_block: BlockGetter,
    spans: list[tuple[int, int]],
    rows: list[int],
    pool: ThreadPoolExecutor,
) -> Iterator[SubjectBlocks]:
    """Where the chunks are local files: every row's blocks (``spans``, those with a labelled voxel;
    no other is read) one at a time, the next (of this row or the next) read in ``pool`` while this
    one is summed, so each block is summed while it is still in cache: one pass over memory instead
    of two."""
    jobs = [(s, start) for s in rows for start, _ in spans]
    bufs = [np.empty((src.shape[1], src.block), np.float32) for _ in range(min(2, len(jobs)))]
    pending = [pool.submit(get_block, *jobs[0], bufs[0])] if jobs else []
    k = 0

    def next_block(start: int, stop: int) -> np.ndarray:
        nonlocal k
        block = pending.pop().result()
        assert jobs[k][1] == start and block.shape[1] == stop - start
        k += 1
        if k < len(jobs):  # into the other buffer (its block is summed) while this one is
            pending.append(pool.submit(get_block, *jobs[k], bufs[k % 2]))
        return block

    for s in rows:
        yield next_block, src.scale(s), src.mean(s)


def region_group_sum(ref: StoreRef, units: list[list[int]], columns: np.ndarray) -> np.ndarray:
    """Same for a parcel-level connectome: FC directly on the stored parcel series."""
    g = ref.group()
    ts, scale, mean = get_array(g, "timeseries"), get_array(g, "scale"), get_array(g, "mean")
    n_valid = _n_valid(g, ts.shape[1])
    total = np.zeros((columns.size, columns.size))
    for unit in units:
        z = np.zeros((columns.size, columns.size))
        for s in unit:
            t = ts.shape[1] if n_valid is None else int(n_valid[s])
            raw = (
                np.asarray(ts[s], np.float32)[:t, columns] * np.asarray(scale[s])[columns]
                + np.asarray(mean[s])[columns]
            )
            z += subject_fc_z(raw)
        total += z / len(unit)
    return total
