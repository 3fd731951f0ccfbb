"""FNM many-seed kernel against a per-seed, per-subject reference (np.corrcoef + ttest_1samp)."""

import os
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

import lakepipe.compute.fnm as fnm
from lakepipe.compute import fisher
from lakepipe.compute.correlation import R_CLIP, Z_MAX, center_unit
from lakepipe.compute.fnm import FnmSums, finalize_fnm, seed_series
from lakepipe.compute.fnm_conventions import FNM_CONVENTIONS, T_MAX
from tests.tolerances import assert_float32_rounding_of

T, V, S = 64, 400, 5
CONST_VOXEL = 17


def _cohort(seed=7):
    """S subjects, V voxels in 4 latent networks (+ noise, offsets, one constant voxel)."""
    rng = np.random.default_rng(seed)
    net = rng.integers(0, 4, V)
    raws = []
    for _ in range(S):
        latent = rng.standard_normal((T, 4))
        raw = latent[:, net] * rng.uniform(0.3, 1.5, V) + 0.8 * rng.standard_normal((T, V))
        raw += rng.uniform(-100, 100, V)
        raw[:, CONST_VOXEL] = 42.0
        raws.append(raw)
    return np.array(raws), net


def _seeds(net):
    """(V, L) weights: two network seeds, a single voxel, a weighted seed, a seed with the constant voxel."""
    rng = np.random.default_rng(8)
    w = np.zeros((V, 5))
    w[np.flatnonzero(net == 0)[:12], 0] = 1
    w[np.flatnonzero(net == 2)[:30], 1] = 1
    w[101, 2] = 1  # single voxel: r = 1 with itself -> clipped
    idx = np.flatnonzero(net == 1)[:20]
    w[idx, 3] = rng.uniform(0.1, 3.0, idx.size)
    w[[CONST_VOXEL, 5, 9], 4] = [1.0, 2.0, 0.5]
    return w


def _reference(raws, w):
    """Straightforward per seed and subject: weighted mean of raw series, corrcoef with each voxel."""
    r = np.zeros((S, w.shape[1], V))
    for s, raw in enumerate(raws):
        for seed in range(w.shape[1]):
            series = raw @ w[:, seed] / w[:, seed].sum()
            with np.errstate(invalid="ignore", divide="ignore"):
                c = np.corrcoef(np.column_stack([series, raw]).T)[0, 1:]
            r[s, seed] = np.nan_to_num(c, nan=0.0)  # constant series: r = 0
    z = np.arctanh(np.clip(r, -R_CLIP, R_CLIP))
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the zero-variance cells
        t, p = stats.ttest_1samp(z, 0.0, axis=0)
    return r, z, t, p


def subject_chunk_sums(unit, scale, W, with_r=True, sums=None):
    """FNM sums of some subjects, through the step the FNM method runs (FnmSums.add_subjects)."""
    if sums is None:
        sums = FnmSums.zeros(W.shape[1], unit.shape[2], with_r=with_r)
    sums.add_subjects(list(unit), list(scale), W)
    return sums


def seed_voxel_r(unit, scale, W):
    """One subject's r of every seed with every voxel: its sum_r."""
    return subject_chunk_sums(unit[None], scale[None], W).sum_r


@pytest.fixture(scope="module")
def data():
    raws, net = _cohort()
    stored = [center_unit(raw) for raw in raws]  # float32 storage, as in the lake
    unit = np.array([u for u, _, _ in stored])
    scale = np.array([s for _, s, _ in stored])
    w = _seeds(net)
    return raws, unit, scale, w, _reference(raws, w)


@pytest.fixture(params=["sparse_product", "dense_product"])
def product(request, monkeypatch):
    """Force the sparse or the dense seed-series product (chosen by density otherwise)."""
    monkeypatch.setattr(fnm, "_DENSE_FRACTION", 1.0 if request.param == "sparse_product" else -1.0)
    return request.param


def test_seed_series_is_mean_of_centred_raw(data, product):
    raws, unit, scale, w, _ = data
    for W in (w, sp.csc_matrix(w), sp.csr_array(w)):
        got = seed_series(unit[0], scale[0], W)
        ref = raws[0] @ w / w.sum(axis=0)
        ref -= ref.mean(axis=0)
        np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max())


def test_seed_voxel_r_matches_corrcoef(data):
    raws, unit, scale, w, (r_ref, *_) = data
    r = seed_voxel_r(unit[1], scale[1], w)
    assert r.shape == (w.shape[1], V)
    np.testing.assert_allclose(r, r_ref[1], atol=1e-5)


