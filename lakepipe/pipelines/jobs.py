"""Jobs: scheduled, incremental runs of several pipelines described by one YAML spec (``jobs/*.yaml``).

A job spec (validated by ``schemas/job.schema.json``) lists steps: ``ingest-lesions`` (a BIDS folder
or ``s3://`` URL, incremental), ``ingest-connectome``, ``ingest-atlas``, ``parcellate``, ``afnm``,
``fnm`` and ``collect``. :func:`load_job` reads and checks a spec, :func:`plan_job` says per step what
is new, what is skipped and what is to compute (without writing anything), and :func:`run_job` runs
the steps on one Dask client. Every step is idempotent, so a second run of the same job does
nothing; ``only_new: true`` on a follow-on step restricts it to the participants that the preceding
ingest of its cohort just added (plus any of the cohort never mapped by that method, which covers a
run killed between its ingest and its follow-on steps).

Spec conventions: ``${VAR}`` / ``${VAR:-default}`` in string values are replaced from the
environment (names that look like secrets are refused: credentials reach lakepipe through the
environment, never through a spec); relative paths resolve against the spec file's folder;
``lake``/``catalog``/``scheduler`` default to the command-line options, then the spec, then the
usual environment variables.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lakepipe.errors import InputError, NotFoundError
from lakepipe.lake import Lake

log = logging.getLogger(__name__)

#: folder of the JSON Schemas when lakepipe is installed without its source tree (container images)
SCHEMA_DIR_ENV = "LAKEPIPE_SCHEMA_DIR"
STEP_KINDS = ("ingest-lesions", "ingest-connectome", "ingest-atlas", "parcellate", "afnm", "fnm", "collect")
#: step fields holding local paths (resolved against the spec's folder); URLs are left alone
PATH_FIELDS = {
    "ingest-lesions": ("source",),
    "ingest-connectome": ("source", "mask", "regions"),
    "ingest-atlas": ("nifti", "labels"),
    "parcellate": ("out",),
    "afnm": ("matrix", "matrix_labels", "matrix_order", "bids_out"),
    "fnm": ("bids_out",),
    "collect": ("out",),
}
MATRIX_FILE_SUFFIXES = (".mat", ".npy", ".tsv", ".csv")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|ACCESS_KEY|SESSION_KEY|API_KEY", re.IGNORECASE
)


# ------------------------------------------------------------------------------------------ schema


def schema_dir() -> Path:
    """``$LAKEPIPE_SCHEMA_DIR``, else the source tree's ``schemas/``, else the installed copy
    (``<prefix>/share/lakepipe/schemas``, from the wheel's data files)."""
    env = os.environ.get(SCHEMA_DIR_ENV)
    if env:
        return Path(env)
    source = Path(__file__).resolve().parents[2] / "schemas"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "lakepipe" / "schemas"


@lru_cache(maxsize=4)
def load_schema(name: str = "job") -> dict:
    """A lakepipe JSON Schema (``job``, ``sidecar``) as a dict."""
    path = schema_dir() / f"{name}.schema.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"JSON Schema not found; set {SCHEMA_DIR_ENV} to the folder holding {path.name}", path
        ) from None


def field_path(parts: Iterable[Any]) -> str:
    """``['steps', 1, 'kind']`` -> ``steps[1].kind`` (``spec`` for the document itself)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "spec"


def _error_text(err) -> str:
    if err.validator == "not" and err.validator_value.get("required") == ["participants", "only_new"]:
        return "participants and only_new: true exclude each other"
    if err.validator == "pattern" and "A-Za-z0-9" in str(err.validator_value):
        return f"{err.instance!r} is not a BIDS-safe name (letters and digits only)"
    return err.message


def schema_errors(data: Any, schema: str = "job") -> list[str]:
    """Every violation of ``schema`` by ``data`` as ``field.path: problem`` (empty when valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema(schema))
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    seen, out = set(), []
    for err in errors:
        text = f"{field_path(err.absolute_path)}: {_error_text(err)}"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def validate_spec(data: Any, source: str | os.PathLike | None = None) -> None:
    """Raise :class:`InputError` naming the failing field(s) when ``data`` is not a valid job spec."""
    errors = schema_errors(data)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise InputError("invalid job spec: " + "; ".join(errors[:3]) + more, source)


# ----------------------------------------------------------------------------------------- loading


