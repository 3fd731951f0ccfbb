"""Finding lesion masks in a BIDS dataset: a local folder, or any fsspec URL (``s3://...``).

``sub-<p>/[ses-<s>/]anat/sub-<p>[_ses-<s>]_space-<space>[_res-<r>]_label-<l>_{mask,roi}.nii[.gz]``;
every entity is validated before it reaches a path, a store key or a query.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lakepipe.bids import check_entity, parse_entities
from lakepipe.errors import InputError

MASK_SUFFIXES = ("mask", "roi")
DEFAULT_SPACE = "MNI152NLin6Asym"


@dataclass(frozen=True)
class LesionFile:
    """One mask file of a BIDS dataset and its entities."""

    path: Path | str  #: local path, or URL of a remote dataset's file
    participant: str
    session: str | None
    label: str
    space: str | None
    relpath: str = ""  #: path inside the dataset

    @property
    def key(self) -> str:
        """The lake's key of the entry: ``sub-<p>[_ses-<s>]_label-<l>``."""
        ses = f"_ses-{self.session}" if self.session else ""
        return f"sub-{self.participant}{ses}_label-{self.label}"


def _lesion_file(
    rel: str, where: Path | str, wanted: set[str] | None, default_space: str | None
) -> LesionFile | None:
    parts = rel.split("/")
    name = parts[-1]
    if len(parts) < 2 or not parts[0].startswith("sub-") or not re.search(r"\.nii(\.gz)?$", name):
        return None
    ent = parse_entities(name)
    if ent.get("suffix") not in MASK_SUFFIXES:
        return None
    participant = check_entity(parts[0], "sub", str(where))
    if ent.get("sub") != participant:
        raise InputError(f"file name says sub-{ent.get('sub')} but it is in {parts[0]}/", where)
    if wanted is not None and participant not in wanted:
        return None
    session = check_entity(ent["ses"], "ses", str(where)) if "ses" in ent else None
    label = check_entity(ent.get("label", "lesion"), "label", str(where))
    return LesionFile(where, participant, session, label, ent.get("space", default_space), rel)


def find_lesion_files(
    source: str | Path, participants: Sequence[str] | None = None, default_space: str | None = DEFAULT_SPACE
) -> list[LesionFile]:
    """Mask files of a BIDS dataset (a folder or a URL), entities validated, one per entry key.

    Raises
    ------
    InputError
        No dataset there, no masks, two masks for one entry, a participant asked for without masks.
    """
    wanted = {check_entity(p, "sub") for p in participants} if participants else None
    found: dict[str, LesionFile] = {}
    for rel, where in _listing(source):
        lf = _lesion_file(rel, where, wanted, default_space)
        if lf is None:
            continue
        if lf.key in found:
            raise InputError(
                f"two masks for {lf.key} ({Path(found[lf.key].relpath).name} and {Path(rel).name}): ingest "
                "different resolutions or spaces into separate cohorts",
                where,
            )
        found[lf.key] = lf
    if wanted:
        missing = wanted - {f.participant for f in found.values()}
        if missing:
            raise InputError(f"no lesion masks for participant(s) {sorted(missing)}", source)
    if not found:
        raise InputError("no lesion masks found (expected sub-*/[ses-*/]anat/*_mask.nii.gz)", source)
    return list(found.values())


def _listing(source: str | Path) -> list[tuple[str, Path | str]]:
    """(path inside the dataset, local path or URL) of every file below ``source``, sorted."""
    if "://" not in str(source):
        root = Path(source)
        if not root.is_dir():
            raise InputError("BIDS dataset folder not found", root)
        return [(p.relative_to(root).as_posix(), p) for p in sorted(root.glob("sub-*/**/*.nii*"))]
    from lakepipe.io.storage import filesystem

    url = str(source).rstrip("/")
    fs, path = filesystem(url)
    path = path.rstrip("/")
    try:
        files = fs.find(path)
    except (FileNotFoundError, PermissionError) as exc:
        raise InputError(f"cannot list the BIDS dataset: {exc}", url) from None
    out: list[tuple[str, Path | str]] = []
    for f in sorted(files):
        rel = f[len(path) :].lstrip("/")
        out.append((rel, f"{url}/{rel}"))
    return out


def fetch_dataset(source: str, files: Sequence[LesionFile], dest: Path) -> Path:
    """Download the given masks of a remote dataset (plus its ``participants.tsv`` and
    ``dataset_description.json``) into ``dest``, keeping the layout; returns ``dest``."""
    from lakepipe.io.storage import filesystem
    from lakepipe.progress import progress

    fs, root = filesystem(source.rstrip("/"))
    root = root.rstrip("/")
    for extra in ("dataset_description.json", "participants.tsv"):
        if fs.exists(f"{root}/{extra}"):
            fs.get(f"{root}/{extra}", str(dest / extra))
    for lf in progress(list(files), desc="download masks"):
        target = dest / lf.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get(f"{root}/{lf.relpath}", str(target))
    return dest
