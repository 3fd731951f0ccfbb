"""Ingestion: BIDS lesion masks, connectomes and atlases into the lake, registered in the catalog.

Everything is validated before anything is written; data are written before they are registered;
re-ingesting unchanged inputs is a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lakepipe.bids import check_entity, parse_entities
from lakepipe.catalog import OutputRecord, content_hash
from lakepipe.compute.correlation import center_unit
from lakepipe.errors import InputError
from lakepipe.io import stores
from lakepipe.io.labels import check_labels_match, read_label_table
from lakepipe.io.nifti import Mask, load_label_volume, load_mask
from lakepipe.io.sources import open_source
from lakepipe.io.storage import exists, join, remove
from lakepipe.lake import Lake
from lakepipe.progress import progress
from lakepipe.space import MNI_SPACES, Grid, grid_matches_space, mni152_brain_mask_2mm, mni152_grid

log = logging.getLogger(__name__)

MASK_SUFFIXES = ("mask", "roi")
DEFAULT_SPACE = "MNI152NLin6Asym"


@dataclass
class IngestResult:
    """What an ingest did: keys written and skipped (already in the lake, unchanged)."""

    what: str
    name: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    store: str = ""

    def summary(self) -> str:
        return (
            f"{self.what} '{self.name}': {len(self.written)} new, {len(self.skipped)} already in the "
            f"lake -> {self.store}"
        )


def check_name(name: str, what: str) -> str:
    """Cohort/atlas/connectome names are used in paths and BIDS entities: letters and digits only."""
    return check_entity(name, what)


# ------------------------------------------------------------------------------------------------ lesions


@dataclass(frozen=True)
class LesionFile:
    path: Path
    participant: str
    session: str | None
    label: str
    space: str | None

    @property
    def key(self) -> str:
        ses = f"_ses-{self.session}" if self.session else ""
        return f"sub-{self.participant}{ses}_label-{self.label}"


def find_lesion_files(
    bids_dir: Path, participants: list[str] | None = None, default_space: str | None = DEFAULT_SPACE
) -> list[LesionFile]:
    """Mask files of a BIDS dataset (``sub-*/[ses-*/]anat/*_{mask,roi}.nii[.gz]``), entities validated."""
    if not bids_dir.is_dir():
        raise InputError("BIDS dataset folder not found", bids_dir)
    wanted = {check_entity(p, "sub") for p in participants} if participants else None
    found: dict[str, LesionFile] = {}
    for path in sorted(bids_dir.glob("sub-*/**/*.nii*")):
        ent = parse_entities(path.name)
        if ent.get("suffix") not in MASK_SUFFIXES:
            continue
        sub_dir = path.relative_to(bids_dir).parts[0]
        participant = check_entity(sub_dir, "sub", str(path))
        if ent.get("sub") != participant:
            raise InputError(f"file name says sub-{ent.get('sub')} but it is in {sub_dir}/", path)
        if wanted is not None and participant not in wanted:
            continue
        session = check_entity(ent["ses"], "ses", str(path)) if "ses" in ent else None
        label = check_entity(ent.get("label", "lesion"), "label", str(path))
        lf = LesionFile(path, participant, session, label, ent.get("space", default_space))
        if lf.key in found:
            raise InputError(
                f"two masks for {lf.key} ({found[lf.key].path.name} and {path.name}): ingest different "
                "resolutions or spaces into separate cohorts",
                path,
            )
        found[lf.key] = lf
    if wanted:
        missing = wanted - {f.participant for f in found.values()}
        if missing:
            raise InputError(f"no lesion masks for participant(s) {sorted(missing)}", bids_dir)
    if not found:
        raise InputError("no lesion masks found (expected sub-*/[ses-*/]anat/*_mask.nii.gz)", bids_dir)
    return list(found.values())


def check_in_brain(mask: Mask, path: Path) -> None:
    """Refuse an MNI-space mask with no voxel inside the MNI152 brain."""
    if mask.space not in MNI_SPACES:
        return
    brain, grid = mni152_brain_mask_2mm(), mni152_grid(2)
    ijk = np.stack(np.unravel_index(mask.indices, mask.grid.shape))
    xyz = mask.grid.affine[:3, :3] @ ijk + mask.grid.affine[:3, 3:4]
    inv = np.linalg.inv(grid.affine)
    dst = np.rint(inv[:3, :3] @ xyz + inv[:3, 3:4]).astype(int)
    ok = np.all((dst >= 0) & (dst < np.array(grid.shape)[:, None]), axis=0)
    if not ok.any() or not brain[tuple(dst[:, ok])].any():
        raise InputError(
            "lesion lies entirely outside the brain (no voxel inside the MNI152 brain mask)", path
        )


def lesion_record(cohort: str, lf: LesionFile, mask: Mask, store_uri: str) -> OutputRecord:
    return OutputRecord(
        kind="lesion",
        method="ingest",
        cohort=cohort,
        participant=lf.participant,
        session=lf.session,
        label=lf.label,
        statistic="mask",
        params={
            "cohort": cohort,
            "participant": lf.participant,
            "session": lf.session,
            "label": lf.label,
            "space": mask.space,
        },
        inputs={"mask": mask.content_hash()},
        store_uri=store_uri,
        store_index=lf.key,
        shape=[mask.n_voxels],
    )


def ingest_lesions(
    lake: Lake,
    bids_dir: str | Path,
    *,
    cohort: str = "default",
    participants: list[str] | None = None,
    weighted: bool = False,
    space: str | None = DEFAULT_SPACE,
) -> IngestResult:
    """Ingest a BIDS lesion dataset into ``lesions/<cohort>.zarr``.

    All masks are validated before anything is written. Unchanged entries are skipped; an entry
    whose mask changed since it was ingested is refused (ingest into a new cohort instead).
    """
    cohort = check_name(cohort, "cohort")
    bids_dir = Path(bids_dir)
    files = find_lesion_files(bids_dir, participants, space)
    masks: list[tuple[LesionFile, Mask]] = []
    for lf in progress(files, desc="validate masks"):
        mask = load_mask(lf.path, space=lf.space, allow_weighted=weighted)
        check_in_brain(mask, lf.path)
        masks.append((lf, mask))

    store_url = stores.lesion_store_url(lake.url, cohort)
    store_uri = stores.relative(lake.url, store_url)
    registered = lake.catalog.query(kind="lesion", cohort=cohort)
    known = {row.store_index: row.inputs.get("mask") for row in registered.itertuples()}
    result = IngestResult("lesions", cohort, store=store_url)
    todo = []
    for lf, mask in masks:
        h = mask.content_hash()
        if lf.key in known:
            if known[lf.key] != h:
                raise InputError(
                    f"{lf.key} is already in cohort '{cohort}' with a different mask; "
                    "ingest the new version into another --cohort",
                    lf.path,
                )
            result.skipped.append(lf.key)
        else:
            todo.append((lf, mask))
    records = []
    for lf, mask in progress(todo, desc="write masks"):
        rel = str(lf.path.relative_to(bids_dir))
        stores.write_lesion(
            lake.url,
            cohort,
            lf.key,
            mask,
            {
                "participant": lf.participant,
                "session": lf.session,
                "label": lf.label,
                "source": rel,
                "sha256": mask.content_hash(),
            },
        )
        records.append(lesion_record(cohort, lf, mask, store_uri))
        result.written.append(lf.key)
    if records:
        lake.publish(records)
        # the cohort's packed index (a read cache), so that AFNM/FNM read all its masks in a few reads
        try:
            stores.update_lesion_index(
                lake.url, cohort, {lf.key: (mask, mask.content_hash()) for lf, mask in todo}
            )
        except Exception as exc:  # noqa: BLE001 - the entries are published; readers fall back to them
            log.warning(
                "lesion index of cohort %s not updated (%s); masks will be read entry by entry", cohort, exc
            )
    store_participants(lake, cohort, bids_dir)
    log.info(result.summary())
    return result


def store_participants(lake: Lake, cohort: str, bids_dir: Path) -> None:
    """Keep the dataset's ``participants.tsv`` (clinical columns) with the cohort, merged by participant."""
    path = bids_dir / "participants.tsv"
    if not path.exists():
        return
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse participants.tsv ({exc})", path) from exc
    if "participant_id" not in table.columns:
        raise InputError("participants.tsv has no participant_id column", path)
    stores.merge_participants(lake.url, cohort, table.to_dict(orient="records"))


# ----------------------------------------------------------------------------------------- connectomes


def ingest_connectome(
    lake: Lake,
    source_dir: str | Path,
    *,
    name: str,
    mask: str | Path | None = None,
    regions: str | Path | None = None,
    space: str = DEFAULT_SPACE,
    commit_every: int = 32,
) -> IngestResult:
    """Stream a connectome source into ``connectomes/<name>.zarr``, one subject at a time.

    Subjects already registered are skipped; new subjects are appended. Every ``commit_every``
    subjects the written ones are committed and registered, so a killed ingest resumes there.
    Peak memory is a few copies of one subject's (time x voxel) array, whatever the subject count.
    """
    name = check_name(name, "connectome")
    src = open_source(source_dir, mask=mask, regions=regions)
    src.space = space
    if src.kind == "voxel" and not grid_matches_space(src.geometry.grid, space):
        raise InputError(
            f"connectome grid {src.geometry.grid.shape} does not match space {space}", source_dir
        )
    url = stores.connectome_url(lake.url, name)
    store_uri = stores.relative(lake.url, url)
    fresh = not exists(join(url, "zarr.json"))
    writer = stores.ConnectomeWriter(
        lake.url,
        name,
        kind=src.kind,
        n_time=src.n_time,
        geometry=src.geometry,
        regions=src.regions,
        space=space,
        source=str(source_dir),
    )
    registered = set(lake.catalog.query(kind="connectome", connectome=name)["store_index"])
    committed = writer.subject_ids()
    # subjects committed to the store but not registered (killed between the two): register now
    orphans = [s for s in committed if s not in registered]
    fingerprints = {r.subject_id: r.fingerprint for r in src.subjects}
    if orphans:
        lake.publish([_subject_record(name, s, fingerprints.get(s, ""), store_uri, src) for s in orphans])
    done = set(committed)
    todo = [r for r in src.subjects if r.subject_id not in done]
    result = IngestResult(
        "connectome", name, store=url, skipped=[r.subject_id for r in src.subjects if r.subject_id in done]
    )

    def flush() -> None:
        ids = writer.commit()
        if ids:
            lake.publish([_subject_record(name, s, fingerprints[s], store_uri, src) for s in ids])
            result.written.extend(ids)

    try:
        for ref, data in progress(src.iter_subjects(todo), total=len(todo), desc=f"ingest {name}"):
            unit, scale, mean = center_unit(data, axis=0)
            writer.write(ref.subject_id, unit, scale, mean)
            if len(writer.pending) >= commit_every:
                flush()
        flush()
    except BaseException:
        writer.pending.clear()
        writer.commit()  # drop uncommitted leftovers
        if fresh and not result.written:
            remove(url)
        raise
    log.info(result.summary())
    return result


def _subject_record(name: str, subject: str, fingerprint: str, store_uri: str, src) -> OutputRecord:
    return OutputRecord(
        kind="connectome",
        method="ingest",
        connectome=name,
        statistic="timeseries",
        params={"connectome": name, "subject": subject, "storage": stores.STORAGE_CONVENTION},
        inputs={"source": fingerprint or subject},
        store_uri=store_uri,
        store_index=subject,
        shape=[src.n_time, src.n_features],
    )


# --------------------------------------------------------------------------------------------- atlases


def ingest_atlas(
    lake: Lake, nifti: str | Path, *, labels: str | Path, name: str, space: str | None = None
) -> IngestResult:
    """Ingest a label volume and its label file as ``atlases/<name>.zarr``."""
    name = check_name(name, "atlas")
    nifti = Path(nifti)
    ent = parse_entities(nifti.name)
    space = space or ent.get("tpl") or ent.get("space") or DEFAULT_SPACE
    volume, grid = load_label_volume(nifti)
    if not grid_matches_space(grid, space):
        raise InputError(f"grid {grid.shape} does not match the stated space {space}", nifti)
    table = read_label_table(labels)
    absent = check_labels_match(table, volume, labels)
    if absent:
        log.warning(
            "atlas %s: %d labelled region(s) have no voxel in the volume: %s", name, len(absent), absent[:10]
        )
    digest = content_hash({"dseg": _array_hash(volume, grid), "table": table.to_csv(index=False)})
    url = stores.atlas_url(lake.url, name)
    result = IngestResult("atlas", name, store=url)
    existing = lake.catalog.query(kind="atlas", atlas=name)
    if len(existing):
        if existing.iloc[0]["inputs"].get("atlas") != digest:
            raise InputError(
                f"atlas '{name}' is already in the lake with other content; choose another --name", nifti
            )
        result.skipped.append(name)
        return result
    stores.write_atlas(
        lake.url,
        name,
        volume,
        grid,
        table,
        space,
        {
            "source": str(nifti.name),
            "labels_source": str(Path(labels).name),
            "sha256": digest,
            "absent_labels": absent,
        },
    )
    lake.publish(
        [
            OutputRecord(
                kind="atlas",
                method="ingest",
                atlas=name,
                statistic="dseg",
                params={"atlas": name, "space": space},
                inputs={"atlas": digest},
                store_uri=stores.relative(lake.url, url),
                store_index=name,
                shape=list(grid.shape),
            )
        ]
    )
    result.written.append(name)
    log.info(result.summary())
    return result


def _array_hash(volume: np.ndarray, grid: Grid) -> str:
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(volume).tobytes())
    h.update(np.round(grid.affine, 6).tobytes())
    return h.hexdigest()
