#!/usr/bin/env bash
# The README's test command: install lakepipe with its test and development tools (and PostgreSQL and
# Chromium when root on Debian), check the layers and style, then run the tests in two
# concurrent streams, with mypy (types) beside them:
#   A. the integration lane (a Dask cluster of worker processes, S3, PostgreSQL, Chromium, the CLI),
#      without the two files stream B runs, then the numeric tests once more on the AVX2 code paths
#      with OpenBLAS's Haswell kernel;
#   B. the unit lane, the README's commands (tests/test_readme.py), the benchmark scripts' --quick runs.
# The two share no state (their own pytest temporary folders, their own clusters and servers). Run
# alone, each lane kept 1.1 of 2 cores busy on average; side by side they finish sooner (see
# CONTRIBUTING.md for the figures). Stream B's output is printed after stream A's.
# Extra arguments go to every pytest run (e.g. -x, -k NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
PY=.venv/bin/python
export PYTHONDONTWRITEBYTECODE=1

echo "== static checks: ruff, ruff format, import-linter (layers); mypy (types) runs beside the tests"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports

TMP=$(mktemp -d "${TMPDIR:-/tmp}/lakepipe-tests.XXXXXX")
B_PID=""
MYPY_PID=""
cleanup() {
  for pid in $B_PID $MYPY_PID; do  # stopped early (Ctrl-C, a failed step): stop stream B, its pytest, mypy
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
# mypy (45 s on one core without its cache) would otherwise run alone while the other core idles
.venv/bin/mypy > "$TMP/mypy.log" 2>&1 &
MYPY_PID=$!
pytest_lane() {  # pytest_lane NAME ARGS...: one pytest run in its own temporary folder, its slowest
  # tests listed at the end (where the suite's time goes, in every CI log)
  local name=$1
  shift
  "$PY" -m pytest -q -p no:cacheprovider --durations=25 --basetemp "$TMP/$name" "$@"
}
BENCH=tests/test_benchmarks_smoke.py
README_TEST=tests/test_readme.py  # 44 fresh processes one after another: the longest single test

stream_b() {
  echo "== unit lane"
  pytest_lane unit -m "not integration" "$@"
  echo "== the README's commands as written"
  pytest_lane readme "$README_TEST" "$@"
  echo "== benchmark scripts, --quick"
  pytest_lane bench "$BENCH" "$@"
}
avx2_lane() {
  echo "== numerics on another CPU class: numpy without AVX-512, OpenBLAS Haswell kernel"
  NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=Haswell pytest_lane avx2 "$@" \
    tests/test_compute_fnm.py tests/test_compute_fisher.py tests/test_compute_correlation.py \
    tests/test_compute_groupfc.py tests/test_compute_resample.py tests/test_compute_bh.py \
    tests/test_parcellate.py::test_parcellate_matches_nilearn
}

echo "== stream B (unit lane, README commands, benchmark scripts) started beside stream A; its output follows A's"
stream_b "$@" > "$TMP/stream-b.log" 2>&1 &
B_PID=$!

echo "== stream A: integration lane (Dask cluster of worker processes, S3-protocol server, PostgreSQL, Chromium), then AVX2 numerics"
rc_a=0
pytest_lane integration -m integration --ignore "$BENCH" --ignore "$README_TEST" "$@" || rc_a=$?
avx2_lane "$@" || rc_a=$?

rc_b=0
wait "$B_PID" || rc_b=$?
B_PID=""
cat "$TMP/stream-b.log"
rc_m=0
wait "$MYPY_PID" || rc_m=$?
MYPY_PID=""
echo "== mypy (types)"
cat "$TMP/mypy.log"
echo "== stream A (integration lane, AVX2 numerics): exit $rc_a; stream B (unit, README, benchmarks): exit $rc_b; mypy: exit $rc_m"
[ "$rc_a" -eq 0 ] && [ "$rc_b" -eq 0 ] && [ "$rc_m" -eq 0 ]
