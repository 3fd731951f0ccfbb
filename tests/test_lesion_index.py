"""The cohort's packed lesion index: a read cache that gives exactly the masks of the entries."""

from __future__ import annotations

import numpy as np

from lakepipe.gc import unregistered
from lakepipe.ingest import ingest_lesions
from lakepipe.io import layout, stores
from lakepipe.io.nifti import Mask
from lakepipe.io.storage import open_group
from lakepipe.lake import Lake
from lakepipe.methods.seeds import Seed, cohort_seeds, read_masks
from lakepipe.space import mni152_grid
from tests.conftest import SHARED_LESIONS


def _same(a: Mask, b: Mask) -> bool:
    return (
        np.array_equal(a.indices, b.indices)
        and a.indices.dtype == b.indices.dtype == np.int64
        and (a.values is None) == (b.values is None)
        and (a.values is None or np.array_equal(a.values, b.values))
        and a.grid.same_as(b.grid)
        and a.space == b.space
        and a.content_hash() == b.content_hash()
    )


def test_ingest_writes_index_and_reads_equal_entries(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    ingest_lesions(lake, SHARED_LESIONS, cohort="shared")
    index = stores.read_lesion_index(lake.url, "shared")
    assert index is not None and len(index.keys) == 3
    seeds = read_masks(lake, "shared", cohort_seeds(lake, "shared", with_masks=False))
    for s in seeds:
        assert index.has(s.key, s.content_hash)
        assert _same(s.mask, stores.read_lesion(lake.url, "shared", s.key)[0])
    assert unregistered(lake) == []  # the index is not garbage


def test_weighted_grids_stale_hashes_and_updates(tmp_path):
    lake = str(tmp_path / "lake")
    rng = np.random.default_rng(0)
    g1, g2 = mni152_grid(1), mni152_grid(2)
    masks = {
        "sub-a_label-x": Mask(
            np.arange(100, 130, dtype=np.int64),
            rng.uniform(0.1, 1, 30).astype(np.float32),
            g2,
            "MNI152NLin6Asym",
        ),
        "sub-b_label-x": Mask(
            np.sort(rng.choice(7_000_000, 500, replace=False)).astype(np.int64), None, g1, "MNI152NLin6Asym"
        ),
        "sub-c_label-x": Mask(np.array([5], np.int64), None, g2, None),
    }
    for key, m in masks.items():
        stores.write_lesion(lake, "c", key, m, {"sha256": m.content_hash()})
    stores.update_lesion_index(lake, "c", {k: (m, m.content_hash()) for k, m in list(masks.items())[:2]})
    first = stores.read_lesion_index(lake, "c")
    # a later update keeps the earlier entries, adds the new one, and drops the old index node
    name = stores.update_lesion_index(
        lake, "c", {"sub-c_label-x": (masks["sub-c_label-x"], masks["sub-c_label-x"].content_hash())}
    )
    index = stores.read_lesion_index(lake, "c")
    assert sorted(index.keys) == sorted(masks) and first.keys != index.keys
    assert [
        k
        for k in open_group(layout.lesion_store(lake, "c")).group_keys()
        if k.startswith(stores.LESION_INDEX_PREFIX)
    ] == [name]
    # the whole packed arrays, one dense span, and one slice per entry (far apart, few voxels)
    for subset in (list(masks), ["sub-b_label-x"], ["sub-a_label-x", "sub-c_label-x"]):
        for key, m in zip(subset, index.masks(subset), strict=True):
            assert _same(m, masks[key]), key

    class _Lake:
        url = lake

    # a seed whose registered hash differs from the packed one is read from its entry
    seeds = [Seed(k, None, None, "x", m.content_hash()) for k, m in masks.items()]
    seeds[0].content_hash = "not-the-packed-hash"
    read_masks(_Lake(), "c", seeds)
    for s in seeds:
        assert _same(s.mask, masks[s.key])
