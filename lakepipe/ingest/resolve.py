"""Folders as a method's inputs: :func:`resolve_inputs` ingests a BIDS folder of lesions and registers
a folder of HDF5 batches in place (or reuses it), then hands the method their lake names. Apart
from the ingest modules, which it imports only when a folder is given: a run on names already in
the lake imports none of them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakepipe.bids import check_entity
from lakepipe.errors import InputError

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.runtime import RunContext


def name_from_folder(folder: str | Path, default: str = "default") -> str:
    """A lake name (letters and digits) from a folder's (or URL's) last segment."""
    last = str(folder).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9]", "", last) or default


def _is_folder_input(lake: Lake, value: str) -> bool:
    """A ``connectome`` value naming a folder rather than a connectome of the lake."""
    if re.fullmatch(r"[A-Za-z0-9]+", value):
        return not lake.catalog.count(kind="connectome", connectome=value) and Path(value).is_dir()
    path = Path(value).expanduser()
    if not path.is_dir():  # not a name (names are letters and digits), so meant as a folder
        raise InputError("no such folder of HDF5 batches (and not a connectome name)", path)
    return True


@dataclass
class ResolvedInputs:
    """A method's parameters with folders replaced by lake names, and what was (or would be) done."""

    values: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    pending: bool = False  #: a dry run found something still to register (the plan cannot be made)


def resolve_inputs(
    lake: Lake,
    values: dict[str, Any],
    *,
    bids_dir: str | Path | None = None,
    run: RunContext | None = None,
    dry_run: bool = False,
) -> ResolvedInputs:
    """Parameters of a method run with its folder inputs registered in the lake.

    ``bids_dir``: lesion masks ingested as cohort ``values["cohort"]`` (default: named from the
    folder) and ``cohort`` set. ``values["connectome"]`` naming a folder of HDF5 batches (not a
    connectome of the lake): registered in place (or reused) and replaced by its name. Both inputs
    are checked (the batches' headers and masks, every lesion mask) before either is registered.
    ``dry_run`` registers nothing and says what would be registered.
    """
    out = ResolvedInputs(dict(values))
    folder = None
    con = out.values.get("connectome")
    if isinstance(con, str) and con and _is_folder_input(lake, con):
        from lakepipe.ingest.inplace import (
            batch_files,
            batches_unchanged,
            inplace_name,
            open_source,
            recorded_attrs,
        )

        folder = Path(con).expanduser().resolve()
        files = batch_files(folder)
        if not files:
            raise InputError(
                "a connectome folder given to a method must hold HDF5 batches (*.h5), read in place; "
                "ingest other formats with `lakepipe ingest connectome`",
                folder,
            )
        name = inplace_name(folder)
        attrs = recorded_attrs(lake, name)
        reuse = attrs is not None and batches_unchanged(attrs, folder, files)
        if not reuse:
            open_source(folder, source_format="hdf5")  # headers and masks checked before anything is written
        out.values["connectome"] = name
        if dry_run and not reuse:
            out.notes.append(f"would register {folder} in place as connectome '{name}'")
            out.pending = True
    if bids_dir is not None:
        cohort = check_entity(str(out.values.get("cohort") or name_from_folder(bids_dir)), "cohort")
        out.values["cohort"] = cohort
        if dry_run:
            out.notes.append(f"would ingest the lesion masks of {bids_dir} into cohort '{cohort}'")
            out.pending = out.pending or not lake.catalog.count(kind="lesion", cohort=cohort)
        else:
            from lakepipe.ingest.lesions import ingest_lesions

            res = ingest_lesions(
                lake, bids_dir, cohort=cohort, participants=values.get("participants"), run=run
            )
            out.notes.append(res.summary())
    if folder is not None and not dry_run:
        from lakepipe.ingest.inplace import connectome_for_folder

        before = lake.catalog.count(kind="connectome", connectome=out.values["connectome"])
        name = connectome_for_folder(lake, folder, run=run)
        n = lake.catalog.count(kind="connectome", connectome=name)
        verb = "reused" if n == before else "registered in place"
        out.notes.append(f"connectome '{name}' ({n} subjects of {folder}) {verb}")
    return out
