"""The command line's contract: one line per error (bad input, environment, worker failures, Ctrl-C),
read-only commands that refuse a lake that does not exist, nothing written on bad input, and
commands that compute nothing starting no cluster (and not even importing Dask)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli


def _one_error_line(proc: subprocess.CompletedProcess, code: int) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("lakepipe: error: "), proc.stderr[-3000:]
    return lines[0]


@pytest.mark.integration
def test_read_only_commands_refuse_a_lake_that_does_not_exist(tmp_path, capsys):
    """In this process (``main``: the parser, the error report, the exit status); the process-level
    contract of one line and status 2 is checked by the other tests here."""
    from lakepipe.cli.main import main

    def one_line(*argv) -> str:
        capsys.readouterr()
        rc = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("lakepipe: error: "), (argv, err)
        return err[0]

    typo = tmp_path / "lkae"
    for argv in (
        ["catalog", "ls"],
        ["catalog", "runs"],
        ["collect", "--method", "afnm"],
        ["export", "--method", "fnm", "--out", str(tmp_path / "out")],
        ["plot", "fc", "--out", str(tmp_path / "fc.png")],
        ["run", "fnm", "--connectome", "gsp", "--cohort", "c", "--dry-run"],
    ):
        line = one_line("--lake", typo, *argv)
        assert "no lake here" in line and str(typo) in line, argv
    assert not typo.exists()  # a mistyped --lake creates nothing
    afile = tmp_path / "afile"
    afile.write_text("not a lake")
    assert "must be a folder" in one_line("--lake", afile, "catalog", "ls")


def test_bad_input_writes_nothing_not_even_a_run_record(ingested, copy_lake):
    from lakepipe.lake import Lake

    lake = copy_lake(ingested)
    before = Lake(lake).catalog.runs()
    line = _one_error_line(
        run_cli("--lake", lake, "run", "afnm", "--cohort", "tutorial", "--atlas", "Nope"), 2
    )
    assert "unknown atlas 'Nope'" in line
    after = Lake(lake).catalog.runs()
    assert len(after) == len(before)  # the README's promise: nothing written on bad input


def test_catalog_ls_imports_no_dask_and_starts_no_cluster(ingested):
    code = (
        "import sys\n"
        "from lakepipe.cli.main import main\n"
        f"assert main(['--lake', {ingested.url!r}, 'catalog', 'ls']) == 0\n"
        "heavy = ('dask', 'distributed', 'xarray', 'zarr', 'nibabel', 'numba')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-2000:]


#: what a parser that computes nothing must not import (0.1-3 s each here): the methods' data stack
HEAVY = ("pandas", "xarray", "zarr", "sqlalchemy", "dask", "scipy.stats", "scipy.ndimage", "nibabel")


def _methods_loaded(*commands: list[str]) -> list[str]:
    """For each command line, parsed in turn in one fresh process: the lakepipe.methods modules
    imported by then, and the HEAVY ones (as the text of a sorted list)."""
    lines = ["import sys", "from lakepipe.cli.main import parse_args"]
    for argv in commands:
        lines += [
            f"parse_args({argv!r})",
            "print('LOADED', sorted(m for m in sys.modules if m.startswith('lakepipe.methods.')"
            f" or m in {HEAVY!r}))",
        ]
    code = "\n".join(lines)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [ln for ln in proc.stdout.splitlines() if ln.startswith("LOADED")]


def test_a_method_command_imports_only_its_parameters():
    """``run fnm`` builds the parser of FNM alone from its parameter class (no method module, and
    none of the data stack, is imported until it runs: ``--help`` is quick); ``run --help`` lists
    every method of the command with its title; ``plot`` imports only the method whose results it
    draws."""
    argv = ["run", "fnm", "--connectome", "c", "--sphere", "1,2,3", "--radius", "4"]
    from lakepipe.cli.main import parse_args

    args = parse_args(argv)  # the one-method parser still parses the method's own options
    assert args._method == "fnm" and args.radius == 4.0
    (loaded,) = _methods_loaded(argv)
    params = "LOADED ['lakepipe.methods.params', 'lakepipe.methods.params.base', 'lakepipe.methods.params."
    assert loaded == params + "fnm']", loaded
    # a group test's parser imports the group tests' parameters, and neither scipy.stats nor
    # scipy.ndimage (their kernels import them on use)
    (loaded,) = _methods_loaded(["stats", "specificity", "--cases", "cohort=a", "--controls", "cohort=b"])
    assert loaded == params + "stats']", loaded
    *_, loaded = _methods_loaded(
        ["parcellate", "--connectome", "c"],
        ["atlas", "derive", "--connectome", "c", "--n-components", "5"],
        ["task", "contrast", "--connectome", "c", "--task", "t", "--contrast", "a - b"],
        ["run", "afnm", "--cohort", "c", "--atlas", "a"],
    )
    assert not any(f"'{h}'" in loaded for h in HEAVY), loaded
    assert all(m.startswith("'lakepipe.methods.params") for m in loaded[len("LOADED [") : -1].split(", ")), (
        loaded
    )
    help_ = run_cli("run", "--help")
    assert help_.returncode == 0
    assert "afnm: accelerated FNM" in help_.stdout and "fnm: classic seed-to-voxel FNM" in help_.stdout
    wrong = run_cli("run", "fmn")
    assert wrong.returncode == 2 and "invalid choice: 'fmn'" in wrong.stderr
    # help, version and usage errors print once (the command word is found by a silent pre-parse)
    top, version, none = run_cli("--help"), run_cli("--version"), run_cli()
    assert top.stdout.count("usage: lakepipe") == 1 and version.stdout.count("lakepipe ") == 1
    assert none.returncode == 2 and none.stderr.count("error:") == 1
    assert run_cli("--lake", "plot", "plot", "fnm", "--help").stdout.startswith("usage: lakepipe plot fnm")
    # a plot of a method's maps imports no method; a plot of a group test imports that test only
    fnm_line, symptom_line = _methods_loaded(
        ["plot", "fnm", "--label", "x", "--out", "f.png"],
        ["plot", "symptom", "--cases", "cohort=a", "--score", "s", "--out", "f.png"],
    )
    assert "lakepipe.methods." not in fnm_line, fnm_line
    assert "stats.symptom'" in symptom_line, symptom_line
    assert "predict" not in symptom_line and "conjunction" not in symptom_line, symptom_line


@pytest.mark.slow
def test_nothing_to_compute_starts_no_cluster(ingested, copy_lake):
    lake = copy_lake(ingested)
    args = [
        "-v",
        "--lake",
        lake,
        "run",
        "fnm",
        "--sphere",
        "-40,-20,50",
        "--radius",
        "6",
        "--connectome",
        "tutorial",
    ]
    local = {"LAKEPIPE_SCHEDULER": ""}  # the default: a local cluster, started when there is work
    # other tests may already have mapped this seed in the shared lake: --recompute makes the
    # first run compute whatever the test order (FNM's passes run on the cluster; AFNM's light
    # lesion counts are made in the command's own process)
    first = run_cli(*args, "--recompute", env=local)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "local Dask cluster" in first.stderr
    second = run_cli(*args, env=local)
    assert second.returncode == 0 and "already" in second.stdout, second.stdout
    assert "local Dask cluster" not in second.stderr


@pytest.mark.slow
def test_worker_errors_are_one_line(tutorial, tmp_path):
    """A connectome chunk damaged on disk fails inside a Dask worker: one line, exit 1, no traceback."""
    from lakepipe.ingest import ingest_atlas, ingest_connectome
    from lakepipe.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    ingest_atlas(lake, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name="Seitzman2018")
    chunk = next(
        p
        for p in (tmp_path / "lake" / "connectomes" / "tutorial.zarr" / "timeseries").rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    chunk.write_bytes(b"damaged")
    proc = run_cli("--lake", lake.url, "parcellate", "--connectome", "tutorial", "--atlas", "Seitzman2018")
    line = _one_error_line(proc, 1)
    assert "Traceback" not in proc.stderr, line
    assert lake.catalog.query(method="parcellate").empty  # nothing half-written is registered


@pytest.mark.slow
def test_ctrl_c_prints_one_line(tutorial, tmp_path):
    """Ctrl-C reaches the whole process group (the Dask workers too): one line, exit 130, and the
    run record says interrupted."""
    from lakepipe.ingest import ingest_connectome
    from lakepipe.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    spheres = tmp_path / "spheres.tsv"
    spheres.write_text(
        "name\tx\ty\tz\tradius\n"
        + "".join(f"s{i}\t{-40 + i % 80}\t{-30 + 10 * (i // 80)}\t40\t6\n" for i in range(200))
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lakepipe.cli.main",
            "-v",
            "--lake",
            lake.url,
            "run",
            "fnm",
            "--connectome",
            "tutorial",
            "--spheres",
            spheres,
            "--batch-size",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LAKEPIPE_SCHEDULER": ""},  # a local cluster of worker processes
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    deadline = time.monotonic() + 120
    seen = []
    for line in proc.stderr:  # wait until the first pass is published (the cluster is working)
        seen.append(line)
        if "pass 1/" in line or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen)[-2000:] + rest[-2000:]
    lines = rest.strip().splitlines()
    problems = [ln for ln in lines if not re.match(r"\d\d:\d\d:\d\d INFO ", ln)]  # -v log lines aside
    assert problems == ["lakepipe: interrupted"], rest[-3000:]
    assert any("interrupted (" in ln for ln in lines), rest[-3000:]  # the run record is closed
    runs = lake.catalog.runs()
    assert runs["status"].iloc[-1] == "interrupted"
    assert Path(sys.executable).parent.joinpath("lakepipe").exists()  # the installed entry point
