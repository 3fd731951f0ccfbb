"""Fisher z transform + float64 accumulation kernels of FNM, under AVX-512 and under AVX2 emulation.

Each SIMD setting runs in its own child process (the variables must be set before numpy loads):

- ``default``: numpy's own SIMD dispatch, OpenBLAS kernel as lakepipe sets it for its workers
  (``OPENBLAS_CORETYPE=SkylakeX`` where the CPU has AVX-512), numba for the host CPU;
- ``avx2``: ``NPY_DISABLE_CPU_FEATURES`` = every dispatch target above X86_V3 (the AVX2 class),
  ``OPENBLAS_CORETYPE=Haswell``, numba compiled for ``haswell`` (``NUMBA_CPU_NAME``/``_FEATURES``).

Each child prints the CPU model, numpy's SIMD extensions, the OpenBLAS kernel and numba's target,
then, single-threaded (per core), medians of >= 5 repeats:

1. ns per element on one cache-resident tile (100 seeds x 655 voxels): numpy float32 ``arctanh``,
   float64 ``arctanh``, float32 ``log``; float64 ``log1p`` and ``tanh`` against what the finalize
   step uses instead below AVX-512 (``log(1 + x)``, tanh on ``exp``); float64 in-place add (tile
   and a 188 MB array); and every transform + accumulate variant tried (z, z^2, r added into
   float64 sums at a column offset):
   ``arctanh32`` (the former kernel: float32 arctanh, then float64 copies and adds), ``exact``
   (float64 arctanh), ``log32`` (numpy float32 log of (1+c)/(1-c)), ``log64`` (the same in
   float64), ``log1p32`` (0.5 log1p(2c/(1-c)), float32), ``fused`` (numba, one pass);
2. the FNM tile loop (``FnmSums.add_many``: 100 seeds x 235,375 voxels x T=120, a group of 4
   subjects as the pipeline's workers add them) per kernel: time / time of the same GEMMs alone;
3. ms per row of the Benjamini-Hochberg q of ``pfdrmap`` (:mod:`lakepipe.compute.bh`) on p rows of
   235,375 voxels mixing a seed network's tiny p, a uniform null part and ties: ``radix`` (numba),
   ``keysort`` (numpy) and scipy's ``false_discovery_control``, with the check that all three agree;
4. with ``--exhaustive``: the max |z error| of each fast kernel on every float32 in [-1, 1]
   against float64 arctanh (~1 min per kernel and setting).

    .venv/bin/python benchmarks/bench_kernels.py [--quick] [--exhaustive] [--repeats N]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench as B  # noqa: E402

NAME = "bench_kernels"
AVX2_NUMBA_FEATURES = (
    "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+lzcnt,+movbe,+popcnt,"
    "+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave"
)
TILE = (100, 655)  # seeds x voxels: the FNM tile of 2^16 cells
FULL_LOOP = {"seeds": 100, "voxels": 235_375, "timepoints": 120, "subjects": 4}
QUICK_LOOP = {"seeds": 100, "voxels": 20_000, "timepoints": 120, "subjects": 2}


def settings() -> dict[str, dict[str, str | None]]:
    """Environment of each SIMD setting's child process (None: unset)."""
    from lakepipe.blas import BLAS_ENV_VAR, cpu_has_avx512

    above_v3 = "X86_V4 AVX512_ICL AVX512_SPR"  # numpy 2.4's dispatch targets beyond AVX2 (X86_V3)
    return {
        # what lakepipe picks when nothing is forced (an inherited OPENBLAS_CORETYPE is overridden)
        "default": {
            BLAS_ENV_VAR: "SkylakeX" if cpu_has_avx512() else None,
            "NPY_DISABLE_CPU_FEATURES": None,
            "NUMBA_CPU_NAME": None,
            "NUMBA_CPU_FEATURES": None,
        },
        "avx2": {
            "NPY_DISABLE_CPU_FEATURES": above_v3,
            BLAS_ENV_VAR: "Haswell",
            "NUMBA_CPU_NAME": "haswell",
            "NUMBA_CPU_FEATURES": AVX2_NUMBA_FEATURES,
        },
    }


# -------------------------------------------------------------------------------------------- child


