"""Fisher z kernels (lakepipe.compute.fisher) against float64 arctanh, alone and inside FnmSums.

References are deliberately plain: ``np.arctanh(np.clip(float64(r), -R_CLIP, R_CLIP))`` (the DESIGN
formula, in float64) and sums over subjects in float64 with numpy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lakepipe.compute.fnm as fnm
from lakepipe.compute import fisher
from lakepipe.compute.correlation import R_CLIP, Z_MAX, center_unit
from lakepipe.compute.fnm import FnmSums

ROOT = Path(__file__).resolve().parents[1]
F32_ONE = int(np.float32(1.0).view(np.int32))


def _available() -> list[str]:
    names = []
    for name in fisher.KERNELS:
        try:
            fisher._make(name)
        except ImportError:  # numba not installed: the fused kernel is optional
            continue
        names.append(name)
    return names


KERNELS = _available()


def _ref(r: np.ndarray) -> np.ndarray:
    """The DESIGN convention in float64 on the float32 values (every float32 >= R_CLIP is clipped
    to R_CLIP, whose arctanh is Z_MAX; the float32 clip just above R_CLIP gives the same)."""
    return np.arctanh(np.clip(np.asarray(r, np.float32).astype(np.float64), -R_CLIP, R_CLIP))


@pytest.fixture(scope="module")
def grid():
    """Every float32 in [0.99, 1], past 1 and inf, a dense sample of [0, 0.99) (every 251st
    float32: an odd stride, so all mantissa patterns occur), and the negatives of all."""
    lo = int(np.float32(0.99).view(np.int32))
    top = np.arange(lo, F32_ONE + 1, dtype=np.int32).view(np.float32)
    rest = np.arange(0, lo, 251, dtype=np.int32).view(np.float32)
    beyond = np.float32([np.nextafter(np.float32(1), np.float32(2)), 1.5, 3.0, np.inf])
    pos = np.concatenate([top, rest, beyond])
    r = np.concatenate([pos, -pos])
    return r, _ref(r)


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_z_over_the_whole_range(grid, name):
    r, ref = grid
    kernel = fisher._make(name)
    z = kernel.z(r)
    err = np.abs(z - ref)
    # the kernel's proven bound (fused: 1.2e-7 from its error analysis; log32 and exact: the 1e-6
    # contract), which the analysis must meet on every value, the hardest ones near the clip included
    assert err.max() <= kernel.bound, (name, err.max(), r[err.argmax()])
    assert kernel.bound <= fisher.Z_TOL
    top = np.abs(r) >= np.float32(0.99)
    assert err[top].max() <= kernel.bound
    # clipped cells get exactly +-Z_MAX; the largest unclipped float32 does not
    clipped = np.abs(r) >= fisher._HI
    np.testing.assert_array_equal(z[clipped], np.sign(r[clipped]).astype(np.float64) * Z_MAX)
    below = np.nextafter(fisher._HI, np.float32(0))
    assert float(below) < R_CLIP and kernel.z(np.float32([below]))[0] < Z_MAX - 5e-3
    assert np.isnan(kernel.z(np.float32([np.nan, 0.3]))).tolist() == [True, False]
    if name == "exact":  # it is the convention itself
        np.testing.assert_array_equal(z, ref)


@pytest.mark.parametrize("name", KERNELS)
def test_self_check_passes_and_catches_a_wrong_kernel(name):
    kernel = fisher._make(name)
    assert fisher.self_check(kernel) <= kernel.bound
    # a kernel held to a bound it cannot meet, and one with the wrong clip, both fail
    if name != "exact":
        assert fisher.self_check(dataclasses.replace(kernel, bound=0.0)) > 0.0

    def no_z_clip(r, sz, sz2, sr, col, work):
        cols = slice(col, col + r.shape[1])
        z = np.arctanh(np.clip(r, -fisher._HI, fisher._HI).astype(np.float64))  # no clip at Z_MAX
        sz[:, cols] += z
        sz2[:, cols] += z * z
        if sr is not None:
            sr[:, cols] += r

    assert fisher.self_check(fisher.FisherKernel("no_z_clip", 1.0, no_z_clip)) == np.inf


def test_fallback_to_exact_gives_the_exact_sums(caplog):
    """A kernel failing its self-check is skipped with a warning; the sums then equal the exact
    path's bit for bit."""
    tightened = [dataclasses.replace(fisher._make(n), bound=0.0) for n in KERNELS if n != "exact"]
    with caplog.at_level(logging.WARNING, logger="lakepipe.compute.fisher"):
        chosen = fisher.choose_kernel(tightened)
    assert chosen.name == "exact"
    assert sum("failed its self-check" in rec.getMessage() for rec in caplog.records) == len(tightened)
    units, seeds = _cohort(seed=3)
    via_fallback = FnmSums.zeros(seeds[0].shape[1], units[0].shape[1])
    via_fallback.add_many(units, seeds, kernel=chosen)
    exact = FnmSums.zeros(*via_fallback.shape)
    exact.add_many(units, seeds, kernel="exact")
    for a in ("sum_z", "sum_z2", "sum_r"):
        np.testing.assert_array_equal(getattr(via_fallback, a), getattr(exact, a))