@pytest.mark.parametrize("sparse", [True, False])
def test_fnm_maps_match_reference(data, sparse, product, monkeypatch):
    raws, unit, scale, w, (r_ref, z_ref, t_ref, p_ref) = data
    monkeypatch.setattr(fnm, "_TILE_ELEMENTS", 1)  # several voxel blocks
    W = sp.csc_matrix(w) if sparse else w
    maps = finalize_fnm(subject_chunk_sums(unit, scale, W), with_avgr=True)
    assert set(maps) == {"zmap", "rmap", "tmap", "pmap", "avgr"}
    assert all(m.dtype == np.float32 and m.shape == (w.shape[1], V) for m in maps.values())
    assert all(np.isfinite(m).all() for m in maps.values())
    zmean = z_ref.mean(axis=0)
    assert np.abs(zmean).max() > 1.0  # strong network correlations
    np.testing.assert_allclose(maps["zmap"], zmean, atol=1e-4)
    np.testing.assert_allclose(maps["rmap"], np.tanh(zmean), atol=1e-4)
    np.testing.assert_allclose(maps["avgr"], r_ref.mean(axis=0), atol=1e-4)
    # zero-variance cells have no meaningful reference t: seed 2's own voxel, the constant voxel
    finite = np.ones(t_ref.shape, bool)
    finite[2, 101] = finite[:, CONST_VOXEL] = False
    assert np.isfinite(t_ref[finite]).all()
    np.testing.assert_allclose(maps["tmap"][finite], t_ref[finite], atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(maps["pmap"][finite], p_ref[finite], atol=1e-5)
    # conventions: z identical in all subjects -> |t| = T_MAX, p = 0; constant voxel -> t 0, p 1
    assert maps["zmap"][2, 101] == np.float32(Z_MAX)
    assert maps["tmap"][2, 101] == T_MAX and maps["pmap"][2, 101] < 1e-20
    assert np.all(maps["tmap"][:, CONST_VOXEL] == 0) and np.all(maps["pmap"][:, CONST_VOXEL] == 1)


def test_partial_sums_merge_in_any_split(data):
    _, unit, scale, w, _ = data
    W = sp.csr_matrix(w)
    whole = subject_chunk_sums(unit, scale, W)
    one_by_one = FnmSums.zeros(*whole.shape)
    for u, s in zip(unit, scale, strict=True):
        one_by_one.add_subjects([u], [s], W)
    in_place = FnmSums.zeros(*whole.shape)
    for i in range(S):
        assert subject_chunk_sums(unit[i : i + 1], scale[i : i + 1], W, sums=in_place) is in_place
    assert in_place.n == S
    np.testing.assert_allclose(in_place.sum_z2, whole.sum_z2, rtol=1e-12, atol=1e-12)
    for split in ([2], [1, 3], [1, 2, 3, 4]):
        parts = [
            subject_chunk_sums(u, s, W)
            for u, s in zip(np.split(unit, split), np.split(scale, split), strict=True)
        ]
        for merged in (sum(parts), parts[0].merge(sum(parts[1:]))):
            assert merged.n == S
            for name in ("sum_z", "sum_z2", "sum_r"):
                np.testing.assert_allclose(
                    getattr(merged, name), getattr(whole, name), rtol=1e-12, atol=1e-12
                )
                np.testing.assert_allclose(
                    getattr(one_by_one, name), getattr(whole, name), rtol=1e-12, atol=1e-12
                )
    # the inputs of a merge are left untouched (safe for a Dask reduction)
    a, b = subject_chunk_sums(unit[:2], scale[:2], W), subject_chunk_sums(unit[2:], scale[2:], W)
    before = a.sum_z.copy()
    _ = a + b
    np.testing.assert_array_equal(a.sum_z, before)


def test_weighted_seed_is_not_the_binary_seed(data):
    raws, unit, scale, w, (r_ref, *_) = data
    binary = (w[:, [3]] > 0).astype(float)
    r_w = seed_voxel_r(unit[0], scale[0], w[:, [3]])
    r_b = seed_voxel_r(unit[0], scale[0], binary)
    np.testing.assert_allclose(r_w[0], r_ref[0, 3], atol=1e-5)
    assert np.abs(r_w - r_b).max() > 1e-3


def test_single_subject_and_without_r(data):
    _, unit, scale, w, (_, z_ref, _, _) = data
    sums = subject_chunk_sums(unit[:1], scale[:1], w, with_r=False)
    assert sums.sum_r is None
    maps = finalize_fnm(sums)
    np.testing.assert_allclose(maps["zmap"], z_ref[0], atol=1e-4)
    assert np.all(maps["tmap"] == 0) and np.all(maps["pmap"] == 1)
    with pytest.raises(ValueError, match="sum_r"):
        finalize_fnm(sums, with_avgr=True)
    with pytest.raises(ValueError):
        finalize_fnm(FnmSums.zeros(2, 3))


def test_seed_without_voxel_is_a_value_error(data):
    _, unit, scale, w, _ = data
    w = w.copy()
    w[:, 1] = 0
    with pytest.raises(ValueError, match=r"seed\(s\) \[1\]"):
        subject_chunk_sums(unit[:1], scale[:1], sp.csc_matrix(w))


@pytest.mark.parametrize("kernel", ["fused", "log32", "exact"])
def test_tile_kernel_matches_fisher_z_float64(kernel):
    """Each Fisher z kernel FnmSums uses (lakepipe.compute.fisher; fused needs numba) on the clip's
    edge values: beyond -1, exactly at the clip, the largest value below it, and 1."""
    try:
        k = fisher._make(kernel)
    except ImportError:
        pytest.skip("numba not installed")
    r = np.float32([[-1.0000001, -0.99999905, -0.5, 0.0, 0.7, 0.99999899, 0.99999905, 1.0]])
    acc = [np.zeros(r.shape) for _ in range(3)]
    k.accumulate(r.copy(), acc[0], acc[1], acc[2])
    z64 = np.arctanh(np.clip(r.astype(np.float64), -R_CLIP, R_CLIP))
    # each kernel's bound: <= 1e-6 absolute (the fused one: 1.2e-7), by its error analysis
    np.testing.assert_allclose(acc[0], z64, rtol=0, atol=k.bound)
    assert acc[0][0, 0] == -Z_MAX and acc[0][0, -1] == Z_MAX and acc[0][0, 1] == -Z_MAX
    assert acc[0][0, 5] < Z_MAX - 5e-3  # 0.99999899 < R_CLIP is not clipped (z = 7.2477)
    np.testing.assert_array_equal(acc[1], acc[0] ** 2)
    np.testing.assert_array_equal(acc[2], r.astype(np.float64))


def test_conventions_are_recorded():
    assert FNM_CONVENTIONS["r_clip"] == R_CLIP and FNM_CONVENTIONS["ddof"] == 1
    assert FNM_CONVENTIONS["constant_series_r"] == 0.0


def test_rmap_tanh_on_exp_within_its_bound():
    """rmap's tanh on numpy's SIMD exp against numpy's tanh: within 2.5e-10 relative over z from
    1e-26 to beyond Z_MAX, both sides of the linear cut-off, signed zeros kept, NaN kept; as float32
    (the map) numpy's tanh rounded, but where that is within the bound of a rounding boundary."""
    rng = np.random.default_rng(11)
    cut = fnm._TANH_LINEAR
    x = np.concatenate(
        [
            rng.normal(0, 1, 200_000),
            rng.uniform(-2 * Z_MAX, 2 * Z_MAX, 200_000),
            np.exp(rng.uniform(-60, 0, 200_000)) * rng.choice([-1, 1], 200_000),
            [0.0, -0.0, cut, -cut, np.nextafter(cut, 0), np.nextafter(cut, 1), Z_MAX, -Z_MAX, 40.0, np.nan],
        ]
    )
    got = fnm._tanh_on_exp_into(x, np.empty_like(x), np.empty_like(x), np.empty(x.size, bool))
    ref = np.tanh(x)
    ok = np.isfinite(ref)
    assert np.isnan(got[~ok]).all() and np.signbit(got[x.size - 9]) and not np.signbit(got[x.size - 10])
    np.testing.assert_allclose(got[ok], ref[ok], rtol=2.5e-10, atol=0)
    assert_float32_rounding_of(got[ok].astype(np.float32), ref[ok], rtol=2.5e-10)


@pytest.mark.parametrize("numpy_own", [True, False], ids=["numpy_tanh", "tanh_on_exp"])
def test_finalize_rmap_is_tanh_of_zmap_either_way(numpy_own, monkeypatch):
    """Both of finalize's tanh paths (numpy's where it has AVX-512 code, else on exp), forced, over
    several blocks of cells: rmap is tanh of the float64 mean z rounded to float32 (the exp form:
    but within its 2.5e-10 of a rounding boundary)."""
    monkeypatch.setattr(fnm, "numpy_avx512", lambda ufunc: numpy_own)
    rng = np.random.default_rng(12)
    n, shape = 9, (3, fnm._FINALIZE_BLOCK + 1000)
    z = rng.normal(0, 0.8, (n, *shape))
    z[:, 0, :50] = rng.normal(0, 1e-7, (n, 50))  # means below the linear cut-off
    maps = finalize_fnm(FnmSums(z.sum(0), (z**2).sum(0), None, n))
    ref = np.tanh(z.sum(0) / n)
    if numpy_own:
        np.testing.assert_array_equal(maps["rmap"], ref.astype(np.float32))
    assert_float32_rounding_of(maps["rmap"], ref, rtol=2.5e-10)


def test_numpy_dispatch_is_read_and_followed():
    """numpy's opt_func_info answers for float64 tanh and log1p (numpy 1.x has none: there the forms
    on exp and log are always taken); AVX-512 code is reported only on a CPU that has AVX-512, and
    never where NPY_DISABLE_CPU_FEATURES turned it off (the AVX2 lane of the tests)."""
    pytest.importorskip("numpy.lib.introspect")
    from lakepipe.blas import cpu_has_avx512

    disabled = "X86_V4" in os.environ.get("NPY_DISABLE_CPU_FEATURES", "")
    for ufunc in ("tanh", "log1p"):
        current = fnm.numpy_dispatch(ufunc)
        assert isinstance(current, str) and current
        if fnm.numpy_avx512(ufunc):
            assert cpu_has_avx512() and not disabled, current