@dataclass
class JobSpec:
    """A loaded job: environment substituted, paths resolved, defaults filled in."""

    name: str
    steps: list[dict]
    path: Path | None = None
    lake: str | None = None
    catalog: str | None = None
    scheduler: str | None = None
    description: str = ""
    variables: list[str] = field(default_factory=list)  #: environment variables the spec uses

    @property
    def base(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


def read_spec(path: str | os.PathLike) -> dict:
    """Parse a YAML/JSON spec file (no validation)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError("job spec not found", path) from None
    except OSError as exc:
        raise InputError(f"cannot read job spec: {exc.strerror}", path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"not valid YAML{where}: {problem}", path) from None
    if not isinstance(data, dict):
        raise InputError("a job spec must be a mapping with version, name and steps", path)
    return data


def substitute(
    data: Any, env: dict[str, str] | None = None, *, source=None, strict: bool = True, _path: tuple = ()
) -> tuple[Any, set[str], set[str]]:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of ``data``.

    Returns the new data, the variables used and the variables missing (left as written when
    ``strict`` is false; an :class:`InputError` naming the field otherwise).
    """
    env = os.environ if env is None else env
    used: set[str] = set()
    missing: set[str] = set()
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            out[k], u, m = substitute(v, env, source=source, strict=strict, _path=(*_path, k))
            used |= u
            missing |= m
        return out, used, missing
    if isinstance(data, list):
        items = []
        for i, v in enumerate(data):
            new, u, m = substitute(v, env, source=source, strict=strict, _path=(*_path, i))
            items.append(new)
            used |= u
            missing |= m
        return items, used, missing
    if not isinstance(data, str) or "${" not in data:
        return data, used, missing

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if _SECRET_NAME.search(name):
            raise InputError(
                f"{field_path(_path)}: ${{{name}}} looks like a secret; credentials must come "
                "from the environment directly, not through a job spec",
                source,
            )
        used.add(name)
        value = env.get(name)
        if value is None or value == "":
            if default is not None:
                return default
            if strict:
                raise InputError(f"{field_path(_path)}: environment variable {name} is not set", source)
            missing.add(name)
            return m.group(0)
        return value

    return _VAR.sub(repl, data), used, missing


def _resolve(value: str, base: Path) -> str:
    if "://" in value:
        return value.rstrip("/")
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def resolve_paths(step: dict, base: Path) -> dict:
    """Relative local paths of ``step`` made absolute against ``base`` (URLs and names left alone)."""
    out = dict(step)
    for name in PATH_FIELDS.get(step["kind"], ()):
        value = out.get(name)
        if value is None:
            continue
        if name == "matrix" and Path(value).suffix.lower() not in MATRIX_FILE_SUFFIXES:
            continue  # fcgroupz / fcgroupr: a statistic in the lake, not a file
        out[name] = _resolve(value, base)
    return out


STEP_DEFAULTS = {
    "ingest-lesions": {"incremental": True, "weighted": False, "space": "MNI152NLin6Asym"},
    "ingest-connectome": {"space": "MNI152NLin6Asym"},
    "afnm": {"weighting": "fractional", "only_new": False, "on_empty": "warn", "with_weights": False},
    "fnm": {"only_new": False, "avgr": False},
}


def load_job(path: str | os.PathLike, env: dict[str, str] | None = None) -> JobSpec:
    """Read, validate, substitute and resolve the job spec at ``path``.

    Raises :class:`InputError` (file and field named) for unreadable, invalid or incomplete specs.
    """
    path = Path(path).resolve()
    raw = read_spec(path)
    validate_spec(raw, path)
    data, used, _ = substitute(raw, env, source=path)
    validate_spec(data, path)  # values that came from the environment must be valid too
    base = path.parent
    steps = [resolve_paths({**STEP_DEFAULTS.get(s["kind"], {}), **s}, base) for s in data["steps"]]
    lake = data.get("lake")
    if lake and "://" not in lake:
        lake = _resolve(lake, base)
    return JobSpec(
        name=data["name"],
        steps=steps,
        path=path,
        lake=lake,
        catalog=data.get("catalog"),
        scheduler=data.get("scheduler"),
        description=data.get("description", ""),
        variables=sorted(used),
    )


def check_spec_file(path: str | os.PathLike, env: dict[str, str] | None = None) -> list[str]:
    """Validate a spec file for ``lakepipe jobs validate``: notes (variables it needs) or InputError.

    Unlike :func:`load_job`, unset environment variables are not an error here: they are listed,
    since a spec is usually checked where it is written, not where it runs.
    """
    path = Path(path)
    raw = read_spec(path)
    validate_spec(raw, path)
    data, used, missing = substitute(raw, env, source=path, strict=False)
    if not missing:
        validate_spec(data, path)
    return [f"needs ${name} at run time" for name in sorted(missing)]


# ---------------------------------------------------------------------------------------- planning


@dataclass
class StepPlan:
    """What one step will do: ``new`` inputs, ``skipped`` (already in the lake), ``to_compute``."""

    index: int
    kind: str
    target: str
    new: int | None = None
    skipped: int | None = None
    to_compute: int = 0
    note: str = ""
    participants: list[str] | None = None  #: participants the step will read or map (None: all)

    def row(self) -> tuple[str, ...]:
        def n(v):
            return "-" if v is None else str(v)

        return (
            str(self.index),
            self.kind,
            self.target,
            n(self.new),
            n(self.skipped),
            str(self.to_compute),
            self.note,
        )


@dataclass
class _State:
    """What earlier steps of the job add (planned, or done at run time)."""

    planned_lesions: dict[str, dict[str, str]] = field(default_factory=dict)  #: cohort -> {key: participant}
    new_participants: dict[str, set[str]] = field(default_factory=dict)  #: cohort -> just ingested
    changed_connectomes: set[str] = field(default_factory=set)
    new_atlases: set[str] = field(default_factory=set)
    pending_parcellate: set[tuple[str, str | None]] = field(default_factory=set)
    work_before: bool = False  #: an earlier step has something to compute


def step_target(step: dict) -> str:
    k = step["kind"]
    if k == "ingest-lesions":
        return f"cohort {step['cohort']} <- {step['source']}"
    if k == "ingest-connectome":
        return f"connectome {step['name']} <- {step['source']}"
    if k == "ingest-atlas":
        return f"atlas {step['name']} <- {Path(step['nifti']).name}"
    if k == "parcellate":
        return f"{step['connectome']} x {step.get('atlas') or step['connectome']}"
    only_new = " (only new)" if step.get("only_new") else ""
    if k == "afnm":
        return f"cohort {step['cohort']} x {step['atlas']}{only_new}"
    if k == "fnm":
        return f"cohort {step['cohort']} x {step['connectome']}{only_new}"
    return f"{step['method']}{' ' + step['atlas'] if step.get('atlas') else ''} -> {step['out']}"


# ---- lesion sources (folder or URL)


@dataclass(frozen=True)
class _Entry:
    key: str
    participant: str
    relpath: str


def _lesion_entries(source: str, participants: list[str] | None, space: str | None) -> list[_Entry]:
    """Lesion entries (participant/session/label keys) of a BIDS folder or URL, without reading masks."""
    from lakepipe.pipelines.ingest import find_lesion_files

    if "://" not in source:
        root = Path(source)
        return [
            _Entry(f.key, f.participant, f.path.relative_to(root).as_posix())
            for f in find_lesion_files(root, participants, space)
        ]
    return _remote_lesion_entries(source, participants)


def _remote_lesion_entries(url: str, participants: list[str] | None) -> list[_Entry]:
    from lakepipe.bids import check_entity, parse_entities
    from lakepipe.io.storage import filesystem
    from lakepipe.pipelines.ingest import MASK_SUFFIXES

    fs, root = filesystem(url)
    root = root.rstrip("/")
    try:
        files = fs.find(root)
    except (FileNotFoundError, PermissionError) as exc:
        raise InputError(f"cannot list the BIDS dataset: {exc}", url) from None
    wanted = {check_entity(p, "sub") for p in participants} if participants else None
    found: dict[str, _Entry] = {}
    for f in sorted(files):
        rel = f[len(root) :].lstrip("/")
        parts = rel.split("/")
        name = parts[-1]
        if not parts[0].startswith("sub-") or len(parts) < 2 or not re.search(r"\.nii(\.gz)?$", name):
            continue
        ent = parse_entities(name)
        if ent.get("suffix") not in MASK_SUFFIXES:
            continue
        participant = check_entity(parts[0], "sub", f"{url}/{rel}")
        if wanted is not None and participant not in wanted:
            continue
        ses = f"_ses-{ent['ses']}" if "ses" in ent else ""
        key = f"sub-{participant}{ses}_label-{ent.get('label', 'lesion')}"
        found.setdefault(key, _Entry(key, participant, rel))
    if not found:
        raise InputError("no lesion masks found (expected sub-*/[ses-*/]anat/*_mask.nii.gz)", url)
    return list(found.values())


def _download(url: str, entries: list[_Entry], dest: Path) -> None:
    from lakepipe.io.storage import filesystem
    from lakepipe.progress import progress

    fs, root = filesystem(url)
    root = root.rstrip("/")
    for extra in ("dataset_description.json", "participants.tsv"):
        if fs.exists(f"{root}/{extra}"):
            fs.get(f"{root}/{extra}", str(dest / extra))
    for e in progress(entries, desc="download masks"):
        target = dest / e.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get(f"{root}/{e.relpath}", str(target))


# ---- per-kind planners


def _plan_ingest_lesions(lake: Lake, step: dict, plan: StepPlan, state: _State) -> None:
    from lakepipe.bids import check_entity

    cohort = check_entity(step["cohort"], "cohort")
    entries = _lesion_entries(step["source"], step.get("participants"), step.get("space"))
    known = set(lake.catalog.query(kind="lesion", cohort=cohort)["store_index"])
    new = [e for e in entries if e.key not in known]
    plan.new, plan.skipped, plan.to_compute = len(new), len(entries) - len(new), len(new)
    if step.get("incremental", True):
        plan.participants = sorted({e.participant for e in new})
        if not new:
            plan.note = "nothing new"
    else:
        plan.participants = sorted({e.participant for e in entries})
        plan.note = "full re-validation (incremental: false)"
    state.planned_lesions.setdefault(cohort, {}).update({e.key: e.participant for e in new})
    state.new_participants.setdefault(cohort, set()).update(e.participant for e in new)


def _plan_ingest_connectome(lake: Lake, step: dict, plan: StepPlan, state: _State) -> None:
    from lakepipe.io.sources import open_source

    if "://" in step["source"]:
        raise InputError(
            "connectome sources must be local folders (HDF5 batches, 4D NIfTI, parcel series)", step["source"]
        )
    src = open_source(step["source"], mask=step.get("mask"), regions=step.get("regions"))
    ids = [r.subject_id for r in src.subjects]
    known = set(lake.catalog.query(kind="connectome", connectome=step["name"])["store_index"])
    new = [s for s in ids if s not in known]
    plan.new, plan.skipped, plan.to_compute = len(new), len(ids) - len(new), len(new)
    if new:
        state.changed_connectomes.add(step["name"])


def _plan_ingest_atlas(lake: Lake, step: dict, plan: StepPlan, state: _State) -> None:
    there = lake.catalog.count(kind="atlas", atlas=step["name"]) > 0
    plan.new, plan.skipped, plan.to_compute = int(not there), int(there), int(not there)
    if not there:
        state.new_atlases.add(step["name"])


def _known_connectome(lake: Lake, name: str) -> bool:
    return lake.catalog.count(kind="connectome", connectome=name) > 0


def _plan_parcellate(lake: Lake, step: dict, plan: StepPlan, state: _State) -> None:
    from lakepipe.catalog import OutputRecord
    from lakepipe.pipelines.common import connectome_info
    from lakepipe.pipelines.parcellate import METHOD, STATISTICS, parcellate_params

    con_name, atlas = step["connectome"], step.get("atlas")
    key = (con_name, atlas)
    plan.new = None
    if (
        con_name in state.changed_connectomes
        or (atlas and atlas in state.new_atlases)
        or not _known_connectome(lake, con_name)
    ):
        plan.skipped, plan.to_compute = 0, 1
        plan.note = "inputs change in this job"
        state.pending_parcellate.add(key)
        return
    con = connectome_info(lake, con_name)
    atl = lake.read_atlas(atlas) if atlas else None
    atlas_name = atlas or con_name
    inputs = {"connectome": con.identity, "atlas": atl.sha256 if atl else con.identity}
    proto = OutputRecord(
        kind="derivative",
        method=METHOD,
        statistic="fcgroupz",
        store_uri="x",
        atlas=atlas_name,
        connectome=con_name,
        params=parcellate_params(con, atlas_name),
        inputs=inputs,
    )
    have = lake.catalog.existing_keys(METHOD, [(s, proto.inputs_hash, proto.params_hash) for s in STATISTICS])
    done = len(have) == len(STATISTICS)
    plan.skipped, plan.to_compute = int(done), int(not done)
    if not done:
        state.pending_parcellate.add(key)


def _lesion_rows(lake: Lake, cohort: str, participants: list[str] | None):
    return lake.catalog.query(kind="lesion", cohort=cohort, participant=participants or None)


def _unmapped_participants(lake: Lake, method: str, cohort: str, **filters) -> set[str]:
    """Participants of ``cohort`` with a lesion entry that ``method`` never mapped (any parameters)."""
    lesions = lake.catalog.query(kind="lesion", cohort=cohort)
    if lesions.empty:
        return set()
    stat = "afnmap" if method == "afnm" else "zmap"
    rows = lake.catalog.query(kind="derivative", method=method, cohort=cohort, statistic=stat, **filters)
    if method == "fnm" and filters.get("atlas") is None:
        rows = rows[rows["atlas"].isna()]
    mapped = {(r.participant, r.session, r.label) for r in rows.itertuples()}
    return {r.participant for r in lesions.itertuples() if (r.participant, r.session, r.label) not in mapped}


def _targets(lake: Lake, step: dict, plan: StepPlan, state: _State, method: str, **filters):
    """(lesion rows in the lake, planned new keys) this follow-on step covers; sets plan.participants."""
    from lakepipe.bids import check_entity

    cohort = check_entity(step["cohort"], "cohort")
    participants = [check_entity(p, "sub") for p in step.get("participants") or []] or None
    if step.get("only_new"):
        chosen = set(state.new_participants.get(cohort, ()))
        chosen |= _unmapped_participants(lake, method, cohort, **filters)
        participants = sorted(chosen)
        plan.participants = participants
        if not participants:
            return None, {}
    else:
        plan.participants = participants
    rows = _lesion_rows(lake, cohort, participants)
    planned = {
        k: p
        for k, p in state.planned_lesions.get(cohort, {}).items()
        if (participants is None or p in participants) and k not in set(rows["store_index"])
    }
    if rows.empty and not planned:
        known = lake.catalog.query(kind="lesion")
        cohorts = sorted(set(known["cohort"])) if len(known) else []
        raise NotFoundError(
            f"no lesions for cohort '{cohort}' in the lake and none ingested by this job "
            f"(cohorts: {cohorts or 'none'})"
        )
    return rows, planned


def _fill_counts(plan: StepPlan, state: _State, cohort: str, rows, planned: dict, done: int | None) -> None:
    fresh = set(state.new_participants.get(cohort, ()))
    total = len(rows) + len(planned)
    # planning: entries the ingest step will add; running: entries of the participants it just added
    plan.new = len(planned) if planned else sum(1 for r in rows.itertuples() if r.participant in fresh)
    if done is None:  # inputs change in this job: everything targeted is recomputed
        plan.skipped, plan.to_compute = 0, total
    else:
        plan.skipped, plan.to_compute = done, total - done


def _plan_afnm(lake: Lake, step: dict, plan: StepPlan, state: _State) -> None:
    from lakepipe.pipelines import afnm

    rows, planned = _targets(lake, step, plan, state, "afnm", atlas=step["atlas"])
    if rows is None:
        plan.new = plan.skipped = 0
        plan.note = "nothing new"
        return
    atlas, matrix, con = step["atlas"], step.get("matrix"), step.get("connectome")
    matrix_is_file = bool(matrix) and Path(matrix).suffix.lower() in MATRIX_FILE_SUFFIXES
    done: int | None = None
    changed = atlas in state.new_atlases or (
        not matrix_is_file
        and (
            (con and con in state.changed_connectomes) or any(a == atlas for _, a in state.pending_parcellate)
        )
    )
    if changed:
        plan.note = "inputs change in this job"
    elif not rows.empty:
        atl = lake.read_atlas(atlas)
        stat = matrix or "fcgroupz"
        if (
            not matrix_is_file
            and lake.catalog.query(method="parcellate", atlas=atlas, connectome=con, statistic=stat).empty
        ):
            plan.note = "group FC computed first"
        else:
            gm = afnm.resolve_matrix(
                lake,
                atl,
                matrix,
                con,
                variable=step.get("matrix_variable"),
                labels=step.get("matrix_labels"),
                order=step.get("matrix_order"),
            )
            params = afnm.afnm_params(step.get("weighting", "fractional"), gm, 1000, 0.5)
            from lakepipe.pipelines.seeds import Seed

            seeds = [
                Seed(r.store_index, r.participant, r.session, r.label, r.inputs["mask"])
                for r in rows.itertuples()
            ]
            keys = [afnm._record(step["cohort"], atlas, gm, s, params, atl.sha256, "x", 0) for s in seeds]
            have = lake.catalog.existing_keys(
                afnm.METHOD, [(afnm.STATISTIC, r.inputs_hash, r.params_hash) for r in keys]
            )
            done = sum((afnm.STATISTIC, r.inputs_hash, r.params_hash) in have for r in keys)
    _fill_counts(plan, state, step["cohort"], rows, planned, done)


def _plan_fnm(lake: Lake, step: dict, plan: StepPlan, state: _State) -> None:
    from lakepipe.pipelines import fnm
    from lakepipe.pipelines.common import connectome_info
    from lakepipe.pipelines.seeds import Seed

    atlas = step.get("atlas")
    rows, planned = _targets(lake, step, plan, state, "fnm", connectome=step["connectome"], atlas=atlas)
    if rows is None:
        plan.new = plan.skipped = 0
        plan.note = "nothing new"
        return
    con_name = step["connectome"]
    done: int | None = None
    if (
        con_name in state.changed_connectomes
        or (atlas and atlas in state.new_atlases)
        or not _known_connectome(lake, con_name)
    ):
        plan.note = "inputs change in this job"
    elif not rows.empty:
        con = connectome_info(lake, con_name)
        atl = lake.read_atlas(atlas) if atlas else None
        names = fnm.MAPS + (("avgr",) if step.get("avgr") else ())
        params = fnm.fnm_params()
        seeds = [
            Seed(r.store_index, r.participant, r.session, r.label, r.inputs["mask"])
            for r in rows.itertuples()
        ]
        wanted = [
            fnm.output_keys(s, con, params, names, step["cohort"], atlas, atl.sha256 if atl else None)
            for s in seeds
        ]
        have = lake.catalog.existing_keys(fnm.METHOD, [k for ks in wanted for k in ks])
        done = sum(all(k in have for k in ks) for ks in wanted)
    _fill_counts(plan, state, step["cohort"], rows, planned, done)


def _group_sidecar(step: dict, rows) -> Path:
    """Where :func:`~lakepipe.pipelines.collect.write_group` puts the JSON sidecar for ``rows``."""
    from lakepipe.bids import bids_name

    label = step.get("label") if isinstance(step.get("label"), str) else None
    atlas = step.get("atlas") or (rows["atlas"].dropna().iloc[0] if rows["atlas"].notna().any() else None)
    ent = {"label": label, "method": step["method"], "atlas": atlas, "desc": rows["statistic"].iloc[0]}
    voxel = step["method"] == "fnm" and not step.get("atlas")
    return Path(step["out"]) / ("group_" + bids_name(ent, "rows" if voxel else "parcelstats", ".json"))


def _collect_rows(lake: Lake, step: dict):
    from lakepipe.pipelines.collect import select_rows

    label = step.get("label")
    return select_rows(
        lake,
        step["method"],
        atlas=step.get("atlas"),
        label=label,
        statistic=step.get("statistic"),
        cohort=step.get("cohort"),
        connectome=step.get("connectome"),
        params=step.get("params"),
    )


def _plan_collect(lake: Lake, step: dict, plan: StepPlan, state: _State) -> None:
    plan.new = None
    if state.work_before:
        plan.skipped, plan.to_compute, plan.note = 0, 1, "after the steps above"
        return
    rows = _collect_rows(lake, step)
    sidecar = _group_sidecar(step, rows)
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        meta = {}
    current = meta.get("Sources") == sorted(rows["store_uri"].unique()) and meta.get("NumberOfRows") == len(
        rows
    )
    plan.skipped, plan.to_compute = int(current), int(not current)
    plan.note = f"{len(rows)} row(s)" + (" unchanged" if current else "")


_PLANNERS: dict[str, Callable] = {
    "ingest-lesions": _plan_ingest_lesions,
    "ingest-connectome": _plan_ingest_connectome,
    "ingest-atlas": _plan_ingest_atlas,
    "parcellate": _plan_parcellate,
    "afnm": _plan_afnm,
    "fnm": _plan_fnm,
    "collect": _plan_collect,
}


def _plan_step(lake: Lake, index: int, step: dict, state: _State, *, name_step: bool = True) -> StepPlan:
    plan = StepPlan(index, step["kind"], step_target(step))
    try:
        _PLANNERS[step["kind"]](lake, step, plan, state)
    except InputError as exc:
        if not name_step:
            raise
        raise InputError(f"step {index} ({step['kind']}): {exc}") from None
    if plan.to_compute:
        state.work_before = True
    return plan


def plan_job(job: JobSpec, lake: Lake) -> list[StepPlan]:
    """Per step: what is new, what is skipped, what is to compute. Reads the lake, writes nothing."""
    state = _State()
    return [_plan_step(lake, i, step, state) for i, step in enumerate(job.steps, 1)]


def format_plan(job: JobSpec, lake: Lake, plan: list[StepPlan]) -> str:
    from lakepipe.io.storage import public_url

    head = ("step", "kind", "target", "new", "skipped", "to compute", "")
    rows = [head] + [p.row() for p in plan]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    where = f" ({job.path})" if job.path else ""
    lines = [f"job '{job.name}'{where} on lake {public_url(lake.url)}"]
    for r in rows:
        cells = [
            c.rjust(w) if i in (0, 3, 4, 5) else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=False))
        ]
        lines.append("  " + "  ".join(cells) + (f"  {r[-1]}" if r[-1] else ""))
    total = sum(p.to_compute for p in plan)
    lines.append(f"  {total} item(s) to compute" if total else "  nothing to do: everything is in the lake")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- running


