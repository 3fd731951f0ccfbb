"""Permutation plans and permutation p-values that do not depend on how the work is split.

A :class:`PermutationPlan` says which relabellings make the null distribution. Permutation ``k``
(``0 <= k < n_perm``) depends only on ``(seed, k)``: random permutations come in fixed chunks of
:data:`CHUNK` rows, chunk ``c`` drawn from ``numpy.random.default_rng([seed, c])``, so any block
``[start, stop)`` is the same whatever the blocks around it, and a result assembled from any
split over workers is bit-identical to one computed in a single call.

Each permutation is an index array ``perm`` of length n: the permuted design is ``X[perm]``
(rows of the tested variable and covariates moved together; under Freedman-Lane this is the same
as permuting the residuals of the data, see :mod:`lakepipe.compute.stats.glm`).

Exact enumeration. When the requested count reaches the number of distinct relabellings less one,
all of them are enumerated instead (``exact = True``), the identity (the observed labelling)
excluded, so ``n_perm = n_distinct - 1`` and the usual ``(1 + #{null >= observed}) / (1 + n_perm)``
is exactly the permutation p-value ``#{relabellings >= observed} / n_distinct`` (the observed
labelling counts once, through the 1). Distinct relabellings are:

- two groups, no covariates (``cases`` given): which ``n_cases`` of the n maps are cases,
  ``comb(n, n_cases)``, in ``itertools.combinations`` order;
- anything else (scores, or groups with covariates, where the covariates move with the labels):
  all ``n!`` orderings, in ``itertools.permutations`` order. With tied values some orderings give
  the same relabelling; each distinct one then appears equally often, so p is still exact.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]
Tail = Literal["two-sided", "greater", "less"]
TAILS: tuple[str, ...] = ("two-sided", "greater", "less")

#: random permutations are drawn in chunks of this many rows, chunk ``c`` from ``default_rng([seed, c])``
CHUNK = 1024

#: null values within this of the observed statistic (correlation units, |u| <= 1) count as ties:
#: relabellings that tie in exact arithmetic (the complement labelling of equal groups, tied scores)
#: then count whatever the float64 rounding (~n * 1e-16); far below any real difference
TIE_TOL = 1e-10


def check_tail(tail: str) -> Tail:
    """Validate a tail name (``two-sided``, ``greater`` or ``less``)."""
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    return tail  # type: ignore[return-value]


def _combination_rank(comb: tuple[int, ...], n: int) -> int:
    """Position of a sorted combination in ``itertools.combinations(range(n), len(comb))`` order."""
    k = len(comb)
    rank, prev = 0, -1
    for i, c in enumerate(comb):
        for j in range(prev + 1, c):
            rank += math.comb(n - 1 - j, k - 1 - i)
        prev = c
    return rank


@dataclass(frozen=True)
class PermutationPlan:
    """The relabellings of one permutation test.

    Attributes
    ----------
    n : int
        Observations (maps or patients).
    n_perm : int
        Permutations in the null distribution (the identity excluded when ``exact``).
    seed : int
        Seed of the random permutations (recorded even when exact).
    exact : bool
        All distinct relabellings enumerated instead of drawn at random.
    n_distinct : int
        Distinct relabellings, the identity included.
    requested : int
        The number of permutations asked for.
    cases : tuple of int
        Observed case rows when relabelling two groups without covariates, else empty.
    """

    n: int
    n_perm: int
    seed: int
    exact: bool
    n_distinct: int
    requested: int
    cases: tuple[int, ...] = field(default=())

    @property
    def scheme(self) -> str:
        """``labels`` (which maps are cases) or ``full`` (all orderings)."""
        return "labels" if self.cases else "full"

    def block(self, start: int, stop: int) -> IntArray:
        """Permutations ``start .. stop-1`` as a (stop - start, n) index array."""
        if not 0 <= start <= stop <= self.n_perm:
            raise ValueError(f"permutation block [{start}, {stop}) outside [0, {self.n_perm})")
        if self.exact:
            return self._enumerated(start, stop)
        out = np.empty((stop - start, self.n), dtype=np.intp)
        first, last = start // CHUNK, (stop - 1) // CHUNK if stop > start else start // CHUNK - 1
        for c in range(first, last + 1):
            rng = np.random.default_rng([self.seed, c])
            rows = rng.permuted(np.tile(np.arange(self.n, dtype=np.intp), (CHUNK, 1)), axis=1)
            lo, hi = max(start, c * CHUNK), min(stop, (c + 1) * CHUNK)
            out[lo - start : hi - start] = rows[lo - c * CHUNK : hi - c * CHUNK]
        return out

    def blocks(self, size: int) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` covering all permutations in blocks of ``size``."""
        if size < 1:
            raise ValueError(f"block size must be positive, got {size}")
        return [(s, min(s + size, self.n_perm)) for s in range(0, self.n_perm, size)]

    def _enumerated(self, start: int, stop: int) -> IntArray:
        out = np.empty((stop - start, self.n), dtype=np.intp)
        if stop == start:
            return out
        if self.cases:
            cases = np.array(self.cases, dtype=np.intp)
            controls = np.setdiff1d(np.arange(self.n), cases)
            skip = _combination_rank(self.cases, self.n)
            combos = itertools.combinations(range(self.n), len(self.cases))
            lo = start if start < skip else start + 1
            hi = stop if stop <= skip else stop + 1
            row = 0
            for pos, comb in enumerate(itertools.islice(combos, lo, hi), start=lo):
                if pos == skip:
                    continue
                chosen = np.zeros(self.n, dtype=bool)
                chosen[list(comb)] = True
                # X[perm] has the case rows at the chosen positions, the control rows elsewhere
                out[row, chosen] = cases
                out[row, ~chosen] = controls
                row += 1
            return out
        # itertools.permutations yields the identity first: permutation k is ordering k + 1
        for row, p in enumerate(itertools.islice(itertools.permutations(range(self.n)), start + 1, stop + 1)):
            out[row] = p
        return out

    def describe(self) -> dict[str, Any]:
        """The plan for output metadata."""
        return {
            "n_permutations": self.n_perm,
            "n_permutations_requested": self.requested,
            "seed": self.seed,
            "exact_enumeration": self.exact,
            "n_distinct_relabellings": self.n_distinct,
            "scheme": self.scheme,
            "generator": f"numpy default_rng([seed, chunk]) permuted rows, chunks of {CHUNK}",
            "identity": "excluded from the null when exact; random draws may include it",
            "p_value": "(1 + #{null >= observed}) / (1 + n_permutations)",
        }