def _median_ns(fn, n_elements: int, repeats: int, min_time: float = 0.05) -> float:
    """Median over ``repeats`` of the time per element of ``fn()`` (each repeat loops for >= min_time)."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(min_time / one))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - t0) / loops / n_elements * 1e9)
    return B.median(samples)


def _variants():
    """Transform + accumulate variants not in lakepipe (measured for comparison): name -> fn(r, sz,
    sz2, sr, col, work32, work64); r is overwritten."""
    import numpy as np

    from lakepipe.compute.correlation import Z_MAX, clip_above

    hi = clip_above(np.float32)

    def finish(z, sz, sz2, cols):
        np.add(sz[:, cols], z, out=sz[:, cols])
        np.multiply(z, z, out=z)
        np.add(sz2[:, cols], z, out=sz2[:, cols])

    def arctanh32(r, sz, sz2, sr, col, w32, w64):  # the former FnmSums kernel
        cols = slice(col, col + r.shape[1])
        np.add(sr[:, cols], r, out=sr[:, cols])
        clip = r.max() >= hi or r.min() <= -hi
        if clip:
            np.clip(r, -hi, hi, out=r)
        np.arctanh(r, out=r)
        np.copyto(w64, r)
        if clip:
            np.clip(w64, -Z_MAX, Z_MAX, out=w64)
        finish(w64, sz, sz2, cols)

    def log64(r, sz, sz2, sr, col, w32, w64):
        cols = slice(col, col + r.shape[1])
        np.add(sr[:, cols], r, out=sr[:, cols])
        np.clip(r, -hi, hi, out=r)
        np.copyto(w64, r)
        d = np.subtract(1.0, w64)  # a float64 temporary (only for this comparison)
        np.add(w64, 1.0, out=w64)
        np.divide(w64, d, out=w64)
        np.log(w64, out=w64)
        np.multiply(w64, 0.5, out=w64)
        np.clip(w64, -Z_MAX, Z_MAX, out=w64)
        finish(w64, sz, sz2, cols)

    def log1p32(r, sz, sz2, sr, col, w32, w64):
        cols = slice(col, col + r.shape[1])
        np.add(sr[:, cols], r, out=sr[:, cols])
        np.clip(r, -hi, hi, out=r)
        np.subtract(1, r, out=w32)
        np.divide(r, w32, out=r)
        np.multiply(r, 2, out=r)
        np.log1p(r, out=r)
        np.multiply(r, 0.5, out=w64)
        np.clip(w64, -Z_MAX, Z_MAX, out=w64)
        finish(w64, sz, sz2, cols)

    out = {"arctanh32": arctanh32, "log64": log64, "log1p32": log1p32}
    try:
        import numba
    except ImportError:
        return out

    @numba.njit(error_model="numpy", nogil=True)
    def _libm(r, sz, sz2, sr, col, hi, zmax):  # the obvious numba loop: libm log, one pass
        n, w = r.shape
        for i in range(n):
            ri, zi, z2i, rsi = r[i], sz[i][col : col + w], sz2[i][col : col + w], sr[i][col : col + w]
            for j in range(w):
                c = min(max(np.float64(ri[j]), -hi), hi)
                z = min(max(0.5 * np.log((1.0 + c) / (1.0 - c)), -zmax), zmax)
                rsi[j] += ri[j]
                zi[j] += z
                z2i[j] += z * z

    def numba_libm(r, sz, sz2, sr, col, w32, w64):
        _libm(r, sz, sz2, sr, col, float(hi), Z_MAX)

    out["numba-libm"] = numba_libm
    return out


def child(spec: dict) -> None:
    import numpy as np
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__

    from lakepipe.compute import fisher

    repeats = spec["repeats"]
    quick = spec["quick"]
    info = {
        "setting": spec["setting"],
        "cpu": B.machine()["cpu"],
        "numpy": np.__version__,
        "simd_baseline": list(__cpu_baseline__),
        "simd_found": [k for k in __cpu_dispatch__ if __cpu_features__.get(k)],
        "blas": B.blas_info(),
        "numba_cpu": _numba_cpu(),
        "selected_kernel": fisher.fisher_kernel().name,
        "load": B.load(),
    }
    print(
        f"[{spec['setting']}] {info['cpu']}: numpy {info['numpy']} SIMD baseline {info['simd_baseline']} "
        f"found {info['simd_found']}; OpenBLAS {info['blas'].get('architecture')}; "
        f"numba target {info['numba_cpu']}; selected kernel {info['selected_kernel']}; load {info['load']}",
        file=sys.stderr,
        flush=True,
    )
    reps = max(5, repeats)
    rows = _tile_ns(quick, reps)
    loop = _tile_loop(QUICK_LOOP if quick else FULL_LOOP, reps)
    bh_ms = _bh_ms(quick, reps)
    exhaustive = _exhaustive() if spec.get("exhaustive") else None
    B.child_result(
        {
            "info": info,
            "ns_per_element": rows,
            "tile_loop": loop,
            "bh_ms_per_row": bh_ms,
            "exhaustive": exhaustive,
        }
    )


def _bh_ms(quick: bool, reps: int) -> dict[str, float]:
    """ms per row of BH q: each implementation of :mod:`lakepipe.compute.bh`, and scipy's."""
    import numpy as np
    from scipy import stats

    from lakepipe.compute import bh

    rng = np.random.default_rng(7)
    n_rows, m = (2 if quick else 8), 235_375
    p = rng.uniform(0, 1, (n_rows, m)).astype(np.float32)
    p[:, : m // 4] = np.exp2(-rng.uniform(1, 60, (n_rows, m // 4))).astype(np.float32)  # the network
    p[:, m // 4 : m // 4 + m // 50] = 1.0  # t = 0
    for row in p:
        rng.shuffle(row)
    want = np.stack([stats.false_discovery_control(r.astype(np.float64), method="bh") for r in p])
    out = {}
    for name in bh.IMPLEMENTATIONS:
        q = bh.bh_q_rows(p, name)  # loads (or compiles) it outside the timing
        if not np.array_equal(q, want.astype(np.float32)):
            raise AssertionError(f"BH {name} differs from scipy")
        out[name] = _median_ns(lambda name=name: bh.bh_q_rows(p, name), n_rows, reps) / 1e6
    p64 = p.astype(np.float64)
    out["scipy"] = (
        _median_ns(lambda: stats.false_discovery_control(p64, axis=-1, method="bh"), n_rows, reps) / 1e6
    )
    return out


def _tile_ns(quick: bool, reps: int) -> dict[str, float]:
    """ns per element of the ufuncs and of every variant on one tile, into sums of the real width."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from lakepipe.compute import fisher
    from lakepipe.compute.fnm import _tanh_on_exp_into

    rng = np.random.default_rng(0)
    n, w = TILE
    r0 = np.tanh(rng.normal(0.0, 0.6, (n, w))).astype(np.float32)
    r0[0, :4] = [1.0, -1.0, 0.9999999, -0.99999994]  # some clipped cells, as a seed's own voxels
    r = np.empty_like(r0)
    col = 1000
    big = [np.zeros((n, 235_375 if not quick else 4000)) for _ in range(3)]
    w32, w64 = np.empty((n, w), np.float32), np.empty((n, w))
    rows: dict[str, float] = {}
    with threadpool_limits(1):
        c0 = np.clip(r0, -0.999, 0.999)
        x64 = c0.astype(np.float64)
        rows["ufunc arctanh float32"] = _median_ns(lambda: np.arctanh(c0, out=w32), r0.size, reps)
        rows["ufunc arctanh float64"] = _median_ns(lambda: np.arctanh(x64, out=w64), r0.size, reps)
        pos = np.abs(r0) + np.float32(0.5)
        rows["ufunc log float32"] = _median_ns(lambda: np.log(pos, out=w32), r0.size, reps)
        # the finalize step's transcendentals (float64): p's table lookup and rmap's tanh
        t64 = np.abs(x64) * 10.0
        rows["ufunc log1p float64"] = _median_ns(lambda: np.log1p(t64, out=w64), r0.size, reps)
        rows["log(1 + x) float64 (p lookup)"] = _median_ns(
            lambda: np.log(np.add(t64, 1.0, out=w64), out=w64), r0.size, reps
        )
        rows["ufunc tanh float64"] = _median_ns(lambda: np.tanh(x64, out=w64), r0.size, reps)
        scratch, small = np.empty_like(x64), np.empty(x64.shape, bool)
        rows["tanh on exp float64 (rmap)"] = _median_ns(
            lambda: _tanh_on_exp_into(x64, w64, scratch, small), r0.size, reps
        )
        rows["float64 add, tile"] = _median_ns(lambda: np.add(w64, x64, out=w64), r0.size, reps)
        a = big[0]
        rows[f"float64 add, {a.nbytes / 1e6:.0f} MB"] = _median_ns(
            lambda: np.add(a, 1.0, out=a), a.size, reps, 0.2
        )
        for name, fn in _variants().items():

            def run(fn=fn):
                np.copyto(r, r0)
                fn(r, big[0], big[1], big[2], col, w32, w64)

            rows[f"{name} (+ z, z^2, r sums)"] = _median_ns(run, r0.size, reps)
        for name in fisher.KERNELS:
            k = _kernel(name)
            if k is None:
                continue
            work = k.workspace(n, w)
            for with_r in (True, False):

                def run(k=k, work=work, with_r=with_r):
                    np.copyto(r, r0)
                    k.accumulate(r, big[0], big[1], big[2] if with_r else None, col, work)

                label = f"{name} (+ z, z^2{', r' if with_r else ''} sums)"
                rows[label] = _median_ns(run, r0.size, reps)
        copy_ns = _median_ns(lambda: np.copyto(r, r0), r0.size, reps)
        for label in [k for k in rows if "sums" in k]:  # the tile copy each run makes
            rows[label] -= copy_ns
    return rows


def _numba_cpu() -> str | None:
    try:
        import llvmlite.binding as llb
    except ImportError:
        return None
    return os.environ.get("NUMBA_CPU_NAME") or llb.get_host_cpu_name()


def _kernel(name: str):
    from lakepipe.compute import fisher

    try:
        return fisher._make(name)
    except ImportError:
        return None


def _tile_loop(size: dict, reps: int) -> dict:
    """FnmSums.add_many on a group of subjects per kernel, against the same GEMMs alone."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    import lakepipe.compute.fnm as fnm
    from lakepipe.compute import fisher
    from lakepipe.compute.correlation import center_unit

    rng = np.random.default_rng(1)
    L, V, T, S = size["seeds"], size["voxels"], size["timepoints"], size["subjects"]
    latent = rng.standard_normal((T, 8))
    units, seeds_units = [], []
    for _ in range(S):  # voxels in 8 networks, seeds = network members: r of all sizes
        mix = np.zeros((8, V), np.float32)
        mix[rng.integers(0, 8, V), np.arange(V)] = rng.uniform(0.2, 2.0, V)
        x = latent @ mix + rng.standard_normal((T, V)).astype(np.float32)
        units.append(center_unit(x)[0])
        seeds_units.append(units[-1][:, rng.choice(V, L, replace=False)].astype(np.float64))
    block = int(min(V, max(256, fnm._TILE_ELEMENTS // L)))
    st = [np.ascontiguousarray(s.T, dtype=np.float32) for s in seeds_units]
    rbuf = np.empty(L * block, np.float32)

    def gemm_only() -> None:
        for a in range(0, V, block):
            b = min(a + block, V)
            rb = rbuf[: L * (b - a)].reshape(L, b - a)
            for u, s in zip(units, st, strict=True):
                np.matmul(s, u[:, a:b], out=rb)

    out: dict = {"size": size, "block_voxels": block, "threads": 1}
    sums = fnm.FnmSums.zeros(L, V)
    names = [k for k in fisher.KERNELS if _kernel(k) is not None]
    t_gemm: list[float] = []
    t_kernel: dict[str, list[float]] = {k: [] for k in names}
    ratio: dict[str, list[float]] = {k: [] for k in names}
    with threadpool_limits(1):
        sums.add_many(units, seeds_units, kernel=names[0])  # first touch of the sums, compilation
        for _ in range(reps):  # interleaved, so that a change of the machine's load hits all alike
            t0 = time.perf_counter()
            gemm_only()
            t_gemm.append(time.perf_counter() - t0)
            for name in names:
                t0 = time.perf_counter()
                sums.add_many(units, seeds_units, kernel=name)
                t_kernel[name].append(time.perf_counter() - t0)
                ratio[name].append(t_kernel[name][-1] / t_gemm[-1])
    g = B.median(t_gemm)
    cells = L * V * S
    out.update(gemm_s=g, gemm_ns_per_element=g / cells * 1e9, gemm_gflops=2 * T * cells / g / 1e9)
    for name in names:
        t = B.median(t_kernel[name])
        out[name] = {
            "s": t,
            "ratio_to_gemm": B.median(ratio[name]),
            "transform_ns_per_element": (t - g) / cells * 1e9,
        }
    return out


def _exhaustive() -> dict:
    """Max |z error| of each fast kernel on every float32 in [-1, 1] (2.1e9 values)."""
    import numpy as np

    from lakepipe.compute import fisher

    out = {}
    top = int(np.float32(1.0).view(np.int32))
    step = 1 << 22
    for name in ("fused", "log32"):
        k = _kernel(name)
        if k is None:
            continue
        worst, at = 0.0, 0.0
        for a in range(0, top + 1, step):
            pos = np.arange(a, min(a + step, top + 1), dtype=np.int32).view(np.float32)
            for r in (pos, -pos):
                e = np.abs(k.z(r) - fisher.reference_z(r))
                i = int(np.argmax(e))
                if e[i] > worst:
                    worst, at = float(e[i]), float(r[i])
        out[name] = {"max_abs_z_error": worst, "at_r": at}
        print(f"  exhaustive {name}: max |z error| {worst:.3g} at r = {at!r}", file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------------------------------- parent


def main() -> None:
    p = B.parser(__doc__.splitlines()[0])
    p.add_argument("--exhaustive", action="store_true", help="max |z error| on every float32 in [-1, 1]")
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    repeats = args.repeats or (5 if args.quick else 7)
    results = {}
    for setting, env in settings().items():
        spec = {"setting": setting, "quick": args.quick, "repeats": repeats, "exhaustive": args.exhaustive}
        results[setting] = B.run_child(Path(__file__).name, spec, env=env, timeout=3600)
    names = list(results["default"]["ns_per_element"])
    rows = [{"what": k, **{s: results[s]["ns_per_element"].get(k) for s in results}} for k in names]
    print(f"\nns per element, one thread, medians of >= {max(5, repeats)} (tile {TILE[0]} x {TILE[1]}):")
    print(B.table(rows, [("what", "", "s")] + [(s, s, ".3g") for s in results]))
    loop_rows = []
    for s, res in results.items():
        loop = res["tile_loop"]
        for name in ("exact", "log32", "fused"):
            if name in loop:
                loop_rows.append(
                    {
                        "setting": s,
                        "kernel": name,
                        "gemm_gflops": loop["gemm_gflops"],
                        "gemm_ns": loop["gemm_ns_per_element"],
                        "transform_ns": loop[name]["transform_ns_per_element"],
                        "ratio": loop[name]["ratio_to_gemm"],
                    }
                )
    size = results["default"]["tile_loop"]["size"]
    print(
        f"\nFNM tile loop (add_many), {size['seeds']} seeds x {size['voxels']} voxels x "
        f"T={size['timepoints']}, {size['subjects']} subjects, one thread: (GEMM + transform) / GEMM"
    )
    print(
        B.table(
            loop_rows,
            [
                ("setting", "setting", "s"),
                ("kernel", "kernel", "s"),
                ("gemm_gflops", "GEMM GFLOP/s", ".0f"),
                ("gemm_ns", "GEMM ns/el", ".3g"),
                ("transform_ns", "transform ns/el", ".3g"),
                ("ratio", "ratio", ".3g"),
            ],
        )
    )
    bh_rows = [
        {"what": k, **{s: results[s]["bh_ms_per_row"].get(k) for s in results}}
        for k in ("radix", "keysort", "scipy")
    ]
    print("\nBenjamini-Hochberg q (pfdrmap), ms per row of 235,375 voxels, one thread (all three agree):")
    print(B.table(bh_rows, [("what", "", "s")] + [(s, s, ".3g") for s in results]))
    for s, res in results.items():
        print(f"{s}: selected kernel {res['info']['selected_kernel']}, load {res['info']['load']}")
        if res.get("exhaustive"):
            for name, e in res["exhaustive"].items():
                print(f"  {name}: max |z error| over every float32 in [-1, 1]: {e['max_abs_z_error']:.3g}")
    print(f"load {B.load()}")
    B.write_results(
        args, NAME, {"settings": {s: settings()[s] for s in results}, "rows": rows, "results": results}
    )


if __name__ == "__main__":
    main()
