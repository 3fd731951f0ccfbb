"""Shared pieces of the lakepipe benchmarks: data cache, peak memory, machine load, tables, results.

Every benchmark script is ``python benchmarks/<name>.py [--quick]``; it prints a table and writes
``benchmarks/results/<name>.json``. Measurements that need a clean process (peak memory, BLAS
kernel choice) run in a child process: the parent polls the RSS of the child's whole process tree
(the child, its Dask worker processes, ...) with psutil, and also reads the child's own peak RSS
from ``os.wait4``.

Benchmark data are made once and cached under ``$LAKEPIPE_BENCH_DIR`` (default
``/tmp/lakepipe-bench``): the tutorial connectome of ``S`` subjects x ``T`` time points on the full
2 mm MNI152 brain mask (235,375 voxels), and a lake holding it ingested as connectome ``bench``
together with the atlases (Seitzman 2018 from the tutorial; Schaefer 400 and Schaefer 400 + Tian S3
at 1 mm from ``../shared/data/atlases``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
ATLASES = SHARED / "atlases"
SHARED_LESIONS = SHARED / "lesions" / "tutorial_bids"

if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

#: connectome sizes: the full benchmark and the tiny ``--quick`` one (smoke test)
FULL = {"subjects": 50, "timepoints": 120}
QUICK = {"subjects": 3, "timepoints": 20}
#: lesion participants of the tutorial (10 give 10 masks at 1 mm to perturb)
TUTORIAL_PARTICIPANTS = 10
GB = 1e9
MB = 1e6


# ------------------------------------------------------------------------------------------ options


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny version (< 1 min), for the smoke test")
    p.add_argument(
        "--repeats", type=int, default=None, help="repetitions per figure (median; default 3, quick 1)"
    )
    p.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    p.add_argument(
        "--cache",
        default=os.environ.get("LAKEPIPE_BENCH_DIR", "/tmp/lakepipe-bench"),
        help="benchmark data cache (default $LAKEPIPE_BENCH_DIR or /tmp/lakepipe-bench)",
    )
    p.add_argument("--results", default=str(HERE / "results"), help="folder for <name>.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def sizes(args) -> dict:
    return QUICK if args.quick else FULL


def repeats(args) -> int:
    return args.repeats or (1 if args.quick else 3)


def cache_dir(args) -> Path:
    d = Path(args.cache) / ("quick" if args.quick else "full")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def locked(path: Path):
    """Exclusive lock on ``path`` (two benchmarks preparing the same cache wait for each other)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------ machine


def load() -> list[float]:
    """1, 5 and 15 minute load averages (the machine is shared: quote them with every figure)."""
    return [round(x, 2) for x in os.getloadavg()]


def pressure() -> dict[str, float]:
    """Linux PSI: % of the last 60 s in which some task waited for CPU / memory (the machine is
    shared: memory stalls slow the memory-bound parts, e.g. large float64 sums, far more than load
    averages say). Empty where /proc/pressure is missing."""
    out = {}
    for what in ("cpu", "memory"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            line = Path(f"/proc/pressure/{what}").read_text().splitlines()[0]
            out[what] = float(line.split("avg60=")[1].split()[0])
    return out


def machine() -> dict:
    import psutil

    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from lakepipe.blas import cpu_has_avx512

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / GB, 1),
        "avx512": cpu_has_avx512(),
        "python": platform.python_version(),
        "host": platform.node(),
    }


def blas_info() -> dict:
    """OpenBLAS kernel this process uses (after numpy is imported)."""
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("internal_api") == "openblas":
            return {
                "architecture": lib.get("architecture"),
                "threads": lib.get("num_threads"),
                "version": lib.get("version"),
            }
    return {}


# --------------------------------------------------------------------------------------- peak memory


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum of RSS over the process tree of ``pid``, largest single RSS) in bytes."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    total = biggest = 0
    for q in procs:
        try:
            r = q.memory_info().rss
        except psutil.Error:
            continue
        total += r
        biggest = max(biggest, r)
    return total, biggest