@dataclass
class StepResult:
    index: int
    kind: str
    target: str
    written: int = 0  #: entries ingested, outputs computed or group files written
    skipped: int = 0
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    summary: str = ""


@dataclass
class JobResult:
    """Outcome of :func:`run_job`: the plan and, unless a dry run, what each step did."""

    name: str
    lake: str
    plan: list[StepPlan]
    steps: list[StepResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def written(self) -> int:
        return sum(s.written for s in self.steps)

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.steps)

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{"1:ingest-lesions": (written, skipped), ...}``."""
        return {f"{s.index}:{s.kind}": (s.written, s.skipped) for s in self.steps}

    def summary(self) -> str:
        if self.dry_run:
            return f"job '{self.name}': dry run, nothing written"
        lines = [f"job '{self.name}' finished: {self.written} new, {self.skipped} skipped"]
        lines += [f"  {s.index}. {s.kind:<17} {s.summary}  ({s.seconds:.1f} s)" for s in self.steps]
        return "\n".join(lines)


def _planning_lake(lake: Lake) -> Lake:
    """``lake`` with its catalog opened read-only: a lake not created yet plans against an empty one."""
    from lakepipe.catalog import Catalog
    from lakepipe.catalog.urls import catalog_url_for_lake

    url = catalog_url_for_lake(lake.url, lake._catalog_url)
    try:
        catalog = Catalog(url, create=False)
    except NotFoundError:  # no catalog yet: plan against an empty one, create nothing
        quiet = logging.getLogger("lakepipe.catalog")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            catalog = Catalog("sqlite://")
        finally:
            quiet.setLevel(level)
    view = Lake(lake.url, catalog=lake._catalog_url)
    view.__dict__["catalog"] = catalog  # the cached property, set to the read-only view
    return view


def job_lake(job: JobSpec, lake: str | None = None, catalog: str | None = None) -> Lake:
    """The lake a job runs on: command-line values first, then the spec, then the environment."""
    return Lake(lake or job.lake, catalog=catalog or job.catalog)


def run_job(
    job: JobSpec,
    *,
    lake: Lake | None = None,
    scheduler: str | None = None,
    client=None,
    dry_run: bool = False,
    echo: Callable[[str], None] | None = None,
) -> JobResult:
    """Plan ``job`` and (unless ``dry_run``) run its steps on one Dask client.

    ``echo`` receives the plan table and one line per finished step (the CLI prints them);
    progress is also logged. The Dask client (``client``, else ``scheduler``/the spec's scheduler/
    the environment, else a local cluster) is started only when a step has something to compute.
    """
    echo = echo or (lambda text: log.info("%s", text))
    lake = lake or job_lake(job)
    plan = plan_job(job, _planning_lake(lake))
    echo(format_plan(job, lake, plan))
    result = JobResult(job.name, lake.url, plan, dry_run=dry_run)
    if dry_run:
        return result
    scheduler = scheduler or job.scheduler
    run_id = lake.catalog.start_run(
        f"lakepipe jobs run {job.path or job.name}",
        {
            "job": job.name,
            "spec": str(job.path) if job.path else None,
            "steps": [s["kind"] for s in job.steps],
        },
    )
    state = _State()
    status = "failed"
    try:
        with ExitStack() as stack:
            shared = {"client": client, "started": client is not None}

            def get_client():
                if not shared["started"]:
                    from lakepipe.cluster import dask_client

                    shared["client"] = stack.enter_context(dask_client(scheduler, lake_url=lake.url))
                    shared["started"] = True
                return shared["client"]

            for i, step in enumerate(job.steps, 1):
                log.info(
                    "job %s: step %d/%d %s: %s", job.name, i, len(job.steps), step["kind"], step_target(step)
                )
                t0 = time.perf_counter()
                try:
                    res = _RUNNERS[step["kind"]](lake, step, state, get_client)
                except InputError as exc:
                    raise InputError(f"step {i} ({step['kind']}): {exc}") from None
                res.index, res.kind, res.target = i, step["kind"], step_target(step)
                res.seconds = time.perf_counter() - t0
                result.steps.append(res)
                log.info(
                    "job %s: step %d/%d %s done in %.1f s: %s",
                    job.name,
                    i,
                    len(job.steps),
                    step["kind"],
                    res.seconds,
                    res.summary,
                )
        status = "finished"
    finally:
        lake.catalog.finish_run(run_id, result.written, result.skipped, status=status)
    return result


def _client_if_work(lake: Lake, i: int, step: dict, state: _State, get_client):
    """Re-plan a compute step now (earlier steps have run) and start the shared client if it has work."""
    plan = _plan_step(lake, i, step, state, name_step=False)  # run_job names the step in errors
    return plan, (get_client() if plan.to_compute else None)


def _run_ingest_lesions(lake: Lake, step: dict, state: _State, get_client) -> StepResult:
    from lakepipe.bids import check_entity
    from lakepipe.pipelines.ingest import ingest_lesions

    cohort = check_entity(step["cohort"], "cohort")
    source = step["source"]
    entries = _lesion_entries(source, step.get("participants"), step.get("space"))
    known = set(lake.catalog.query(kind="lesion", cohort=cohort)["store_index"])
    new = [e for e in entries if e.key not in known]
    fresh = sorted({e.participant for e in new})
    state.new_participants.setdefault(cohort, set())
    if step.get("incremental", True):
        if not new:
            return StepResult(
                0, "", "", 0, len(entries), summary=f"nothing new ({len(entries)} already in the lake)"
            )
        participants = fresh
    else:
        participants = sorted({e.participant for e in entries})
    with ExitStack() as stack:
        folder = source
        if "://" in source:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lakepipe-bids-")))
            _download(source, [e for e in entries if e.participant in set(participants)], tmp)
            folder = str(tmp)
        res = ingest_lesions(
            lake,
            folder,
            cohort=cohort,
            participants=participants,
            weighted=bool(step.get("weighted")),
            space=step.get("space"),
        )
    written = set(res.written)
    state.new_participants[cohort].update(e.participant for e in entries if e.key in written)
    skipped = len(entries) - len(res.written)
    return StepResult(
        0, "", "", len(res.written), skipped, summary=res.summary().replace(f" -> {res.store}", "")
    )


def _run_ingest_connectome(lake: Lake, step: dict, state: _State, get_client) -> StepResult:
    from lakepipe.pipelines.ingest import ingest_connectome

    res = ingest_connectome(
        lake,
        step["source"],
        name=step["name"],
        mask=step.get("mask"),
        regions=step.get("regions"),
        space=step.get("space", "MNI152NLin6Asym"),
    )
    return StepResult(0, "", "", len(res.written), len(res.skipped), summary=res.summary().split(" -> ")[0])


def _run_ingest_atlas(lake: Lake, step: dict, state: _State, get_client) -> StepResult:
    from lakepipe.pipelines.ingest import ingest_atlas

    res = ingest_atlas(lake, step["nifti"], labels=step["labels"], name=step["name"], space=step.get("space"))
    return StepResult(0, "", "", len(res.written), len(res.skipped), summary=res.summary().split(" -> ")[0])


def _run_parcellate(lake: Lake, step: dict, state: _State, get_client) -> StepResult:
    from lakepipe.pipelines.parcellate import parcellate

    plan, client = _client_if_work(lake, 0, step, state, get_client)
    out = step.get("out")
    if out and not plan.to_compute:
        atlas_name = step.get("atlas") or step["connectome"]
        names = [f"method-parcellate_atlas-{atlas_name}_desc-fcgroup{s}_connmatrix.tsv" for s in "zr"]
        if all((Path(out) / n).exists() for n in names):
            out = None  # unchanged and already exported: leave the files alone
    res = parcellate(lake, step["connectome"], step.get("atlas"), out_dir=out, client=client)
    return StepResult(
        0,
        "",
        "",
        int(not res.skipped),
        int(res.skipped),
        files=list(res.files),
        summary=res.summary().split(":")[0],
    )


def _only_new_participants(plan: StepPlan, step: dict):
    if step.get("only_new"):
        return plan.participants
    return step.get("participants")


def _run_afnm(lake: Lake, step: dict, state: _State, get_client) -> StepResult:
    from lakepipe.pipelines.afnm import run_afnm

    plan, client = _client_if_work(lake, 0, step, state, get_client)
    participants = _only_new_participants(plan, step)
    if step.get("only_new") and not participants:
        return StepResult(0, "", "", 0, 0, summary="nothing new to map")
    matrix, con = step.get("matrix"), step.get("connectome")
    if (
        con
        and not (matrix and Path(matrix).suffix.lower() in MATRIX_FILE_SUFFIXES)
        and lake.catalog.query(
            method="parcellate", atlas=step["atlas"], connectome=con, statistic=matrix or "fcgroupz"
        ).empty
    ):
        from lakepipe.pipelines.parcellate import parcellate

        log.info("job: no group FC for %s x %s yet: parcellate first", con, step["atlas"])
        parcellate(lake, con, step["atlas"], client=get_client())  # on the job's client, not a new cluster
    res = run_afnm(
        lake,
        step["cohort"],
        step["atlas"],
        matrix=matrix,
        connectome=con,
        weighting=step.get("weighting", "fractional"),
        participants=participants,
        on_empty=step.get("on_empty", "warn"),
        bids_out=step.get("bids_out"),
        with_weights=bool(step.get("with_weights")),
        matrix_variable=step.get("matrix_variable"),
        matrix_labels=step.get("matrix_labels"),
        matrix_order=step.get("matrix_order"),
        client=client,
    )
    return StepResult(
        0,
        "",
        "",
        len(res.computed),
        len(res.skipped),
        files=list(res.files),
        summary=res.summary().split(" -> ")[0],
    )


def _run_fnm(lake: Lake, step: dict, state: _State, get_client) -> StepResult:
    from lakepipe.pipelines.fnm import run_fnm

    plan, client = _client_if_work(lake, 0, step, state, get_client)
    participants = _only_new_participants(plan, step)
    if step.get("only_new") and not participants:
        return StepResult(0, "", "", 0, 0, summary="nothing new to map")
    res = run_fnm(
        lake,
        step["connectome"],
        cohort=step["cohort"],
        participants=participants,
        atlas=step.get("atlas"),
        bids_out=step.get("bids_out"),
        with_avgr=bool(step.get("avgr")),
        batch_size=step.get("batch_size"),
        client=client,
    )
    return StepResult(
        0,
        "",
        "",
        len(res.computed),
        len(res.skipped),
        files=list(res.files),
        summary=res.summary().split(" -> ")[0],
    )


def _run_collect(lake: Lake, step: dict, state: _State, get_client) -> StepResult:
    from lakepipe.pipelines.collect import collect, write_group

    state.work_before = False  # decide from the files and the lake as they are now
    plan = _plan_step(lake, 0, step, state, name_step=False)
    if not plan.to_compute:
        return StepResult(0, "", "", 0, 1, summary=f"group file up to date ({plan.note})")
    da = collect(
        lake,
        step["method"],
        atlas=step.get("atlas"),
        label=step.get("label"),
        statistic=step.get("statistic"),
        cohort=step.get("cohort"),
        connectome=step.get("connectome"),
        params=step.get("params"),
    )
    files = write_group(da, step["out"])
    return StepResult(0, "", "", 1, 0, files=files, summary=f"{da.sizes['seed']} row(s) -> {files[0]}")


_RUNNERS: dict[str, Callable] = {
    "ingest-lesions": _run_ingest_lesions,
    "ingest-connectome": _run_ingest_connectome,
    "ingest-atlas": _run_ingest_atlas,
    "parcellate": _run_parcellate,
    "afnm": _run_afnm,
    "fnm": _run_fnm,
    "collect": _run_collect,
}

__all__ = [
    "JobResult",
    "JobSpec",
    "StepPlan",
    "StepResult",
    "check_spec_file",
    "format_plan",
    "job_lake",
    "load_job",
    "load_schema",
    "plan_job",
    "run_job",
    "schema_errors",
    "validate_spec",
]
