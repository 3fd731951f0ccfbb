"""Importing this module chooses the Fisher z kernel for this process (:func:`fisher_kernel`: numba's
cached machine code loaded and self-checked, 0.5-0.7 s) and loads the Benjamini-Hochberg radix sort
(:func:`lakepipe.compute.bh.warm`), for a forkserver's preload list: every Dask worker forked from
that process then starts with both ready instead of loading them itself.

A failure here never stops the import (a forkserver must start whatever happens); the worker then
chooses its kernel itself, and logs why.
"""

from __future__ import annotations

import logging

from lakepipe.compute import bh
from lakepipe.compute.fisher import fisher_kernel

try:
    fisher_kernel()
    bh.warm()
except Exception as exc:  # noqa: BLE001 - see the module docstring
    logging.getLogger(__name__).debug("FNM kernels not loaded ahead of the workers: %s", exc)
