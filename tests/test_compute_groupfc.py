"""Parcel series and group FC against explicit loops and nilearn's ConnectivityMeasure."""

import numpy as np
from nilearn.connectome import ConnectivityMeasure
from sklearn.covariance import EmpiricalCovariance

from lakepipe.compute.correlation import center_unit
from lakepipe.compute.groupfc import ParcelAverager, finalize_group_fc, subject_fc_z


def parcel_means(unit, scale, mean, labels, n_regions):
    """The parcel means the parcellate method computes (a ParcelAverager per labelling)."""
    return ParcelAverager(labels, n_regions)(unit, scale, mean)


N_REGIONS = 6


def _subject(rng, labels, t=90, noise=1.0):
    """Raw voxel series: each parcel follows one of 3 latent networks (parcels 1 and 4 share one)."""
    latent = rng.standard_normal((t, 3))
    net_of_label = np.array([0, 0, 1, 2, 0, 1, 2])  # label -> network (label 0: none)
    v = labels.size
    loading = rng.uniform(0.5, 1.5, v)
    raw = latent[:, net_of_label[labels]] * loading + noise * rng.standard_normal((t, v))
    raw[:, labels == 0] = rng.standard_normal((t, int((labels == 0).sum())))
    return raw + rng.uniform(-50, 50, v)  # voxel offsets: the mean term matters


def _labels(rng, v=240):
    labels = rng.integers(0, N_REGIONS + 1, v)
    labels[labels == 5] = 4  # parcel 5 has no voxel
    return labels


def _loop_parcel_means(raw, labels, n_regions):
    out = np.full((raw.shape[0], n_regions), np.nan)
    for p in range(1, n_regions + 1):
        if np.any(labels == p):
            out[:, p - 1] = raw[:, labels == p].mean(axis=1)
    return out


def test_parcel_means_equals_loop_on_raw_series():
    rng = np.random.default_rng(3)
    labels = _labels(rng)
    raw = _subject(rng, labels)
    ref = _loop_parcel_means(raw, labels, N_REGIONS)
    unit, scale, mean = center_unit(raw, dtype=np.float64)
    got = parcel_means(unit, scale, mean, labels, N_REGIONS)
    assert np.isnan(got[:, 4]).all() and not np.isnan(np.delete(got, 4, axis=1)).any()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-10)
    # float32 storage: same to float32 precision
    got32 = parcel_means(*center_unit(raw), labels, N_REGIONS)
    np.testing.assert_allclose(got32, ref, rtol=1e-5, atol=1e-4)


def test_group_fc_matches_nilearn_arctanh_mean():
    rng = np.random.default_rng(4)
    labels = _labels(rng)
    keep = np.array([0, 1, 2, 3, 5])  # parcel 5 (column 4) is empty and dropped
    sum_z = np.zeros((keep.size, keep.size))
    ref_series = []
    for _ in range(4):
        raw = _subject(rng, labels)
        ref_series.append(_loop_parcel_means(raw, labels, N_REGIONS)[:, keep])
        ts = parcel_means(*center_unit(raw, dtype=np.float64), labels, N_REGIONS)[:, keep]
        sum_z += subject_fc_z(ts)
    fcgroupz, fcgroupr = finalize_group_fc(sum_z, 4)

    cm = ConnectivityMeasure(cov_estimator=EmpiricalCovariance(), kind="correlation", standardize=False)
    r_subj = cm.fit_transform(ref_series)
    assert np.abs(r_subj[:, 0, 3]).min() > 0.5  # parcels 1 and 4 share a network
    z_subj = np.arctanh(np.clip(r_subj, -0.999999, 0.999999))
    for z in z_subj:
        np.fill_diagonal(z, 0)
    ref_z = z_subj.mean(axis=0)
    ref_r = np.tanh(ref_z)
    np.fill_diagonal(ref_r, 1)
    np.testing.assert_allclose(fcgroupz, ref_z, atol=1e-6)
    np.testing.assert_allclose(fcgroupr, ref_r, atol=1e-6)
    assert np.all(np.diag(fcgroupz) == 0) and np.all(np.diag(fcgroupr) == 1)
    assert fcgroupz.dtype == fcgroupr.dtype == np.float64


def test_subject_fc_z_constant_parcel_is_zero():
    rng = np.random.default_rng(5)
    ts = rng.standard_normal((30, 4))
    ts[:, 1] = 3.0
    z = subject_fc_z(ts)
    assert np.all(z[1] == 0) and np.all(z[:, 1] == 0) and np.all(np.diag(z) == 0)
    np.testing.assert_allclose(z[0, 2], np.arctanh(np.corrcoef(ts[:, 0], ts[:, 2])[0, 1]), atol=1e-12)


def test_numba_parcel_sums_equal_scipys_bit_for_bit():
    """The numba kernel (the default where numba is) against scipy's CSR mat-vec: the same float64
    sums in the same order, so equal bit for bit, streamed in blocks that split parcels, with T not a
    multiple of the kernel's 8 time points, on a real atlas (Schaefer 100, a slab of it: parcels
    missing from the slab are NaN columns)."""
    import nibabel as nib
    import pytest

    from lakepipe.compute.parcel_sums import block_sums
    from tests.conftest import shared_atlas

    pytest.importorskip("numba")
    assert block_sums() is not None  # the fast path is there where numba is
    img, _ = shared_atlas("100Parcels7Networks")
    labels = np.asarray(nib.load(img).dataobj)[::2, ::2, 40:56:2].ravel().astype(np.int64)
    rng = np.random.default_rng(8)
    t, v = 45, labels.size
    unit = rng.standard_normal((t, v)).astype(np.float32)
    scale, mean = rng.uniform(0.5, 2.0, v), rng.uniform(-50, 50, v)
    fast, slow = (ParcelAverager(labels, 100, block=1000, use_numba=u) for u in (True, False))
    assert fast._kernel is not None and slow._kernel is None
    got = fast.series(lambda a, b: unit[:, a:b], scale, mean, t)
    want = slow.series(lambda a, b: unit[:, a:b], scale, mean, t)
    missing = fast.counts == 0
    assert 0 < missing.sum() < 100 and np.isnan(got[:, missing]).all()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ParcelAverager(labels, 100)(unit, scale, mean), want)  # whole rows
    ref = _loop_parcel_means(unit * scale + mean, labels, 100)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)  # float32 units, float64 sums