def test_kernel_choice_and_forcing(monkeypatch):
    monkeypatch.delenv(fisher.KERNEL_ENV, raising=False)
    best = fisher.fisher_kernel()
    assert best.name == KERNELS[0]  # the fastest available kernel passes its check on this CPU
    monkeypatch.setenv(fisher.KERNEL_ENV, "log32")
    assert fisher.fisher_kernel().name == "log32"
    assert fisher.fisher_kernel("exact").name == "exact"
    monkeypatch.setenv(fisher.KERNEL_ENV, "nope")
    with pytest.raises(ValueError, match="unknown Fisher z kernel"):
        fisher.fisher_kernel()


def _cohort(seed: int, t: int = 48, v: int = 700, s: int = 4, n_seeds: int = 6):
    """Unit series of s subjects, v voxels in 3 networks (strong r of both signs), a constant voxel;
    seeds: network means, one voxel itself (r = 1 there: clipped) and a constant seed (r = 0)."""
    rng = np.random.default_rng(seed)
    net = rng.integers(0, 3, v)
    load = rng.uniform(0.5, 3.0, v) * rng.choice([-1.0, 1.0], v)
    units, seeds = [], []
    for _ in range(s):
        latent = rng.standard_normal((t, 3))
        raw = latent[:, net] * load + 0.3 * rng.standard_normal((t, v)) + 10.0
        raw[:, 5] = 3.0
        unit = center_unit(raw)[0]
        sd = np.column_stack(
            [raw[:, net == k].mean(axis=1) for k in range(3)]
            + [raw[:, 11], raw[:, 12] + 0.01 * rng.standard_normal(t), np.full(t, 2.0)]
        )[:, :n_seeds]
        units.append(unit)
        seeds.append(center_unit(sd, dtype=np.float64)[0])
    return units, seeds


