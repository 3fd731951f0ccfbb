"""Job specs: schema validation with field paths, environment substitution, plans, incremental runs.

The example specs in ``jobs/`` run against the tutorial data: the tutorial job end to end from the
command line (a second run does nothing), the nightly job on a lake that already holds a connectome
and an atlas (adding a participant to the BIDS folder ingests and maps only that participant), and
lesion ingestion from an ``s3://`` BIDS source on the loopback S3 server.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from lakepipe.errors import InputError
from tests.conftest import ROOT, run_cli

JOBS = ROOT / "jobs"
SCHEMAS = ROOT / "schemas"


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD = """\
version: 1
name: ok
steps:
  - kind: ingest-lesions
    source: bids
    cohort: stroke
  - kind: afnm
    cohort: stroke
    atlas: Seitzman2018
    connectome: gsp
    only_new: true
  - kind: collect
    method: afnm
    atlas: Seitzman2018
    out: group
"""


# ------------------------------------------------------------------------------------------ schema


def test_schemas_are_valid_draft_2020_12():
    import jsonschema

    for name in ("job", "sidecar"):
        schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def test_good_spec_loads_with_defaults_and_resolved_paths(tmp_path):
    from lakepipe.pipelines.jobs import load_job

    job = load_job(write_spec(tmp_path / "ok.yaml", GOOD), env={})
    ingest, afnm, collect = job.steps
    assert ingest["source"] == str(tmp_path / "bids")  # relative to the spec's folder, not the cwd
    assert ingest["incremental"] is True
    assert afnm["weighting"] == "fractional" and afnm["only_new"] is True
    assert collect["out"] == str(tmp_path / "group")
    assert job.lake is None and job.scheduler is None


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("kind: afnm", "kind: afmn"), "steps[1].kind: 'afmn' is not one of ['ingest-lesions'"),
        (
            ("    atlas: Seitzman2018\n    connectome", "    connectome"),
            "steps[1]: 'atlas' is a required property",
        ),
        (
            ("method: afnm", "method: afnm\n    atlass: x"),
            "steps[2]: Additional properties are not allowed ('atlass'",
        ),
        (
            ("only_new: true", "only_new: true\n    weighting: fractionl"),
            "steps[1].weighting: 'fractionl' is not one of",
        ),
        (
            ("only_new: true", "only_new: true\n    participants: ['01']"),
            "steps[1]: participants and only_new: true exclude each other",
        ),
        (
            ("cohort: stroke\n  - kind: afnm", "cohort: ../x\n  - kind: afnm"),
            "steps[0].cohort: '../x' is not a BIDS-safe name",
        ),
        (("version: 1", "version: 2"), "version: 1 was expected"),
        (
            ("only_new: true", "only_new: yes please"),
            "steps[1].only_new: 'yes please' is not of type 'boolean'",
        ),
        (("name: ok\n", ""), "spec: 'name' is a required property"),
    ],
)
def test_invalid_spec_names_the_failing_field(tmp_path, edit, expected):
    from lakepipe.pipelines.jobs import load_job

    text = GOOD.replace(*edit)
    assert text != GOOD
    with pytest.raises(InputError) as info:
        load_job(write_spec(tmp_path / "bad.yaml", text), env={})
    assert expected in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "bad.yaml"))


def test_yaml_errors_and_non_mappings_are_input_errors(tmp_path):
    from lakepipe.pipelines.jobs import load_job

    with pytest.raises(InputError, match=r"not valid YAML \(line 3, column"):
        load_job(write_spec(tmp_path / "a.yaml", "version: 1\nname: x\nsteps: [a: b: c]\n"))
    with pytest.raises(InputError, match="must be a mapping"):
        load_job(write_spec(tmp_path / "b.yaml", "- just\n- a list\n"))
    with pytest.raises(InputError, match="job spec not found"):
        load_job(tmp_path / "missing.yaml")


def test_environment_substitution(tmp_path):
    from lakepipe.pipelines.jobs import load_job

    spec = write_spec(
        tmp_path / "env.yaml",
        GOOD.replace("source: bids", "source: ${BIDS_ROOT}/bids").replace(
            "cohort: stroke", "cohort: ${COHORT:-stroke}"
        ),
    )
    job = load_job(spec, env={"BIDS_ROOT": "/data/in"})
    assert job.steps[0]["source"] == "/data/in/bids"
    assert job.steps[0]["cohort"] == job.steps[1]["cohort"] == "stroke"
    assert job.variables == ["BIDS_ROOT", "COHORT"]
    relative = load_job(spec, env={"BIDS_ROOT": "rel", "COHORT": "nightly"})
    assert relative.steps[0]["source"] == str(tmp_path / "rel" / "bids")
    with pytest.raises(InputError, match=r"steps\[0\]\.source: environment variable BIDS_ROOT is not set"):
        load_job(spec, env={})
    # a value from the environment is validated like one written in the spec
    with pytest.raises(InputError, match=r"steps\[0\]\.cohort: 'a/b' is not a BIDS-safe name"):
        load_job(spec, env={"BIDS_ROOT": "/x", "COHORT": "a/b"})
    secret = write_spec(
        tmp_path / "secret.yaml", GOOD.replace("source: bids", "source: ${AWS_SECRET_ACCESS_KEY}")
    )
    with pytest.raises(InputError, match="looks like a secret"):
        load_job(secret, env={"AWS_SECRET_ACCESS_KEY": "x"})


def test_example_specs_validate(monkeypatch):
    from lakepipe.pipelines.jobs import check_spec_file, load_job

    specs = sorted(JOBS.glob("*.yaml"))
    assert {p.name for p in specs} >= {"tutorial.yaml", "nightly-lesions.yaml"}
    for path in specs:
        check_spec_file(path)
    monkeypatch.setenv("LAKEPIPE_BIDS_SOURCE", "s3://bucket/bids")
    nightly = load_job(JOBS / "nightly-lesions.yaml")
    assert nightly.steps[0]["source"] == "s3://bucket/bids"  # URLs are not made into paths
    assert [s["kind"] for s in nightly.steps] == ["ingest-lesions", "afnm", "collect"]
    assert nightly.steps[1]["only_new"] is True


def test_cli_validate(tmp_path, capsys):
    from lakepipe.cli.main import main

    bad = write_spec(tmp_path / "bad.yaml", GOOD.replace("kind: afnm", "kind: afmn"))
    assert main(["jobs", "validate", str(JOBS / "tutorial.yaml"), str(JOBS / "nightly-lesions.yaml")]) == 0
    out = capsys.readouterr().out
    assert "tutorial.yaml: valid" in out and "needs $LAKEPIPE_BIDS_SOURCE at run time" in out
    assert main(["jobs", "validate", str(JOBS / "tutorial.yaml"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "steps[1].kind: 'afmn' is not one of" in err and "bad.yaml" in err
    assert main(["jobs", "run", str(bad), "--dry-run"]) == 2


def test_scheduler_address_honours_the_dask_operator_variable(monkeypatch):
    from lakepipe.cluster import scheduler_address

    monkeypatch.delenv("LAKEPIPE_SCHEDULER", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert scheduler_address() is None
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://job-scheduler:8786")
    assert scheduler_address() == "tcp://job-scheduler:8786"
    monkeypatch.setenv("LAKEPIPE_SCHEDULER", "tcp://mine:8786")
    assert scheduler_address() == "tcp://mine:8786"
    assert scheduler_address("tcp://explicit:8786") == "tcp://explicit:8786"


# ----------------------------------------------------------------------------------- tutorial job


def _group_file(out: Path, method: str) -> Path:
    (path,) = (out / "group").glob(f"group_method-{method}_atlas-Seitzman2018_*_parcelstats.tsv")
    return path


def test_tutorial_job_dry_run_writes_nothing(tutorial, tmp_path, capsys, monkeypatch):
    from lakepipe.cli.main import main

    lake, out = tmp_path / "lake", tmp_path / "out"
    monkeypatch.setenv("LAKEPIPE_TUTORIAL", str(tutorial.root))
    monkeypatch.setenv("LAKEPIPE_OUTPUT", str(out))
    assert main(["--lake", str(lake), "jobs", "run", str(JOBS / "tutorial.yaml"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not lake.exists() and not out.exists()
    n_entries = len(list(tutorial.bids.glob("sub-*/**/*_mask.nii.gz")))
    lines = {ln.split()[1]: ln.split() for ln in text.splitlines() if ln.strip()[:1].isdigit()}
    assert lines["ingest-lesions"][-3:] == [str(n_entries), "0", str(n_entries)]
    assert lines["ingest-connectome"][-3:] == ["8", "0", "8"]
    assert "dry run, nothing written" in text


@pytest.mark.slow
def test_tutorial_job_end_to_end_then_nothing(tutorial, tmp_path, dask_client):
    """The tutorial spec from the command line, on a real cluster; the second run does nothing."""
    import jsonschema

    from lakepipe.lake import Lake

    lake_dir, out = tmp_path / "lake", tmp_path / "out"
    env = {"LAKEPIPE_TUTORIAL": str(tutorial.root), "LAKEPIPE_OUTPUT": str(out)}
    args = [
        "--lake",
        lake_dir,
        "--scheduler",
        dask_client.scheduler.address,
        "jobs",
        "run",
        JOBS / "tutorial.yaml",
    ]
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    n_entries = len(list(tutorial.bids.glob("sub-*/**/*_mask.nii.gz")))
    lake = Lake(str(lake_dir))
    assert lake.catalog.count(kind="lesion", cohort="tutorial") == n_entries
    assert lake.catalog.count(method="afnm") == n_entries
    assert lake.catalog.count(method="fnm", statistic="zmap", atlas="Seitzman2018") == n_entries
    assert lake.catalog.count(method="parcellate") == 2
    group = _group_file(out, "afnm")
    assert len(group.read_text().splitlines()) == n_entries + 1
    assert _group_file(out, "fnm").exists()
    assert "job 'tutorial' finished" in first.stdout
    # every sidecar the job exported follows schemas/sidecar.schema.json
    validator = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "sidecar.schema.json").read_text()))
    sidecars = [p for p in out.rglob("*.json") if p.name != "dataset_description.json"]
    assert len(sidecars) > n_entries
    for p in sidecars:
        assert not list(validator.iter_errors(json.loads(p.read_text()))), p

    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    n_rows = lake.catalog.count()
    second = run_cli(*args, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to do: everything is in the lake" in second.stdout
    assert "finished: 0 new" in second.stdout
    assert "local Dask cluster" not in second.stderr
    assert Lake(str(lake_dir)).catalog.count() == n_rows
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files  # nothing rewritten
    runs = Lake(str(lake_dir)).catalog.runs()
    assert list(runs["status"]) == ["finished", "finished"]
    assert list(runs["n_outputs"]) == [first_total(first.stdout), 0]


def first_total(stdout: str) -> int:
    line = next(ln for ln in stdout.splitlines() if "finished:" in ln)
    return int(line.split("finished:")[1].split("new")[0])


# ------------------------------------------------------------------------------------ nightly job


def _bids_copy(src: Path, dst: Path, drop: set[str]) -> Path:
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if Path(d) == src and n in drop])
    return dst


@pytest.mark.slow
def test_nightly_job_ingests_and_maps_only_new_participants(
    tutorial, ingested, copy_lake, tmp_path, dask_client, monkeypatch
):
    from lakepipe.lake import Lake
    from lakepipe.pipelines.ingest import find_lesion_files, ingest_lesions
    from lakepipe.pipelines.jobs import load_job, run_job

    lake = Lake(copy_lake(ingested))
    bids = _bids_copy(tutorial.bids, tmp_path / "bids", drop={"sub-06"})
    out = tmp_path / "out"
    for k, v in {
        "LAKEPIPE_BIDS_SOURCE": str(bids),
        "LAKEPIPE_COHORT": "nightly",
        "LAKEPIPE_CONNECTOME": "tutorial",
        "LAKEPIPE_OUTPUT": str(out),
    }.items():
        monkeypatch.setenv(k, v)
    job = load_job(JOBS / "nightly-lesions.yaml")
    # a run killed after its ingest: sub-01 is in the cohort but was never mapped
    ingest_lesions(lake, bids, cohort="nightly", participants=["01"])

    first = run_job(job, lake=lake, client=dask_client)
    ingest, afnm, collect = first.steps
    n_first = len(list(bids.glob("sub-*/**/*_mask.nii.gz")))
    n_sub01 = len(list(bids.glob("sub-01/**/*_mask.nii.gz")))
    assert (ingest.written, ingest.skipped) == (n_first - n_sub01, n_sub01)
    assert afnm.written == n_first  # only_new: the just ingested ones and sub-01, never mapped before
    assert collect.written == 1
    group = _group_file(out, "afnm")
    assert len(group.read_text().splitlines()) == n_first + 1

    mtime = group.stat().st_mtime_ns
    second = run_job(job, lake=lake, client=dask_client)
    assert second.written == 0 and [p.to_compute for p in second.plan] == [0, 0, 0]
    assert group.stat().st_mtime_ns == mtime

    shutil.copytree(tutorial.bids / "sub-06", bids / "sub-06")  # a new participant arrives
    new_entries = len(list((bids / "sub-06").glob("**/*_mask.nii.gz")))
    lines = []
    dry = run_job(job, lake=lake, dry_run=True, echo=lines.append)
    assert [(p.new, p.to_compute) for p in dry.plan[:2]] == [(new_entries, new_entries)] * 2
    assert dry.plan[1].participants == ["06"]
    third = run_job(job, lake=lake, client=dask_client)
    ingest, afnm, collect = third.steps
    assert (ingest.written, ingest.skipped) == (new_entries, n_first)
    assert (afnm.written, afnm.skipped) == (new_entries, 0)  # only the new participant is mapped
    assert collect.written == 1
    assert len(group.read_text().splitlines()) == n_first + new_entries + 1
    rows = lake.catalog.query(method="afnm", cohort="nightly")
    assert len(rows) == n_first + new_entries
    assert not rows.duplicated(["participant", "session", "label"]).any()
    stores_of = {p: set(rows[rows["participant"] == p]["store_uri"]) for p in ("01", "06")}
    assert stores_of["06"] != stores_of["01"]  # the new participant was mapped in a run of its own
    lesions = lake.catalog.query(kind="lesion", cohort="nightly")
    assert {f.key for f in find_lesion_files(bids)} == set(lesions["store_index"])


def test_job_step_errors_name_the_step(ingested, copy_lake, tmp_path, capsys):
    from lakepipe.cli.main import main

    spec = write_spec(
        tmp_path / "j.yaml",
        """\
