"""The tabulated two-sided Student t p-values FNM uses for large maps equal scipy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

import lakepipe.compute.fnm as fnm
from lakepipe.compute.fnm import _P_TABLE_MIN, _t_and_p, _two_sided_p
from lakepipe.compute.fnm_conventions import T_MAX
from tests.tolerances import assert_float32_rounding_of


@pytest.mark.parametrize("df", [1, 2, 7, 49, 999, 4999])
@pytest.mark.parametrize("simd_log1p", [True, False], ids=["log1p", "log_of_1_plus"])
def test_table_equals_stdtr(df, simd_log1p, monkeypatch):
    """Both lookups (numpy's log1p where it has AVX-512 code for it, else log(1 + |t|)), forced."""
    monkeypatch.setattr(fnm, "numpy_avx512", lambda ufunc: simd_log1p)
    rng = np.random.default_rng(df)
    t = np.concatenate(
        [
            rng.standard_normal(200_000) * 3,
            rng.uniform(-60, 60, 50_000),
            np.exp(rng.uniform(0, np.log(T_MAX), 20_000)),
            [0.0, T_MAX, -T_MAX, 1e-300, 5e-7],
        ]
    )
    ref = 2 * special.stdtr(df, -np.abs(t))
    got = _two_sided_p(df)(t)
    ok = ref > 1e-40
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-10)
    assert np.all(got[~ok] < 1e-40) and got[np.flatnonzero(t == 0)[0]] == 1.0
    # the maps are float32: scipy's values rounded, but within the table's error of a boundary
    assert_float32_rounding_of(got[ok].astype(np.float32), ref[ok], rtol=1e-10)


def test_large_maps_use_the_table_small_ones_scipy():
    rng = np.random.default_rng(0)
    n = 9
    mean = rng.standard_normal(_P_TABLE_MIN + 5)
    sum_z2 = n * mean**2 + rng.uniform(0.1, 5, mean.size)
    t, p = _t_and_p(mean, sum_z2, n)
    np.testing.assert_allclose(p, 2 * special.stdtr(n - 1, -np.abs(t)), rtol=1e-10)
    t_small, p_small = _t_and_p(mean[:100], sum_z2[:100], n)
    np.testing.assert_array_equal(p_small, 2 * special.stdtr(n - 1, -np.abs(t_small)))
