"""Job specs: schema validation with field paths, environment substitution, plans, incremental runs.

The example specs in ``jobs/`` run against the tutorial data (the tutorial job end to end, as
``lakepipe demo`` runs it: tests/test_demo.py): the nightly job on a lake that already holds a connectome
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
from tests.conftest import ROOT

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


def test_good_spec_loads_with_defaults_and_resolved_paths(tmp_path, monkeypatch):
    from lakepipe.jobs import job_steps, load_job

    specs = tmp_path / "specs"
    specs.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    job = load_job(write_spec(specs / "ok.yaml", GOOD), env={})
    ingest, afnm, collect = job_steps(job)
    # relative paths resolve against the working folder, never next to the spec
    assert ingest.path("source") == str(work / "bids") and collect.path("out") == str(work / "group")
    assert ingest.spec.get("incremental", True) is True
    assert afnm.params.weighting == "fractional" and afnm.spec["only_new"] is True  # the method's default
    assert job.lake is None and job.scheduler is None
    # or against an explicit base (--base), or the spec's own base (relative to the spec's folder)
    based = job_steps(load_job(specs / "ok.yaml", env={}, base=tmp_path / "elsewhere"))
    assert based[0].path("source") == str(tmp_path / "elsewhere" / "bids")
    own = write_spec(specs / "own.yaml", GOOD.replace("name: ok\n", "name: ok\nbase: ../data\n"))
    assert job_steps(load_job(own, env={}))[0].path("source") == str(tmp_path / "data" / "bids")


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("kind: afnm", "kind: afmn"), "steps[1].kind: 'afmn' is not one of ['tutorial', 'ingest-lesions'"),
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
    from lakepipe.jobs import load_job

    text = GOOD.replace(*edit)
    assert text != GOOD
    with pytest.raises(InputError) as info:
        load_job(write_spec(tmp_path / "bad.yaml", text), env={})
    assert expected in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "bad.yaml"))


def test_yaml_errors_and_non_mappings_are_input_errors(tmp_path):
    from lakepipe.jobs import load_job

    with pytest.raises(InputError, match=r"not valid YAML \(line 3, column"):
        load_job(write_spec(tmp_path / "a.yaml", "version: 1\nname: x\nsteps: [a: b: c]\n"))
    with pytest.raises(InputError, match="must be a mapping"):
        load_job(write_spec(tmp_path / "b.yaml", "- just\n- a list\n"))
    with pytest.raises(InputError, match="job spec not found"):
        load_job(tmp_path / "missing.yaml")


def test_environment_substitution(tmp_path):
    from lakepipe.jobs import load_job

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
    relative = load_job(spec, env={"BIDS_ROOT": "rel", "COHORT": "nightly"}, base=tmp_path)
    assert relative.resolve(relative.steps[0]["source"]) == str(tmp_path / "rel" / "bids")
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
    from lakepipe.jobs import check_spec_file, load_job

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
    from lakepipe.runtime import scheduler_address

    monkeypatch.delenv("LAKEPIPE_SCHEDULER", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert scheduler_address() is None
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://job-scheduler:8786")
    assert scheduler_address() == "tcp://job-scheduler:8786"
    monkeypatch.setenv("LAKEPIPE_SCHEDULER", "tcp://mine:8786")
    assert scheduler_address() == "tcp://mine:8786"
    assert scheduler_address("tcp://explicit:8786") == "tcp://explicit:8786"


# ----------------------------------------------------------------------------------- tutorial job


#: the bundled tutorial job at test sizes (the tutorial step's defaults are larger)
def _group_file(out: Path, method: str) -> Path:
    pattern = f"group_space-MNI152NLin6Asym_method-{method}_atlas-Seitzman2018_*_parcelstats.tsv"
    (path,) = (out / "group").glob(pattern)
    return path


def test_tutorial_job_dry_run_writes_nothing(tmp_path, capsys, monkeypatch):
    """From an empty work folder: the example spec, as the README shows it, plans without writing."""
    from lakepipe.cli.main import main

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["jobs", "example", "tutorial"]) == 0
    (work / "tutorial.yaml").write_text(capsys.readouterr().out)
    assert main(["jobs", "run", "tutorial.yaml", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert sorted(p.name for p in work.iterdir()) == ["tutorial.yaml"]  # nothing written
    lines = {ln.split()[1]: ln for ln in text.splitlines() if ln.strip()[:1].isdigit()}
    assert lines["tutorial"].split()[-3:] == ["1", "0", "1"]
    # the steps that read the example inputs are planned once the tutorial step has written them
    for kind in ("ingest-lesions", "ingest-connectome", "parcellate", "afnm", "fnm", "collect"):
        assert "planned after the steps above" in lines[kind], lines[kind]
    assert "more once the steps above have run" in text and "dry run, nothing written" in text


# ------------------------------------------------------------------------------------ nightly job


def _bids_copy(src: Path, dst: Path, drop: set[str]) -> Path:
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if Path(d) == src and n in drop])
    return dst


@pytest.mark.slow
def test_nightly_job_ingests_and_maps_only_new_participants(
    tutorial, ingested, copy_lake, tmp_path, dask_client, monkeypatch
):
    from lakepipe.ingest import ingest_lesions
    from lakepipe.io.bidsfind import find_lesion_files
    from lakepipe.jobs import load_job, run_job
    from lakepipe.lake import Lake

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
    job = load_job(JOBS / "nightly-lesions.yaml", base=tmp_path)
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
    assert (dry.plan[0].new, dry.plan[0].to_compute) == (new_entries, new_entries)
    assert dry.plan[1].to_compute is None  # the new participant's lesions are not in the lake yet
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


def test_lesions_from_an_s3_bids_source(tutorial, s3_server, tmp_path):
    """ingest-lesions from s3://: lists remote names, downloads only participants with new entries."""
    import boto3

    from lakepipe.ingest import ingest_lesions
    from lakepipe.jobs import load_job, run_job
    from lakepipe.lake import Lake

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
    job = load_job(spec, base=tmp_path)
    assert job.lake == str(tmp_path / "lake")
    first = run_job(job)
    n12 = len(list(tutorial.bids.glob("sub-0[12]/**/*_mask.nii.gz")))
    assert first.steps[0].written == n12
    assert run_job(job).steps[0].written == 0
    upload({"sub-03"})
    # incremental: only the new participant's masks are downloaded and read
    lake = Lake(str(tmp_path / "lake"))
    res = ingest_lesions(lake, f"s3://lake/{prefix}", cohort="remote", incremental=True)
    n3 = len(list(tutorial.bids.glob("sub-03/**/*_mask.nii.gz")))
    assert len(res.written) == n3 and len(res.skipped) == n12
    assert res.read and all(k.startswith("sub-03_") for k in res.read)
    assert run_job(job).steps[0].written == 0
    rows = lake.catalog.query(kind="lesion", cohort="remote")
    assert sorted(set(rows["participant"])) == ["01", "02", "03"]
