"""Benjamini-Hochberg q per row (:mod:`lakepipe.compute.bh`, FNM's ``pfdrmap``): both implementations
give scipy's ``false_discovery_control`` of the float32 p, rounded to float32, bit for bit.

The rows mix what FNM p maps hold: many tiny p (a seed's own network, exponents from 2^-126 up), a
uniform null part, exact ties (p = 1 where t = 0, p = 0 below float32's range, repeated values),
and lengths that leave the radix sort's buckets unevenly filled.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lakepipe.compute import bh


def _rows(n_rows: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, (n_rows, m)).astype(np.float32)
    k = m // 5
    p[:, :k] = np.exp2(-rng.uniform(1, 126, (n_rows, k))).astype(np.float32)  # every exponent
    p[:, k : k + m // 20] = 1.0
    p[:, k + m // 20 : k + m // 10] = 0.0
    p[:, m - m // 10 :] = rng.choice(rng.uniform(0, 1, 7).astype(np.float32), (n_rows, m // 10))  # ties
    for row in p:
        rng.shuffle(row)
    return p


def _scipy(p: np.ndarray) -> np.ndarray:
    return np.stack([stats.false_discovery_control(r.astype(np.float64), method="bh") for r in p]).astype(
        np.float32
    )


@pytest.mark.parametrize("implementation", bh.IMPLEMENTATIONS)
@pytest.mark.parametrize(("n_rows", "m"), [(3, 20_011), (2, 1), (2, 2), (1, 5_000)])
def test_equals_scipy_bit_for_bit(implementation, n_rows, m):
    p = _rows(n_rows, m, seed=m)
    q = bh.bh_q_rows(p, implementation)
    assert q.dtype == np.float32 and q.shape == p.shape
    np.testing.assert_array_equal(q, _scipy(p))
    np.testing.assert_array_equal(bh.bh_q_rows(p[0], implementation), q[0])  # one row alone


def test_the_fast_implementation_is_used_where_numba_is():
    pytest.importorskip("numba")
    assert bh._implementation(None) is not bh._keysort_rows


def test_rejects_what_is_not_a_p_value():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bh.bh_q_rows(np.array([[0.1, np.nan]], np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bh.bh_q_rows(np.array([0.1, 1.5], np.float32))
    with pytest.raises(ValueError, match="float32"):
        bh.bh_q_rows(np.array([0.1, 0.5]))
    with pytest.raises(ValueError, match="unknown"):
        bh.bh_q_rows(np.array([0.1], np.float32), "quicksort")
