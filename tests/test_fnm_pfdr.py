"""``pfdrmap``: each seed's Benjamini-Hochberg q over its in-brain voxels, from :func:`finalize_fnm`.

Sums are made from per-subject z maps with a planted effect in some voxels (one seed), none (many
null seeds) and everywhere (one seed); the reference is scipy's ``false_discovery_control`` of the
stored (float32) pmap, row by row, and a plain loop over the sorted p-values.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from lakepipe.compute.fnm import FnmSums, finalize_fnm
from lakepipe.compute.fnm_conventions import FNM_CONVENTIONS

N_SUB, N_VOX = 12, 600
N_NULL = 40
EFFECT = slice(0, 60)  # voxels with a planted effect in seed 0


def _sums(z: np.ndarray) -> FnmSums:
    """Sums over subjects of (seed, subject, voxel) z maps."""
    return FnmSums(z.sum(axis=1), (z * z).sum(axis=1), None, z.shape[1])


def _z() -> np.ndarray:
    rng = np.random.default_rng(12)
    z = rng.standard_normal((2 + N_NULL, N_SUB, N_VOX))
    z[0, :, EFFECT] += 1.5  # effect size 1.5 sd: t ~ 5 with 12 subjects, found by BH
    z[1] += 1.2  # every voxel: t ~ 4 (p ~ 2e-3), so BH at 0.05 finds nearly all
    return z


def _bh_loop(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q the textbook way: q_(i) = min over j >= i of m p_(j) / j, capped at 1."""
    m = p.size
    order = np.argsort(p, kind="stable")
    q = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        q[i] = running
    return q


def test_pfdrmap_is_scipys_bh_of_each_pmap():
    maps = finalize_fnm(_sums(_z()), with_pfdr=True)
    assert maps["pfdrmap"].dtype == np.float32 and maps["pfdrmap"].shape == maps["pmap"].shape
    for j in range(maps["pmap"].shape[0]):
        p = maps["pmap"][j].astype(np.float64)  # the map users see: q follows from it exactly
        expected = stats.false_discovery_control(p, method="bh")
        np.testing.assert_array_equal(maps["pfdrmap"][j], expected.astype(np.float32))
        # the loop: the same q up to the float64 rounding of m p / j (one product and one quotient),
        # compared after both are rounded to float32 (relative 2^-24 each)
        np.testing.assert_allclose(maps["pfdrmap"][j], _bh_loop(p), rtol=2 * 2.0**-24 + 4 * 2.0**-53)
    assert "pfdrmap" in FNM_CONVENTIONS
    assert "pfdrmap" not in finalize_fnm(_sums(_z()))  # only when asked (the FNM method always asks)


def test_pfdrmap_finds_the_planted_effect_and_is_calibrated_under_the_null():
    q = finalize_fnm(_sums(_z()), with_pfdr=True)["pfdrmap"]
    found = q[0] < 0.05
    # the planted voxels are found (t ~ 5 on 11 df: p ~ 4e-4, far below BH's 0.05 * 60 / 600 = 0.005)
    assert found[EFFECT].mean() > 0.8
    # false discoveries among them: BH keeps the expected proportion <= 0.05 * 540 / 600; allow
    # four times that for one draw (600 voxels)
    false = found.sum() - found[EFFECT].sum()
    assert false / max(found.sum(), 1) < 0.2
    assert (q[1] < 0.05).mean() > 0.9  # an effect everywhere
    # under the global null BH's FDR is its family-wise error: P(any q < 0.05) <= 0.05 per seed; with
    # 40 null seeds P(Binomial(40, 0.05) >= 7) = 0.003
    any_null = (q[2:] < 0.05).any(axis=1)
    assert any_null.sum() < 7, any_null.sum()
    # q >= p everywhere, q <= 1, monotone in p within a seed
    p = finalize_fnm(_sums(_z()))["pmap"]
    assert np.all(q >= p) and np.all(q <= 1)
    for j in range(q.shape[0]):
        order = np.argsort(p[j], kind="stable")
        assert np.all(np.diff(q[j][order]) >= 0)


def test_pfdrmap_without_variance():
    z = _z()[:, :1]  # one subject: no variance estimate, p = 1 everywhere
    maps = finalize_fnm(_sums(z), with_pfdr=True)
    assert np.all(maps["pmap"] == 1) and np.all(maps["pfdrmap"] == 1)
