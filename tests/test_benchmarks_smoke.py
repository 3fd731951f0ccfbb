"""The benchmark scripts run end to end in their tiny ``--quick`` form and write their JSON results.

They only have to work here; the figures they print are not checked (the machine is shared).
Benchmark data go to a cache made for this session (the first script pays for the tutorial data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-cache")


def _run(name: str, cache: Path, results: Path) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / f"{name}.py"),
            "--quick",
            "--cache",
            str(cache),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=580,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONUNBUFFERED": "1", "LAKEPIPE_SCHEDULER": ""},  # real local clusters
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    path = results / f"{name}-quick.json"
    assert path.exists(), proc.stdout[-2000:]
    out = json.loads(path.read_text())
    assert out["benchmark"] == name and out["quick"] is True and out["rows"]
    assert "load" in proc.stdout  # every figure is printed with the machine's load
    return out


def test_bench_ingest(cache, tmp_path):
    out = _run("bench_ingest", cache, tmp_path)
    assert [r["subjects"] for r in out["rows"]] == [1, 2, 3]
    assert all(r["peak_rss_mb"] > 0 and r["mb_per_s"] > 0 for r in out["rows"])


def test_bench_parcellate(cache, tmp_path):
    out = _run("bench_parcellate", cache, tmp_path)
    assert out["rows"][0]["what"].startswith("I/O floor") and len(out["rows"]) == 3
    assert all(r["wall_s"] > 0 for r in out["rows"])


def test_bench_afnm(cache, tmp_path):
    out = _run("bench_afnm", cache, tmp_path)
    assert {r["atlas"] for r in out["rows"]} == {"Schaefer400", "Schaefer400TianS3"}
    assert all(r["lesions"] == 20 and r["lesions_per_s"] > 0 for r in out["rows"])


def test_bench_fnm(cache, tmp_path):
    out = _run("bench_fnm", cache, tmp_path)
    assert [r["seeds"] for r in out["rows"]] == [1, 3]
    assert set(out["targets"]) == {"within_2x_floor", "speedup_ge_50x", "peak_rss_lt_4gb"}
    assert out["gemm_rate_gflops"] > 0 and out["dask_workers"]


def test_bench_inplace(cache, tmp_path):
    out = _run("bench_inplace", cache, tmp_path)
    cases = {r["case"] for r in out["rows"]}
    assert {"one command", "separate steps", "one command, reused"} <= cases
    assert all(r["wall_s"] > 0 and r["peak_rss_mb"] > 0 for r in out["rows"])
    assert 0 < out["disk"]["inplace_bytes"] < out["disk"]["copied_bytes"]
    assert len(out["reads"]) == 3 and all(r["gb_per_s"] > 0 for r in out["reads"])


def test_bench_stats_lake(cache, tmp_path):
    out = _run("bench_stats_lake", cache, tmp_path)
    runs = {(r["test"], r["maps"], r["workers"]) for r in out["rows"]}
    assert runs == {(t, n, w) for t in ("specificity", "symptom") for n in (10, 20) for w in (1, 2)}
    assert set(out["targets"]) == {
        "within_2x_floor",
        "within_2x_tile_gemms",
        "within_2x_cpu_floor",
        "speedup_2_workers_ge_1.8",
    }
    assert all(r["wall_s"] > 0 and r["peak_rss_mb"] > 0 and r["tile_gemm_s"] > 0 for r in out["rows"])
    assert out["gemm_rate_gflops"] > 0 and set(out["nilearn"]) == {"specificity", "symptom"}


def test_bench_ingest_fmriprep(cache, tmp_path):
    out = _run("bench_ingest_fmriprep", cache, tmp_path)
    assert [r["what"] for r in out["rows"]] == [
        "nilearn NiftiMasker, 1 process",
        "lakepipe, 1 worker",
        "lakepipe, 2 workers",
    ]
    assert all(r["wall_s"] > 0 and r["peak_rss_gb"] > 0 for r in out["rows"])
    assert out["runs"] == 4 and out["simd"]["simd_found"]