@pytest.mark.parametrize("name", KERNELS)
def test_fnm_sums_match_a_float64_reference(name, monkeypatch):
    units, seeds = _cohort(seed=1)
    n_seeds, v = seeds[0].shape[1], units[0].shape[1]
    # one voxel block: add_many's float32 GEMM is then the very product the reference takes
    monkeypatch.setattr(fnm, "_TILE_ELEMENTS", n_seeds * v)
    r32 = [np.ascontiguousarray(s.T, np.float32) @ u for u, s in zip(units, seeds, strict=True)]
    z = [_ref(r) for r in r32]
    ref_z, ref_z2 = np.sum(z, axis=0), np.sum([x * x for x in z], axis=0)
    ref_r = np.sum([r.astype(np.float64) for r in r32], axis=0)
    assert (np.abs(np.stack(r32)) > 0.9).mean() > 0.1  # strong correlations of both signs
    clipped = np.abs(np.stack(r32)) >= fisher._HI
    assert clipped.any() and (np.stack(r32) <= -0.9).any()
    kernel = fisher._make(name)
    whole, split = FnmSums.zeros(n_seeds, v), FnmSums.zeros(n_seeds, v)
    whole.add_many(units, seeds, kernel=kernel)  # one group, as a pipeline worker adds them
    split.add_many(units[:1], seeds[:1], kernel=kernel)
    split.add_many(units[1:], seeds[1:], kernel=kernel)
    # sums that are not C-contiguous (not what FnmSums.zeros makes) go through block copies
    fortran = FnmSums(*(np.zeros((n_seeds, v), order="F") for _ in range(3)))
    fortran.add_many(units[:2], seeds[:2], kernel=kernel)
    fortran.add_many(units[2:3], seeds[2:3], kernel=kernel)
    fortran.add_many(units[3:], seeds[3:], kernel=kernel)
    for sums in (whole, split, fortran):
        assert sums.n == 4
        # per subject |z - z_ref| <= bound, so the sum is off by <= 4 bound, plus float64 rounding
        # of sums of 4 terms |z| <= 7.26 (4 * 4 * 2^-53 * 7.26 < 1e-14); z^2: |z^2 - z_ref^2| <=
        # |z - z_ref| (|z| + |z_ref|) <= bound * 2 * 7.26 per subject
        np.testing.assert_allclose(sums.sum_z, ref_z, rtol=0, atol=4 * kernel.bound + 1e-14)
        np.testing.assert_allclose(sums.sum_z2, ref_z2, rtol=0, atol=4 * kernel.bound * 14.6 + 1e-12)
        # r: the same float32 values summed in float64 (4 terms |r| <= 1: rounding <= 4 * 4 * 2^-53)
        np.testing.assert_allclose(sums.sum_r, ref_r, rtol=0, atol=1e-14)
    if name == "exact":  # the reference's own arithmetic: equal up to the order of the float64 sums
        np.testing.assert_allclose(whole.sum_z, ref_z, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", KERNELS)
def test_accumulate_offsets_layouts_and_errors(name):
    kernel = fisher._make(name)
    rng = np.random.default_rng(4)
    r = np.tanh(rng.normal(0, 1.0, (5, 37))).astype(np.float32)
    z = _ref(r)
    # a Fortran-ordered target (not what FnmSums makes) works too, other columns untouched
    for order in ("C", "F"):
        sums = [np.full((5, 100), 2.0, order=order) for _ in range(3)]
        kernel.accumulate(r.copy(), sums[0], sums[1], sums[2], col=50)
        for s, add in zip(sums, (z, z * z, r.astype(np.float64)), strict=True):
            assert np.all(s[:, :50] == 2.0) and np.all(s[:, 87:] == 2.0)
            # |z error| <= bound, |z^2 error| <= bound * 2 * 7.26, plus float64 rounding of 2 + x
            np.testing.assert_allclose(s[:, 50:87], 2.0 + add, rtol=0, atol=kernel.bound * 14.6 + 1e-15)
    with pytest.raises(TypeError):
        kernel.accumulate(r.astype(np.float64), *sums, col=0)
    with pytest.raises(TypeError):
        kernel.accumulate(r, sums[0], sums[1], None, col=70)  # past the end of the sums


_CHILD = """
import json, sys
import numpy as np
from lakepipe.compute import fisher
r = np.load(sys.argv[1])
out = {}
for name in fisher.KERNELS:
    try:
        k = fisher._make(name)
    except ImportError:
        continue
    np.save(sys.argv[2] + name + ".npy", k.z(r))
    out[name] = fisher.self_check(k)
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
out["simd"] = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
out["chosen"] = fisher.fisher_kernel().name
print(json.dumps(out))
"""


def test_avx2_emulation_agrees_within_the_bounds(tmp_path):
    """numpy restricted to AVX2 (and numba compiled for haswell) gives z within each kernel's bound
    of the reference, so the two settings differ by at most twice the bound."""
    r = np.concatenate([np.linspace(-1.0, 1.0, 20001, dtype=np.float32), fisher.check_grid()[::7]])
    np.save(tmp_path / "r.npy", r)
    env = {
        **os.environ,
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "OPENBLAS_CORETYPE": "Haswell",
        "NUMBA_CPU_NAME": "haswell",
        "NUMBA_CPU_FEATURES": "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+lzcnt,+movbe,"
        "+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "r.npy"), str(tmp_path / "z_")],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not {"X86_V4", "AVX512_ICL"} & set(out["simd"])
    assert out["chosen"] == KERNELS[0]
    ref = _ref(r)
    for name in KERNELS:
        kernel = fisher._make(name)
        assert out[name] <= kernel.bound
        z_avx2 = np.load(tmp_path / f"z_{name}.npy")
        assert np.abs(z_avx2 - ref).max() <= kernel.bound
        assert np.abs(z_avx2 - kernel.z(r)).max() <= 2 * kernel.bound