def tree_cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by a process and its live children (Dask workers).

    Less sensitive than wall time to other users of a shared machine: quoted next to wall ratios.
    """
    import psutil

    try:
        p = psutil.Process(pid or os.getpid())
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for q in procs:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


class PeakRSS:
    """Polls the RSS of a process tree (default: this process and its children) in a thread.

    ``peak`` is the largest sum over the tree seen while active, ``start`` the sum when it began
    (``peak - start`` is what the measured work added).
    """

    def __init__(self, pid: int | None = None, interval: float = 0.05):
        self.pid = pid or os.getpid()
        self.interval = interval
        self.peak = self.start = self.peak_single = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            total, one = tree_rss(self.pid)
            self.peak, self.peak_single = max(self.peak, total), max(self.peak_single, one)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakRSS:
        self.start = tree_rss(self.pid)[0]
        self.peak = self.start
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        total, one = tree_rss(self.pid)
        self.peak, self.peak_single = max(self.peak, total), max(self.peak_single, one)


def run_child(
    script: str, spec: dict, env: dict | None = None, timeout: float = 3600, python: str | None = None
) -> dict:
    """Run ``python <script> --child <spec json>`` and return its result with its peak memory.

    The child prints one line ``RESULT <json>``; added here: ``tree_peak_rss`` (largest RSS sum
    over the child's process tree, polled) and ``maxrss`` (the child's own peak RSS from wait4).
    ``python``: another interpreter (default: this one).
    """
    cmd = [python or sys.executable, str(HERE / script), "--child", json.dumps(spec)]
    full_env = {**os.environ, **(env or {})}
    for k, v in (env or {}).items():
        if v is None:
            full_env.pop(k, None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=str(ROOT)
    )
    out: list[str] = []
    err: list[str] = []

    def forward(stream, buf, echo):
        for line in stream:
            buf.append(line)
            if echo:  # the child's progress lines, as they come
                sys.stderr.write(line)
                sys.stderr.flush()

    readers = [
        threading.Thread(target=forward, args=(proc.stdout, out, False), daemon=True),
        threading.Thread(target=forward, args=(proc.stderr, err, True), daemon=True),
    ]
    for r in readers:
        r.start()
    peak = peak_single = 0
    maxrss = 0
    while True:
        total, one = tree_rss(proc.pid)
        peak, peak_single = max(peak, total), max(peak_single, one)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:  # reaped here, so wait4 gives this child's own peak RSS
            proc.returncode = os.waitstatus_to_exitcode(status)
            maxrss = usage.ru_maxrss * 1024
            break
        if time.perf_counter() - t0 > timeout:
            proc.kill()
        time.sleep(0.05)
    for r in readers:
        r.join()
    wall = time.perf_counter() - t0
    lines = [ln for ln in out if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child {script} {spec} failed with status {proc.returncode}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result.update(tree_peak_rss=peak, tree_peak_single_rss=peak_single, maxrss=maxrss, child_wall_s=wall)
    return result


def child_result(obj: dict) -> None:
    print("RESULT " + json.dumps(obj), flush=True)


# ------------------------------------------------------------------------------------------- timing


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------------------ I/O floor


def read_subjects(url: str, positions: list[int], how: str) -> int:
    """Read every chunk of the given subjects' timeseries, scale and mean (a worker task): ``whole``
    subjects (zarr fetches a subject's chunks concurrently), whole subjects into one reused
    ``buffer``, one ``chunk`` after another, or with lakepipe's own ``rows`` reader into one reused
    buffer (direct ``preadv`` of uncompressed local chunks, :mod:`lakepipe.io.stores.direct`)."""
    import numpy as np
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import LocalStore

    if how == "rows":
        from lakepipe.io.storage import StoreRef
        from lakepipe.io.stores.rows import open_rows

        src = open_rows(StoreRef.here(url))
        buf = np.empty(src.shape[1:], np.float32)
        for s in positions:
            src.read_into(s, buf)
        return sum(buf.nbytes + src.scale(s).nbytes + src.mean(s).nbytes for s in positions)
    g = zarr.open_group(LocalStore(url, read_only=True), mode="r", zarr_format=3)
    ts = g["timeseries"]
    buf = np.empty(ts.shape[1:], ts.dtype) if how == "buffer" else None
    out = default_buffer_prototype().nd_buffer.from_numpy_array(buf) if how == "buffer" else None
    n = 0
    for s in positions:
        if how == "chunk":
            step = ts.chunks[2]
            for a in range(0, ts.shape[2], step):
                n += ts[s, :, a : a + step].nbytes
        elif how == "buffer":
            ts.get_basic_selection(s, out=out)
            n += buf.nbytes
        else:
            n += ts[s].nbytes
        n += g["scale"][s].nbytes + g["mean"][s].nbytes
    return n


#: ways of reading the store once: (how, tasks); the floor is the fastest
READ_MODES = {
    "whole subjects, 1 task per subject": ("whole", "each"),
    "whole subjects into a reused buffer, 2 tasks per worker": ("buffer", "grouped"),
    "chunk by chunk, 2 tasks per worker": ("chunk", "grouped"),
    "lakepipe's row reader into a reused buffer, 2 tasks per worker": ("rows", "grouped"),
}


def read_floor(client, url: str, n_subjects: int) -> dict:
    """Seconds (wall, and CPU over the process tree) to read the connectome store once on the
    cluster's workers, for each way of reading it (the floor is the fastest)."""
    import cloudpickle
    import dask

    from lakepipe.methods.common import subject_groups, tasks_for
    from lakepipe.runtime import Runtime

    runtime = Runtime(client=client)

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this file
    out = {}
    for mode, (how, split) in READ_MODES.items():
        groups = (
            [[s] for s in range(n_subjects)]
            if split == "each"
            else subject_groups(n_subjects, tasks_for(runtime.n_workers, n_subjects))
        )
        c0, t0 = tree_cpu(), time.perf_counter()
        parts = [dask.delayed(read_subjects, pure=False)(url, list(g), how) for g in groups]
        total = runtime.compute(dask.delayed(sum)(parts))[0]
        out[mode] = {"wall_s": time.perf_counter() - t0, "cpu_s": tree_cpu() - c0, "bytes": total}
    return out


# --------------------------------------------------------------------------------------------- data


def tutorial(args, participants: int = TUTORIAL_PARTICIPANTS):
    """The tutorial inputs at the benchmark size (written once, then reused)."""
    from lakepipe.tutorial import write_tutorial

    s = sizes(args)
    root = Path(args.cache) / f"tutorial-s{s['subjects']}-t{s['timepoints']}"
    with locked(Path(args.cache) / ".tutorial.lock"):
        return write_tutorial(
            root,
            participants=participants,
            subjects=s["subjects"],
            timepoints=s["timepoints"],
            batch_size=1 if args.quick else 10,
            parcel_timeseries=False,
        )


def schaefer(n: int = 400, networks: int = 7) -> tuple[Path, Path]:
    stem = f"tpl-MNI152NLin6Asym_res-01_atlas-Schaefer2018_desc-{n}Parcels{networks}Networks_dseg"
    return ATLASES / f"{stem}.nii.gz", ATLASES / f"{stem}.txt"


def schaefer_tian(out: Path, n: int = 400) -> tuple[Path, Path]:
    """Schaefer ``n`` + Tian S3 as one 1 mm label volume (Tian labels after the cortical ones)."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from lakepipe.compute.resample import resample_nearest

    path = out / f"tpl-MNI152NLin6Asym_res-01_atlas-Schaefer{n}TianS3_dseg.nii.gz"
    labels = out / f"tpl-MNI152NLin6Asym_res-01_atlas-Schaefer{n}TianS3_dseg.tsv"
    if path.exists() and labels.exists():
        return path, labels
    s_path, s_txt = schaefer(n)
    stem = "tpl-MNI152NLin6Asym_res-01_atlas-TianSubcortex_desc-3TS3_dseg"
    t_img = nib.load(str(ATLASES / f"{stem}.nii.gz"))
    s_img = nib.load(str(s_path))
    cortex = np.asarray(s_img.dataobj).astype(np.int32)
    sub = resample_nearest(
        np.asarray(t_img.dataobj).astype(np.int32), t_img.affine, cortex.shape, s_img.affine
    )
    combined = np.where((cortex == 0) & (sub > 0), sub + n, cortex).astype(np.int16)
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.nii.gz")
    nib.save(nib.Nifti1Image(combined, s_img.affine), str(tmp))
    names = s_txt.read_text().split() + (ATLASES / f"{stem}.txt").read_text().split()
    n_tian = len(names) - n
    pd.DataFrame({"index": list(range(1, n + 1)) + list(range(n + 1, n + n_tian + 1)), "name": names}).to_csv(
        labels, sep="\t", index=False
    )
    os.replace(tmp, path)
    return path, labels


def bench_lake(args):
    """The benchmark lake: connectome ``bench`` and the atlases ingested (once; reused)."""
    from lakepipe.ingest import ingest_atlas, ingest_connectome
    from lakepipe.lake import Lake

    tut = tutorial(args)
    s = sizes(args)
    root = Path(args.cache) / f"lake-s{s['subjects']}-t{s['timepoints']}"
    with locked(Path(args.cache) / ".lake.lock"):
        lake = Lake(str(root))
        if lake.catalog.query(kind="connectome", connectome="bench").shape[0] < s["subjects"]:
            ingest_connectome(lake, tut.connectome, name="bench")
        have = set(lake.catalog.query(kind="atlas")["atlas"]) if lake.catalog.count(kind="atlas") else set()
        if "Seitzman2018" not in have:
            ingest_atlas(lake, tut.atlas_nifti, labels=tut.atlas_labels, name="Seitzman2018")
        if "Schaefer400" not in have:
            ingest_atlas(lake, schaefer(400)[0], labels=schaefer(400)[1], name="Schaefer400")
        if "Schaefer400TianS3" not in have:
            path, labels = schaefer_tian(Path(args.cache) / "atlases")
            ingest_atlas(lake, path, labels=labels, name="Schaefer400TianS3")
    return lake


def float16_connectome(lake, args, name: str = "bench16"):
    """The benchmark connectome ingested again with ``--dtype float16`` as ``name`` (once; reused)."""
    from lakepipe.ingest import ingest_connectome

    tut = tutorial(args)
    with locked(Path(args.cache) / ".lake.lock"):
        if lake.catalog.count(kind="connectome", connectome=name) < sizes(args)["subjects"]:
            ingest_connectome(lake, tut.connectome, name=name, dtype="float16")
    return name


def linked_connectome(lake, n: int, source: str = "bench", name: str | None = None) -> str:
    """A connectome of ``n`` subjects whose rows are hard links to the rows of ``source`` (row s is
    source row s mod n_source), registered under new subject ids: the same bytes to read and the same
    arithmetic per subject as ``source``, at any subject count, without the disk of real subjects
    (and one page-cache copy: every size reads at the page-cache rate the source is read at).

    Made with the store writer of ``lakepipe.io.stores`` (arrays, commit) and catalog records as
    an ingest publishes them; only the series rows are links. Once; reused."""
    import numpy as np

    from lakepipe.catalog import OutputRecord
    from lakepipe.io import layout
    from lakepipe.io.sources.base import VoxelGeometry
    from lakepipe.io.storage import get_array, open_group, read_array
    from lakepipe.io.stores import STORAGE_CONVENTION, grid_from_attrs
    from lakepipe.io.stores.connectomes import ConnectomeWriter

    name = name or f"{source}x{n}"
    if lake.catalog.count(kind="connectome", connectome=name) == n:
        return name
    src_url = layout.connectome_store(lake.url, source)
    dst_url = layout.connectome_store(lake.url, name)
    remove_tree(dst_url)
    g = open_group(src_url, mode="r")
    attrs = dict(g.attrs)
    n_src = int(attrs["n_subjects"])
    ts = get_array(g, "timeseries")
    writer = ConnectomeWriter(
        lake.url,
        name,
        kind="voxel",
        n_time=int(attrs["n_time"]),
        geometry=VoxelGeometry(grid_from_attrs(attrs["grid"]), read_array(g, "ijk")),
        space=attrs["space"],
        source=f"hard links to connectome {source}",
        dtype=str(ts.dtype),
        options=dict(attrs.get("options") or {}),
    )
    rows = writer.reserve(n)
    n_valid = read_array(g, "n_valid")
    for var in ("timeseries", "scale", "mean"):
        src_c, dst_c = Path(src_url) / var / "c", Path(dst_url) / var / "c"
        for row in rows:
            for f in (src_c / str(row % n_src)).rglob("*"):
                if f.is_file():
                    target = dst_c / str(row) / f.relative_to(src_c / str(row % n_src))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.link(f, target)
    ids = [f"{name}-{row:04d}" for row in rows]
    writer.commit(ids, [int(n_valid[row % n_src]) for row in rows])
    uri = layout.relative(lake.url, dst_url)
    records = [
        OutputRecord(
            kind="connectome",
            method="ingest",
            connectome=name,
            statistic="timeseries",
            params={"connectome": name, "subject": sid, "storage": STORAGE_CONVENTION},
            inputs={"source": f"{source}:{row % n_src}"},
            store_uri=uri,
            store_index=sid,
            shape=(int(attrs["n_time"]), int(np.asarray(ts.shape)[2])),
        )
        for sid, row in zip(ids, rows, strict=True)
    ]
    with lake.run_context(f"benchmarks: {name} linked to {source}") as ctx:
        ctx.publish(records)
    return name


def catalog_copy(lake, dest: Path, forget: tuple[str, ...] = ()):
    """The lake with a private copy of its catalog: a re-run computes everything again instead of
    skipping what the benchmark lake already holds (outputs go to new derivative stores); outputs of
    the methods in ``forget`` are left out of the copy (computed again too)."""
    from lakepipe.lake import Lake

    src = Path(lake.url) / "catalog.sqlite"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    with (
        contextlib.closing(sqlite3.connect(str(src))) as a,
        contextlib.closing(sqlite3.connect(str(dest))) as b,
    ):
        a.backup(b)
        if forget:
            b.execute(f"DELETE FROM outputs WHERE method IN ({','.join('?' * len(forget))})", forget)
            b.commit()
    return Lake(lake.url, catalog=f"sqlite:///{dest}")


def remove_tree(path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -------------------------------------------------------------------------------------------- output


def fmt(v, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table; ``columns`` = (key, header, format spec)."""
    cells = [[h for _, h, _ in columns]] + [[fmt(r.get(k), spec) for k, _, spec in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(args, name: str, payload: dict) -> Path:
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "quick": bool(args.quick),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
    }
    path = out / f"{name}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    print(f"\nresults written to {path}")
    return path


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)
