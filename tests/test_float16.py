"""float16 connectome storage (``ingest connectome --dtype float16``): FNM and parcellate run on it
unchanged and stay within a bound derived from the float16 rounding of the stored series.

The tutorial connectome is ingested twice (float32, float16) into a lake of this module. Each stored
value x of the unit-norm centred series is rounded to float16: ``|dx| <= 2^-11 |x| + 2^-25`` (unit
roundoff 2^-11; 2^-25 bounds the rounding of subnormals), so a voxel's series moves by at most
``e = 2^-11 + 2^-25 sqrt(T)`` in norm. For FNM, r of a seed with a voxel is the dot product of the
seed's unit series with the voxel's stored series rescaled to unit norm after reading (its mean
drops out: the seed series is centred). A relative perturbation d of a vector turns its direction by
at most 2 d: the voxel's part moves r by at most ``2 e`` (plus the float32 rounding of the rescaling,
``(T + 2) 2^-24``); the seed's series, a weighted sum of its voxels' raw series ``x_k``, moves
relatively by at most ``e rho`` with ``rho = sum_k w_k ||x_k|| / ||sum_k w_k x_k||`` (the worst over
subjects), which turns it by at most ``2 e rho``. So ``|dr16| <= 2 e + 2 e rho + 4 e^2 rho +
(T + 2) 2^-24``, on top of the float32 arithmetic bound of tests/tolerances.py; both go through
``tolerances.fnm_bounds`` to z, r and t maps. For parcellate, parcel series are
means of raw voxel series: each parcel's centred series moves relatively by at most ``e rho_p``
(``rho_p`` of its voxels, per subject), so r between parcels by at most ``2 e (rho_p + rho_q)`` plus the
product term, z by ``|dr| / (1 - (|r| + |dr|)^2)`` per subject, the mean over subjects by the largest.
These are worst cases (rounding errors of T values mostly cancel): a fault (a subject lost, a wrong
voxel, float16 read as float32) moves the maps by orders of magnitude more.

The float16 FNM run splits its seeds between the tasks (``SEEDS_PER_TASK`` lowered to 1: one seed
block per worker, every task reading every subject), the float32 run splits the subjects (the
default for few seeds): the two task layouts agree within the bounds too.
"""

from __future__ import annotations

import numpy as np
import pytest

from lakepipe.compute.fnm import restore_unit_norm
from lakepipe.ingest import ingest_atlas, ingest_connectome, ingest_lesions
from lakepipe.io.bidsfind import find_lesion_files
from lakepipe.io.stores import open_derivative
from lakepipe.lake import Lake
from tests import reference, tolerances

N_TIME = 40  # tests/conftest.py TUTORIAL_ARGS
N_SUB = 8
U16 = 2.0**-11
#: norm of the float16 rounding of one stored unit-norm series (see the module notes)
E16 = U16 + 2.0**-25 * np.sqrt(N_TIME)
ATLAS = "Seitzman2018"


@pytest.fixture(scope="module")
def lake(tutorial, tmp_path_factory) -> Lake:
    lk = Lake(str(tmp_path_factory.mktemp("float16") / "lake"))
    ingest_lesions(lk, tutorial.bids, cohort="tutorial")
    ingest_connectome(lk, tutorial.connectome, name="f32")
    ingest_connectome(lk, tutorial.connectome, name="f16", dtype="float16")
    ingest_atlas(lk, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name=ATLAS)
    return lk


@pytest.fixture(scope="module")
def fnm(lake, dask_client):
    import lakepipe.methods.fnm as fnm_method

    f32 = lake.run("fnm", connectome="f32", cohort="tutorial", client=dask_client)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fnm_method, "SEEDS_PER_TASK", 1)  # the seed-split layout, decided in this process
        f16 = lake.run("fnm", connectome="f16", cohort="tutorial", client=dask_client)
    # (seed blocks, subject groups): the subjects split between the 2 workers, then the seeds
    assert tuple(f32.details["layouts"][0]) == (1, 2), f32.details["layouts"]
    assert tuple(f16.details["layouts"][0]) == (2, 1), f16.details["layouts"]
    return open_derivative(f32.store).load(), open_derivative(f16.store).load()


