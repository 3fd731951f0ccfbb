"""Input checks: messages a user can act on, with the offending participants and covariates."""

from __future__ import annotations

import numpy as np
import pytest

from lakepipe.compute.stats import (
    StatsInputError,
    check_covariates,
    check_groups,
    check_maps,
    check_scores,
    permutation_plan,
    specificity,
)


def test_too_few_cases_or_controls():
    with pytest.raises(StatsInputError, match="at least 3 cases and 3 controls; got 2 cases and 6 controls"):
        check_groups([1, 1, 0, 0, 0, 0, 0, 0])
    with pytest.raises(StatsInputError, match="got 5 cases and 1 controls"):
        specificity(np.zeros((6, 4)), np.array([1, 1, 1, 1, 1, 0], bool), n_perm=10)
    assert check_groups([1, 1, 1, 0, 0, 0]).tolist() == [True] * 3 + [False] * 3


def test_labels_other_than_zero_one():
    with pytest.raises(StatsInputError, match="rows 2") as err:
        check_groups([1, 0, 2, 1, 0, 1, 0])
    assert err.value.indices == (2,)


def test_missing_and_constant_scores():
    with pytest.raises(StatsInputError, match="missing or not finite for rows 1, 4") as err:
        check_scores([1.0, np.nan, 2.0, 3.0, np.inf])
    assert err.value.indices == (1, 4)
    with pytest.raises(StatsInputError, match="same") as err:
        check_scores([2.0, 2.0, 2.0, 2.0])
    assert err.value.indices == (0, 1, 2, 3)


def test_nan_in_maps_names_rows():
    maps = np.ones((5, 10), dtype=np.float32)
    maps[1, 3] = np.nan
    maps[4, 0] = np.inf
    with pytest.raises(StatsInputError, match="rows 1, 4") as err:
        check_maps(maps)
    assert err.value.indices == (1, 4)
    with pytest.raises(StatsInputError, match="got 5 maps for 6 participants"):
        check_maps(np.ones((5, 2)), n_rows=6)
    assert check_maps(np.ones((2, 2), np.float32)).dtype == np.float32


def test_covariate_collinear_with_group_is_named():
    rng = np.random.default_rng(0)
    group = np.r_[np.ones(6), np.zeros(8)]
    age = rng.normal(60, 10, 14)
    site = 3.0 * group + 1.0  # the group in disguise
    with pytest.raises(StatsInputError, match="collinear with covariate\\(s\\) site") as err:
        check_covariates(np.column_stack([age, site]), 14, ["age", "site"], tested=group)
    assert err.value.names == ("site",)
    # two covariates that together reproduce the group: both named
    a = rng.normal(size=14)
    with pytest.raises(StatsInputError) as err:
        check_covariates(np.column_stack([age, a, group - a]), 14, ["age", "a", "b"], tested=group)
    assert set(err.value.names) == {"a", "b"}


def test_covariates_collinear_with_each_other_or_constant_or_missing():
    rng = np.random.default_rng(1)
    x = rng.normal(size=12)
    with pytest.raises(StatsInputError, match="collinear with each other") as err:
        check_covariates(np.column_stack([x, 2 * x + 1, rng.normal(size=12)]), 12, ["v", "w", "z"])
    assert err.value.names == ("v", "w")
    with pytest.raises(StatsInputError, match="constant") as err:
        check_covariates(np.column_stack([x, np.ones(12)]), 12, ["age", "scanner"])
    assert err.value.names == ("scanner",)
    bad = np.column_stack([x, x**2])
    bad[5, 1] = np.nan
    with pytest.raises(StatsInputError, match="rows 5") as err:
        check_covariates(bad, 12, ["age", "age2"])
    assert err.value.indices == (5,) and err.value.names == ("age2",)


def test_covariates_are_z_scored():
    z = check_covariates(np.column_stack([np.arange(10.0), np.arange(10.0) ** 2]), 10)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-15)
    np.testing.assert_allclose(z.std(axis=0), 1, rtol=1e-14)


def test_plan_arguments():
    with pytest.raises(ValueError, match="at least 1"):
        permutation_plan(10, 0, seed=0)
    with pytest.raises(ValueError, match="non-negative integer"):
        permutation_plan(10, 10, seed=-1)
    with pytest.raises(ValueError, match="outside"):
        permutation_plan(10, 10, seed=0).block(5, 11)