version: 1
name: broken
steps:
  - kind: afnm
    cohort: tutorial
    atlas: NoSuchAtlas
""",
    )
    assert main(["--lake", copy_lake(ingested), "jobs", "run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "step 1 (afnm)" in err and "NoSuchAtlas" in err


def test_lesions_from_an_s3_bids_source(tutorial, s3_server, tmp_path, monkeypatch):
    """ingest-lesions from s3://: lists remote names, downloads only participants with new entries."""
    import boto3

    from lakepipe.lake import Lake
    from lakepipe.pipelines import jobs
    from lakepipe.pipelines.jobs import load_job, run_job

    prefix = f"bids-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")

    def upload(participants):
        for p in tutorial.bids.rglob("*"):
            rel = p.relative_to(tutorial.bids)
            if p.is_file() and (rel.parts[0] in participants or len(rel.parts) == 1):
                s3.upload_file(str(p), "lake", f"{prefix}/{rel.as_posix()}")

    upload({"sub-01", "sub-02"})
    spec = write_spec(
        tmp_path / "s3.yaml",
        f"""\
version: 1
name: s3-lesions
lake: ./lake
steps:
  - kind: ingest-lesions
    source: s3://lake/{prefix}
    cohort: remote
""",
    )
    job = load_job(spec)
    assert job.lake == str(tmp_path / "lake")
    downloaded = []
    real = jobs._download
    monkeypatch.setattr(
        jobs,
        "_download",
        lambda url, entries, dest: (
            downloaded.append(sorted({e.participant for e in entries})),
            real(url, entries, dest),
        ),
    )
    first = run_job(job)
    n12 = len(list(tutorial.bids.glob("sub-0[12]/**/*_mask.nii.gz")))
    assert first.steps[0].written == n12 and downloaded == [["01", "02"]]
    assert run_job(job).steps[0].written == 0 and len(downloaded) == 1  # nothing new: nothing downloaded
    upload({"sub-03"})
    third = run_job(job)
    n3 = len(list(tutorial.bids.glob("sub-03/**/*_mask.nii.gz")))
    assert (third.steps[0].written, third.steps[0].skipped) == (n3, n12)
    assert downloaded[-1] == ["03"]
    rows = Lake(str(tmp_path / "lake")).catalog.query(kind="lesion", cohort="remote")
    assert sorted(set(rows["participant"])) == ["01", "02", "03"]
