"""Correlation kernels against numpy and nilearn."""

import numpy as np
import pytest
from nilearn.connectome import ConnectivityMeasure
from sklearn.covariance import EmpiricalCovariance

from lakepipe.compute.correlation import R_CLIP, Z_MAX, center_unit, fisher_z, pearson_matrix, unit_columns


def _networks(rng, t=70, n=9, k=3, noise=0.6):
    """Columns mixing k latent time courses: strong positive and negative correlations."""
    latent = rng.standard_normal((t, k))
    mix = rng.standard_normal((k, n)) * 2.0
    return 5.0 + latent @ mix + noise * rng.standard_normal((t, n))


def test_pearson_matches_corrcoef_and_nilearn_with_constant_columns():
    rng = np.random.default_rng(1)
    x = _networks(rng)
    x[:, 3] = 0.1  # constant with a value that is not exact in binary
    x[:, 6] = -2.5e6
    live = np.array([i not in (3, 6) for i in range(x.shape[1])])
    r = pearson_matrix(x)

    ref = np.corrcoef(x[:, live].T)
    cm = ConnectivityMeasure(cov_estimator=EmpiricalCovariance(), kind="correlation", standardize=False)
    ref_nilearn = cm.fit_transform([x[:, live]])[0]
    assert np.abs(ref[np.triu_indices(live.sum(), 1)]).max() > 0.7  # strongly correlated data
    np.testing.assert_allclose(r[np.ix_(live, live)], ref, atol=1e-12)
    np.testing.assert_allclose(r[np.ix_(live, live)], ref_nilearn, atol=1e-12)
    assert np.all(r[~live] == 0) and np.all(r[:, ~live] == 0)
    assert np.all(np.diag(r)[live] == 1.0)
    assert r.dtype == np.float64 and np.array_equal(r, r.T)


def test_center_unit_roundtrip_axis_and_dtype():
    rng = np.random.default_rng(2)
    x = _networks(rng, t=40, n=6)
    x[:, 2] = 7.3
    unit, scale, mean = center_unit(x)
    assert unit.dtype == scale.dtype == mean.dtype == np.float32
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(scale, np.linalg.norm(x - x.mean(0), axis=0), rtol=1e-6, atol=1e-6)
    assert scale[2] == 0 and np.all(unit[:, 2] == 0)
    np.testing.assert_allclose(np.linalg.norm(unit[:, [0, 1, 3, 4, 5]], axis=0), 1, atol=1e-6)
    np.testing.assert_allclose(unit * scale + mean, x, rtol=1e-5, atol=1e-4)
    # time along axis 1 gives the transposed result
    u1, s1, m1 = center_unit(x.T, axis=1, dtype=np.float64)
    np.testing.assert_allclose(u1.T, unit, atol=1e-6)
    np.testing.assert_allclose(s1, scale, rtol=1e-6)
    np.testing.assert_allclose(unit_columns(x), u1.T, atol=1e-15)


def test_fisher_z_clip_and_dtype():
    r = np.array([-1.5, -1.0, -0.5, 0.0, 0.3, 0.9999995, 1.0])
    expected = np.arctanh(np.clip(r, -0.999999, 0.999999))
    z = fisher_z(r)
    assert z.dtype == np.float64
    np.testing.assert_array_equal(z, expected)
    assert z[-1] == Z_MAX == np.arctanh(R_CLIP) and np.isfinite(z).all()
    z32 = fisher_z(r.astype(np.float32))
    assert z32.dtype == np.float32
    # clipped values get the float64 clip's z, rounded to float32 (not arctanh(float32(0.999999)))
    np.testing.assert_array_equal(z32[[0, 1, 5, 6]], np.float32(expected[[0, 1, 5, 6]]))
    np.testing.assert_allclose(z32, expected, rtol=1e-6)
    # the clip applies to the float32 value: just below R_CLIP is not clipped, just above is
    below, above = np.float32(0.99999899), np.float32(0.99999905)
    assert float(below) < R_CLIP < float(above)
    np.testing.assert_allclose(fisher_z(below), np.arctanh(np.float64(below)), rtol=1e-6)
    assert fisher_z(below) < np.float32(Z_MAX) == fisher_z(above)
    assert fisher_z(np.array([1, 0])).dtype == np.float64
    assert fisher_z(np.float16([1.0]))[0] == np.float16(Z_MAX)


def test_pearson_matrix_rejects_non_2d():
    with pytest.raises(ValueError):
        pearson_matrix(np.zeros(5))
