#!/usr/bin/env bash
# The README's test command: install lakepipe with its test and development tools (and PostgreSQL and
# Chromium when root on Debian), check the layers, types and style, then run the tests in two lanes
# and the numeric tests once more on the AVX2 code paths with OpenBLAS's Haswell kernel.
# Extra arguments go to every pytest run (e.g. -x, -k NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
PY=.venv/bin/python
export PYTHONDONTWRITEBYTECODE=1

echo "== static checks: ruff, ruff format, import-linter (layers), mypy (types)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/mypy

echo "== unit lane"
"$PY" -m pytest -q -p no:cacheprovider -m "not integration" "$@"

echo "== integration lane (Dask cluster of worker processes, S3-protocol server, PostgreSQL, Chromium)"
"$PY" -m pytest -q -p no:cacheprovider -m integration "$@"

echo "== numerics on another CPU class: numpy without AVX-512, OpenBLAS Haswell kernel"
NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=Haswell \
  "$PY" -m pytest -q -p no:cacheprovider "$@" \
  tests/test_compute_fnm.py tests/test_compute_fisher.py tests/test_compute_correlation.py \
  tests/test_compute_groupfc.py tests/test_fnm.py::test_maps_equal_reference tests/test_fnm.py::test_seed_batches \
  tests/test_parcellate.py::test_parcellate_matches_nilearn
