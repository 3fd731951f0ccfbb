"""Ingesting BIDS lesion masks (a folder or a URL) into ``lesions/<cohort>.zarr``.

Every mask to ingest is validated before anything is written; data are written before they are
registered; re-ingesting unchanged inputs is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lakepipe.bids import check_entity
from lakepipe.catalog import OutputRecord
from lakepipe.errors import InputError
from lakepipe.ingest.result import IngestResult
from lakepipe.io import layout, stores
from lakepipe.io.bidsfind import DEFAULT_SPACE, LesionFile, fetch_dataset, find_lesion_files
from lakepipe.io.nifti import Mask, load_mask
from lakepipe.lake import Lake
from lakepipe.progress import progress
from lakepipe.runtime import RunContext
from lakepipe.space import MNI_SPACES, mni152_brain_mask_2mm, mni152_grid

log = logging.getLogger(__name__)


def check_in_brain(mask: Mask, path: Path | str) -> None:
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
    """The catalog record of one ingested mask."""
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
        shape=(mask.n_voxels,),
    )


def ingest_lesions(
    lake: Lake,
    source: str | Path,
    *,
    cohort: str = "default",
    participants: Sequence[str] | None = None,
    weighted: bool = False,
    space: str | None = DEFAULT_SPACE,
    incremental: bool = False,
    run: RunContext | None = None,
) -> IngestResult:
    """Ingest a BIDS lesion dataset (folder or fsspec URL) into ``lesions/<cohort>.zarr``.

    Parameters
    ----------
    lake
        The lake.
    source
        The BIDS dataset: a folder, or a URL (``s3://bucket/bids``; only the masks to ingest are
        downloaded).
    cohort
        Cohort name (letters and digits).
    participants
        Only these participants.
    weighted
        Accept weighted (non-binary) masks.
    space
        Space of masks whose name has no ``space-`` entity.
    incremental
        Read and validate only the entries not yet in the lake (scheduled jobs); otherwise every
        mask is validated and one that changed since it was ingested is refused.
    run
        The run to publish under (a job's); by default a run of its own.
    """
    cohort = check_entity(cohort, "cohort")
    files = find_lesion_files(source, participants, space)
    registered = lake.catalog.query(kind="lesion", cohort=cohort)
    known = {row.store_index: row.inputs.get("mask") for row in registered.itertuples()}
    store_url = layout.lesion_store(lake.url, cohort)
    result = IngestResult("lesions", cohort, store=store_url)
    if incremental:
        result.skipped = [lf.key for lf in files if lf.key in known]
        files = [lf for lf in files if lf.key not in known]
    with contextlib.ExitStack() as stack:
        folder: str | Path = source
        if "://" in str(source):  # a remote dataset: download what is to be read
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lakepipe-bids-")))
            fetch_dataset(str(source), files, folder)
            files = [
                LesionFile(folder / lf.relpath, lf.participant, lf.session, lf.label, lf.space, lf.relpath)
                for lf in files
            ]
        masks: list[tuple[LesionFile, Mask]] = []
        result.read = [lf.key for lf in files]
        for lf in progress(files, desc="validate masks"):
            mask = load_mask(lf.path, space=lf.space, allow_weighted=weighted)
            check_in_brain(mask, lf.path)
            masks.append((lf, mask))
        todo = []
        for lf, mask in masks:
            if lf.key in known:
                if known[lf.key] != mask.content_hash():
                    raise InputError(
                        f"{lf.key} is already in cohort '{cohort}' with a different mask; "
                        "ingest the new version into another --cohort",
                        lf.path,
                    )
                result.skipped.append(lf.key)
            else:
                todo.append((lf, mask))
        participants_table = read_participants_table(Path(folder))
        with lake.joined_run(run, f"lakepipe ingest lesions {source}", {"cohort": cohort}) as ctx:
            records = []
            uri = layout.relative(lake.url, store_url)
            for lf, mask in progress(todo, desc="write masks"):
                stores.write_lesion(
                    lake.url,
                    cohort,
                    lf.key,
                    mask,
                    {
                        "participant": lf.participant,
                        "session": lf.session,
                        "label": lf.label,
                        "source": lf.relpath,
                        "sha256": mask.content_hash(),
                    },
                )
                records.append(lesion_record(cohort, lf, mask, uri))
                result.written.append(lf.key)
            if records:
                ctx.publish(records)
                # the cohort's packed index (a read cache): AFNM/FNM read all its masks in a few reads
                try:
                    stores.update_lesion_index(
                        lake.url, cohort, {lf.key: (m, m.content_hash()) for lf, m in todo}
                    )
                except Exception as exc:  # noqa: BLE001 - the entries are published; readers fall back to them
                    log.warning(
                        "lesion index of cohort %s not updated (%s); masks will be read entry by entry",
                        cohort,
                        exc,
                    )
            ctx.count_skipped(len(result.skipped))
            if participants_table is not None and (records or not incremental):
                stores.merge_participants(lake.url, cohort, participants_table)
    log.info(result.summary())
    return result


def read_participants_table(bids_dir: Path) -> list[dict[str, str]] | None:
    """The dataset's ``participants.tsv`` rows (clinical columns, as text), or None without one."""
    path = bids_dir / "participants.tsv"
    if not path.exists():
        return None
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse participants.tsv ({exc})", path) from None
    if "participant_id" not in table.columns:
        raise InputError("participants.tsv has no participant_id column", path)
    rows: list[dict[str, str]] = table.to_dict(orient="records")
    return rows