@pytest.fixture(scope="module")
def raw(tutorial):
    return reference.load_h5_connectome(tutorial.connectome, dtype=np.float32)


def rho(series: np.ndarray, cols: np.ndarray, weights: np.ndarray | None) -> float:
    """The largest over subjects of ``sum_k w_k ||x_k|| / ||sum_k w_k x_k||`` (centred raw x_k)."""
    w = np.ones(len(cols)) if weights is None else np.asarray(weights, np.float64)
    worst = 1.0
    for s in series:
        x = np.asarray(s[:, cols], np.float64)
        x = x - x.mean(axis=0)
        total = np.linalg.norm(x @ w)
        worst = max(worst, float(np.abs(w) @ np.linalg.norm(x, axis=0) / total) if total > 0 else np.inf)
    return worst


def dr16(rho_: float) -> float:
    """Bound on |r16 - r32| of one subject for a seed with this rho (the module notes)."""
    return 2 * E16 + 2 * E16 * rho_ + 4 * E16**2 * rho_ + (N_TIME + 2) * tolerances.U32


def test_restore_unit_norm():
    """Columns rescaled to unit norm in place, against float64 numpy; zero columns stay zero."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N_TIME, 500)).astype(np.float16).astype(np.float32)
    x[:, 7] = 0.0
    x[:, 9] *= 1e-3
    want = x.astype(np.float64) / np.where(np.any(x, axis=0), np.linalg.norm(x.astype(np.float64), axis=0), 1)
    got = restore_unit_norm(x)
    assert got is x
    # float32: T squares summed (<= T 2^-24 relative in the square, half in the norm), a square root,
    # a division and a product (3 roundings): <= (T / 2 + 3) 2^-24 relative per value
    np.testing.assert_allclose(x, want, rtol=(N_TIME / 2 + 3) * tolerances.U32, atol=0)
    assert not np.any(x[:, 7])
    with pytest.raises(TypeError):
        restore_unit_norm(np.zeros((3, 3)))


@pytest.mark.integration
def test_rounding_recorded_at_ingest(lake):
    """The store records the largest rounding of its values: that of float32 -> float16 of the
    float32 store's values (the same float32 unit series, rounded once to nearest)."""
    a32 = lake.open_connectome("f32")
    a16 = lake.open_connectome("f16")
    assert a16["timeseries"].dtype == np.float16 and a32["timeseries"].dtype == np.float32
    meta = a16.attrs["float16"]
    worst = 0.0
    for s in range(a32.sizes["subject"]):
        x = a32["timeseries"][s].values
        stored = a16["timeseries"][s].values
        np.testing.assert_array_equal(stored, x.astype(np.float16))
        worst = max(worst, float(np.max(np.abs(stored.astype(np.float32) - x))))
    assert meta["max_abs_rounding_error"] == worst
    # |x| <= 1 for unit-norm series: the rounding is at most half a float16 ulp of 1
    assert 0 < worst <= 2.0**-11
    assert meta["series_norm_error_bound"] == pytest.approx(E16)
    assert "float16" not in a32.attrs