def permutation_plan(
    n: int, n_perm: int, seed: int, cases: npt.ArrayLike | None = None, covariates: bool = False
) -> PermutationPlan:
    """Plan a permutation test of n observations.

    Parameters
    ----------
    n
        Observations.
    n_perm
        Permutations requested (>= 1).
    seed
        Non-negative integer seed.
    cases
        (n,) case labels (bool or 0/1) for a two-group test; None for a score test.
    covariates
        Whether the model has covariates (then the covariates move with the labels and all ``n!``
        orderings are distinct relabellings).

    Returns
    -------
    PermutationPlan
        Exact (all distinct relabellings but the identity) when ``n_perm >= n_distinct - 1``.
    """
    if n_perm < 1:
        raise ValueError(f"the number of permutations must be at least 1, got {n_perm}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"the permutation seed must be a non-negative integer, got {seed!r}")
    case_rows: tuple[int, ...] = ()
    if cases is not None and not covariates:
        lab = np.asarray(cases).astype(bool)
        if lab.shape != (n,):
            raise ValueError(f"case labels have shape {lab.shape}, expected ({n},)")
        case_rows = tuple(int(i) for i in np.flatnonzero(lab))
        n_distinct = math.comb(n, len(case_rows))
    else:
        n_distinct = math.factorial(n)
    exact = n_perm >= n_distinct - 1
    return PermutationPlan(
        n=n,
        n_perm=n_distinct - 1 if exact else n_perm,
        seed=int(seed),
        exact=exact,
        n_distinct=n_distinct,
        requested=n_perm,
        cases=case_rows if exact else (),
    )


def tail_statistic(values: npt.ArrayLike, tail: str) -> FloatArray:
    """The values as they enter a max-statistic test: ``|x|``, ``x`` or ``-x`` for the three tails."""
    x = np.asarray(values, dtype=np.float64)
    t = check_tail(tail)
    return np.abs(x) if t == "two-sided" else (x if t == "greater" else -x)


def combine_voxel_blocks(parts: list[FloatArray] | tuple[FloatArray, ...]) -> FloatArray:
    """Null maxima of one permutation block from its voxel blocks: the elementwise maximum.

    The maximum is exact (independent of order), so any grouping of voxel blocks gives the same bits.
    """
    if not parts:
        raise ValueError("no voxel blocks to combine")
    out: FloatArray = np.maximum.reduce([np.asarray(p, dtype=np.float64) for p in parts])
    return out


def max_statistic_pvalues(
    observed: npt.ArrayLike, null_max: npt.ArrayLike, tail: str = "two-sided", tie_tol: float = 0.0
) -> FloatArray:
    """FWE-corrected p per voxel from the null distribution of the maximum statistic.

    Parameters
    ----------
    observed
        Observed statistic per voxel (signed).
    null_max
        (n_perm,) maximum over all voxels, per permutation, of the statistic transformed by
        :func:`tail_statistic` with the same ``tail``.
    tail
        ``two-sided`` (``|x|``), ``greater`` or ``less``.
    tie_tol
        Null values ``>= stat(v) - tie_tol`` count (:data:`TIE_TOL` for correlation-scale statistics).

    Returns
    -------
    numpy.ndarray
        ``(1 + #{k: null_max[k] >= stat(v) - tie_tol}) / (1 + n_perm)``; NaN where ``observed`` is NaN.
    """
    stat = tail_statistic(observed, tail)
    null = np.sort(np.asarray(null_max, dtype=np.float64).ravel())
    if null.size == 0 or np.isnan(null).any():
        raise ValueError("the null distribution is empty or contains NaN")
    count = null.size - np.searchsorted(null, stat - tie_tol, side="left")
    p = (1.0 + count) / (1.0 + null.size)
    return np.where(np.isnan(stat), np.nan, p)


def exceedance_pvalues(counts: npt.ArrayLike, n_perm: int) -> FloatArray:
    """Uncorrected permutation p per voxel: ``(1 + counts) / (1 + n_perm)``."""
    return (1.0 + np.asarray(counts, dtype=np.float64)) / (1.0 + n_perm)
