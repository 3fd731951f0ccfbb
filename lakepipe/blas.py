"""BLAS kernel choice for this CPU (stdlib only, so it can run before numpy is imported).

OpenBLAS's runtime detection picks a slower kernel than AVX-512 CPUs support; with
``OPENBLAS_CORETYPE=SkylakeX`` float32 GEMM measured about 1.9x faster on these machines, with
identical results to float32 precision. lakepipe sets it for its Dask worker processes and for the
command line (before numpy loads) only where the CPU has AVX-512.
"""

from __future__ import annotations

import os

BLAS_ENV_VAR = "OPENBLAS_CORETYPE"


def cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return False


def blas_environment() -> dict[str, str]:
    """Environment for worker processes: ``OPENBLAS_CORETYPE=SkylakeX`` where the CPU has AVX-512.

    An explicit ``OPENBLAS_CORETYPE`` wins; ``LAKEPIPE_BLAS_TUNING=0`` turns the choice off.
    """
    if os.environ.get(BLAS_ENV_VAR):
        return {BLAS_ENV_VAR: os.environ[BLAS_ENV_VAR]}
    if os.environ.get("LAKEPIPE_BLAS_TUNING", "1") == "0" or not cpu_has_avx512():
        return {}
    return {BLAS_ENV_VAR: "SkylakeX"}


def tune_blas_for_this_process() -> None:
    """Apply :func:`blas_environment` to this process; effective only before numpy is imported."""
    for k, v in blas_environment().items():
        os.environ.setdefault(k, v)