@pytest.mark.integration
def test_fnm_on_float16_within_derived_bound(fnm, raw, tutorial):
    ds32, ds16 = fnm
    series, ijk, affine, shape = raw
    keys = [str(k) for k in ds16["seed"].values]
    assert keys == [str(k) for k in ds32["seed"].values] and ds16.attrs["n_subjects"] == N_SUB
    files = {f.key: f.path for f in find_lesion_files(tutorial.bids)}
    seeds = [reference.seed_voxels_on_grid(files[k], ijk, affine, shape)[:2] for k in keys]
    maps, dr32 = tolerances.reference_maps(series, seeds, N_TIME)
    worst: dict[str, float] = {}
    moved = 0.0
    for i, key in enumerate(keys):
        ref = maps[i]
        degenerate = ref["zsd"] <= 1e-6 * np.maximum(np.abs(ref["zmap"]), 1)  # r = +-1 in every subject
        d16 = dr32[i] + dr16(rho(series, *seeds[i]))
        b16 = tolerances.fnm_bounds(ref, d16, N_TIME, N_SUB)
        b32 = tolerances.fnm_bounds(ref, dr32[i], N_TIME, N_SUB)
        for stat in ("zmap", "rmap", "tmap"):
            ok = ~degenerate if stat == "tmap" else slice(None)
            got16 = ds16[stat].values[i].astype(np.float64)[ok]
            got32 = ds32[stat].values[i].astype(np.float64)[ok]
            # float16 against the exact maps, and against float32 (triangle inequality)
            assert np.all(np.abs(got16 - ref[stat][ok]) <= b16[stat][ok]), (key, stat)
            diff = np.abs(got16 - got32)
            assert np.all(diff <= b16[stat][ok] + b32[stat][ok]), (key, stat, float(diff.max()))
            worst[stat] = max(worst.get(stat, 0.0), float((diff / (b16[stat][ok] + b32[stat][ok])).max()))
        moved = max(moved, float(np.abs(ds16["zmap"].values[i] - ds32["zmap"].values[i]).max()))
    # float16 is not float32: the rounding shows (a float32 store read as is would give ~1e-7)
    assert moved > 1e-5
    print("float16 FNM: max |dz| vs float32", f"{moved:.2e}", "; max |d| / bound:", worst)


@pytest.mark.integration
def test_parcellate_on_float16_within_derived_bound(lake, dask_client, raw, tutorial):
    series, ijk, affine, shape = raw
    out = {}
    for name in ("f32", "f16"):
        res = lake.run("parcellate", connectome=name, atlas=ATLAS, client=dask_client)
        out[name] = open_derivative(res.store).load()
    z32, z16 = out["f32"]["fcgroupz"].values, out["f16"]["fcgroupz"].values
    assert z16.shape == z32.shape and np.array_equal(out["f32"]["region"], out["f16"]["region"])
    # parcels on the connectome grid (nilearn, nearest), in the order of the output's regions
    labels = reference.atlas_on_connectome(tutorial.atlas_nifti, affine, shape)[tuple(ijk.T)]
    regions = out["f32"]["region"].values
    members = [np.flatnonzero(labels == r) for r in regions]
    bound = np.zeros(z32.shape)
    for s in series:
        x = np.asarray(s, np.float64)
        x = x - x.mean(axis=0)
        norms = np.linalg.norm(x, axis=0)
        p = np.stack([x[:, m].mean(axis=1) for m in members], axis=1)  # centred parcel series
        rho_p = np.array([norms[m].mean() for m in members]) / np.linalg.norm(p, axis=0)
        pu = p / np.linalg.norm(p, axis=0)
        r = pu.T @ pu
        da = 2 * E16 * rho_p  # each parcel's unit series turns by at most this
        dr = da[:, None] + da[None, :] + da[:, None] * da[None, :]
        near = np.minimum(np.abs(r) + dr, tolerances.R_CLIP)
        bound = np.maximum(bound, dr / (1 - near**2))
    np.fill_diagonal(bound, 0.0)
    # the float64 arithmetic of both runs (parcel sums of float32 products, Pearson, arctanh): 1e-9
    # is ~1e4 x its rounding and ~1e-5 x the float16 bound
    diff = np.abs(z16 - z32)
    assert np.all(diff <= bound + 1e-9), float((diff - bound).max())
    assert diff.max() > 1e-6  # the rounding shows
    r16, r32 = out["f16"]["fcgroupr"].values, out["f32"]["fcgroupr"].values
    assert np.all(np.abs(r16 - r32) <= bound + 1e-9)  # |d tanh| <= |dz|
    print("float16 parcellate: max |dz|", f"{diff.max():.2e}", "max bound", f"{bound.max():.2e}")
