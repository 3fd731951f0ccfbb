"""numba compilation with its on-disk cache where it can write one (the kernels of
:mod:`~lakepipe.compute.fisher`, :mod:`~lakepipe.compute.bh` and :mod:`~lakepipe.compute.parcel_sums`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def njit_cached(fn: Callable[..., Any], **opts: Any) -> Any:
    """``numba.njit(fn, cache=True, **opts)``, or without the cache where there is no writable cache
    location (then each process compiles). Raises ImportError without numba."""
    import numba  # type: ignore[import-untyped, import-not-found, unused-ignore]

    try:
        return numba.njit(fn, cache=True, **opts)
    except RuntimeError:  # no writable cache location
        return numba.njit(fn, cache=False, **opts)
