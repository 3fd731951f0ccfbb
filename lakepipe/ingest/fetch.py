"""Fetching the GSP1000 connectome from Harvard Dataverse straight into the lake, batch by batch.

:func:`fetch_gsp1000` lists the dataset's files through the Dataverse native API
(:class:`lakepipe.io.dataverse.DataverseClient`), downloads each tar archive (a batch of subjects) with
range requests, so an interrupted download resumes where it stopped, verifies the published checksum,
and streams the archive member by member (:func:`lakepipe.io.archives.iter_archive_images`): each
subject's run goes through the per-subject ingestion path of a 4D NIfTI folder (in-mask voxels, centred
and scaled to unit norm, one row of the connectome store). Each archive's subjects are committed and
registered as soon as the archive is done, so a fetch stopped halfway leaves a registered connectome of
the batches done, and a re-run continues: batches already ingested are neither downloaded nor read
again (the store records which archive, by file id and checksum, brought which subjects).

Downloads go to ``<lake>/downloads/<name>/`` (local lakes; else ``~/.cache/lakepipe/downloads/<name>``)
or ``download_dir``. Each archive is deleted once its subjects are registered, unless
``keep_downloads``: GSP1000 is about 140 GB of archives, and the lake holds the series already. A
partially downloaded archive (``.part``) is always kept for the next run to resume.

The API key is sent only as the ``X-Dataverse-key`` header and appears in no message, log, catalog row
or store attribute.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lakepipe.bids import check_entity
from lakepipe.errors import InputError
from lakepipe.ingest.connectome import _ingest_subject, subject_record
from lakepipe.ingest.result import IngestResult
from lakepipe.io import layout
from lakepipe.io.archives import (
    GSP1000_MASK_PATTERN,
    GSP1000_RUN_PATTERN,
    ArchiveError,
    ArchiveImage,
    iter_archive_images,
    member_matches,
)
from lakepipe.io.bidsfind import DEFAULT_SPACE
from lakepipe.io.dataverse import (
    DEFAULT_SERVER,
    GSP1000_DOI,
    SIDECAR_SUFFIX,
    DataverseClient,
    DataverseFile,
    DataverseNotJSONError,
    byte_progress,
    resolve_api_key,
)
from lakepipe.io.nifti import load_volume
from lakepipe.io.sources import ConnectomeSource, SubjectRef, VoxelGeometry, safe_subject_id
from lakepipe.io.storage import exists, is_local, join, public_url, remove
from lakepipe.io.stores.connectomes import ConnectomeWriter
from lakepipe.lake import Lake
from lakepipe.progress import progress
from lakepipe.runtime import RunContext
from lakepipe.space import Grid, grid_matches_space

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_NO_RUNS = "\0"  # a member pattern nothing matches: read an archive for its mask only


@dataclass
class FetchResult(IngestResult):
    """What a fetch did: subjects written/skipped, archives downloaded and skipped, bytes received."""

    archives_done: list[str] = field(default_factory=list)  #: ingested by this call
    archives_skipped: list[str] = field(default_factory=list)  #: already in the lake: not downloaded
    bytes_downloaded: int = 0
    download_dir: str = ""
    kept_downloads: bool = False

    def summary(self) -> str:
        where = f"; downloads kept in {self.download_dir}" if self.kept_downloads else ""
        return (
            f"connectome '{self.name}': {len(self.written)} new subject(s), {len(self.skipped)} already in "
            f"the lake; {len(self.archives_done)} archive(s) ingested, {len(self.archives_skipped)} "
            f"already done; {self.bytes_downloaded / 1e6:.1f} MB downloaded{where}"
        )


@dataclass
class _ArchiveRuns(ConnectomeSource):
    """The runs of the archives as they stream by: :meth:`read` gives the current run's in-mask
    voxels, as a 4D NIfTI folder's reader gives a subject file's."""

    variable_time: ClassVar[bool] = True  # a shorter run is stored zero-padded, its length recorded
    current: ArchiveImage | None = None

    def read(self, ref: SubjectRef) -> np.ndarray:
        item, geom = self.current, self.geometry
        assert item is not None and geom is not None
        data = item.data()
        if data.ndim != 4:
            raise ArchiveError(f"{item.name}: expected a 4D run, got shape {data.shape}", item.archive)
        return data[tuple(geom.ijk.T)].T  # (time, voxel)


def default_download_dir(lake: Lake, name: str) -> Path:
    """Where archives are downloaded by default: in the lake folder, or the user's cache."""
    if is_local(lake.url):
        return Path(join(lake.url, "downloads", name))
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lakepipe" / "downloads" / name


def _is_archive(f: DataverseFile) -> bool:
    return f.name.lower().endswith(ARCHIVE_SUFFIXES)


def _mask_geometry(data: np.ndarray, grid: Grid, where: str) -> VoxelGeometry:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"the brain mask must be a 3D volume, got shape {data.shape}", where)
    ijk = np.argwhere(data > 0).astype(np.int32)  # C order, as for a 4D NIfTI folder
    if ijk.size == 0:
        raise InputError("the brain mask is empty", where)
    return VoxelGeometry(grid, ijk)


def _image_grid(item: ArchiveImage) -> Grid:
    shape = tuple(int(s) for s in item.image.shape[:3])
    return Grid((shape[0], shape[1], shape[2]), np.asarray(item.image.affine, float))


def _member_mask(item: ArchiveImage) -> VoxelGeometry:
    return _mask_geometry(np.asarray(item.data()), _image_grid(item), f"{item.archive}:{item.name}")


def _fingerprint(f: DataverseFile, member: str) -> str:
    ident = f"{f.checksum_type}:{f.checksum}" if f.checksum else f"id{f.id}:{f.size}"
    return f"{ident}:{member}"


def fetch_gsp1000(
    lake: Lake,
    *,
    api_key: str | None = None,
    server: str = DEFAULT_SERVER,
    persistent_id: str = GSP1000_DOI,
    name: str = "gsp1000",
    test_mode: bool = False,
    subjects: int | None = None,
    download_dir: str | Path | None = None,
    keep_downloads: bool = False,
    skip_checksum: bool = False,
    space: str = DEFAULT_SPACE,
    client: DataverseClient | None = None,
    run: RunContext | None = None,
) -> FetchResult:
    """Fetch the GSP1000 connectome (or another Dataverse dataset of per-subject run archives) into
    connectome ``name``, archive by archive.

    Parameters
    ----------
    api_key
        Dataverse API token (default ``$DATAVERSE_API_KEY``); never printed or stored.
    server, persistent_id
        The Dataverse installation and the dataset's persistent identifier.
    test_mode
        Fetch the first archive only.
    subjects
        Stop once the connectome holds this many subjects (the first ones, in dataset order).
    download_dir, keep_downloads
        Where archives are downloaded (default :func:`default_download_dir`); whether they are kept
        after their subjects are registered (default: deleted).
    skip_checksum
        Do not verify the published checksums (a warning says so).
    client
        A client to use instead of one made from ``server`` and ``api_key`` (tests set its retries).

    Raises
    ------
    DataverseAuthError
        The key was refused (exit 2). Also the other :class:`~lakepipe.io.dataverse.DataverseError`
        types for failed requests and checksum mismatches (the bad file is deleted, not ingested).
    InputError
        The server answered HTML instead of JSON, an archive holds no run of the expected name, a
        batch's brain mask differs from the earlier batches', a run is not on the mask's grid.
    """
    name = check_entity(name, "connectome")
    if subjects is not None and subjects < 1:
        raise InputError(f"--subjects must be positive, got {subjects}")
    if skip_checksum:
        log.warning("--skip-checksum: downloads are not checked against the published checksums")
    own = client is None
    if client is None:
        if resolve_api_key(api_key) is None:
            raise InputError("a Dataverse API key is needed: --api-key KEY or $DATAVERSE_API_KEY")
        client = DataverseClient(server, api_key)
    try:
        return _Fetch(lake, client, persistent_id, name, space, skip_checksum).run(
            test_mode=test_mode,
            limit=subjects,
            download_dir=Path(download_dir) if download_dir else default_download_dir(lake, name),
            keep=keep_downloads,
            run=run,
        )
    finally:
        if own:
            client.close()


class _Fetch:
    """One fetch: the listing, the store (created once the mask and time axis are known), the state."""

    def __init__(
        self, lake: Lake, client: DataverseClient, pid: str, name: str, space: str, skip_checksum: bool
    ):
        self.lake, self.client, self.pid, self.name, self.space = lake, client, pid, name, space
        self.skip_checksum = skip_checksum
        self.url = layout.connectome_store(lake.url, name)
        self.store_uri = layout.relative(lake.url, self.url)
        self.options = {"source": "dataverse", "persistent_id": pid, "runs": GSP1000_RUN_PATTERN}
        self.writer: ConnectomeWriter | None = None
        self.src = _ArchiveRuns(root=Path("."), kind="voxel", space=space)
        self.fresh = not exists(join(self.url, "zarr.json"))
        self.state: dict[str, Any] = {}
        if not self.fresh:
            self._open_existing()

    # ------------------------------------------------------------------ store
    def _open_existing(self) -> None:
        from lakepipe.io.storage import open_group, read_array
        from lakepipe.io.stores.grids import grid_from_attrs

        g = open_group(self.url)
        a: dict[str, Any] = dict(g.attrs)
        if a.get("options") != self.options or a.get("kind") != "voxel":
            raise InputError(
                f"connectome '{self.name}' exists and was not fetched from {self.pid}: use another --name"
            )
        geom = VoxelGeometry(grid_from_attrs(a["grid"]), read_array(g, "ijk"))
        self._make_writer(geom, int(a["n_time"]))
        self.state = dict(a.get("fetch") or {})

    def _make_writer(self, geom: VoxelGeometry, n_time: int) -> None:
        if not grid_matches_space(geom.grid, self.space):
            raise InputError(f"the brain mask's grid {geom.grid.shape} does not match space {self.space}")
        self.src.geometry, self.src.n_time = geom, n_time
        self.writer = ConnectomeWriter(
            self.lake.url,
            self.name,
            kind="voxel",
            n_time=n_time,
            geometry=geom,
            space=self.space,
            source=f"{public_url(self.client.server_url)} {self.pid}",
            options=self.options,
        )
        self.src.n_time = self.writer.n_time

    def _committed(self) -> list[str]:
        return self.writer.subject_ids() if self.writer is not None else []

    def _save_state(self) -> None:
        assert self.writer is not None
        self.state["server"] = public_url(self.client.server_url)
        self.state["persistent_id"] = self.pid
        self.writer.group.attrs["fetch"] = self.state

    def _records(self, fps: dict[str, str]) -> list[Any]:
        return [
            subject_record(self.name, s, fp, self.store_uri, self.src, self.options) for s, fp in fps.items()
        ]

    # ------------------------------------------------------------------ listing
    def _listing(self) -> tuple[list[DataverseFile], DataverseFile | None]:
        try:
            files = self.client.list_files(self.pid)
        except DataverseNotJSONError as exc:  # a wrong server URL: the user's to fix (exit 2)
            raise InputError(str(exc)) from None
        archives = sorted((f for f in files if _is_archive(f)), key=lambda f: f.path)
        masks = sorted(
            (f for f in files if member_matches(f.name, GSP1000_MASK_PATTERN)), key=lambda f: f.path
        )
        if not archives:
            raise InputError(f"dataset {self.pid} lists no tar archives of runs", self.client.server_url)
        return archives, masks[0] if masks else None

    # ------------------------------------------------------------------ the work
    def run(
        self, *, test_mode: bool, limit: int | None, download_dir: Path, keep: bool, run: RunContext | None
    ) -> FetchResult:
        archives, mask_file = self._listing()
        if test_mode:
            archives = archives[:1]
        result = FetchResult("connectome", self.name, store=self.url, download_dir=str(download_dir))
        result.kept_downloads = keep
        done = self.state.get("archives", {})
        with self.lake.joined_run(run, f"lakepipe fetch {self.pid}", {"name": self.name}) as ctx:
            self.ctx = ctx
            registered = set(self.lake.catalog.query(kind="connectome", connectome=self.name)["store_index"])
            committed = set(self._committed())
            known = {s: fp for a in done.values() for s, fp in a.get("subjects", {}).items()}
            orphans = {s: fp for s, fp in known.items() if s in committed and s not in registered}
            if orphans:  # committed, not registered (stopped between the two)
                ctx.publish(self._records(orphans))
            try:
                self._fetch_all(archives, mask_file, limit, download_dir, keep, registered, result)
            except BaseException:
                if self.writer is not None:
                    self.writer.rollback()  # rows of the archive being read are dropped
                if self.fresh and not result.written and exists(join(self.url, "zarr.json")):
                    remove(self.url)
                raise
            ctx.count_skipped(len(result.skipped))
        if not keep:
            _remove_empty(download_dir)
        log.info(result.summary())
        return result

    def _fetch_all(
        self,
        archives: list[DataverseFile],
        mask_file: DataverseFile | None,
        limit: int | None,
        download_dir: Path,
        keep: bool,
        registered: set[str],
        result: FetchResult,
    ) -> None:
        done: dict[str, Any] = self.state.setdefault("archives", {})
        have = len(self._committed())
        for f in progress(archives, desc=f"fetch {self.name}"):
            if limit is not None and have >= limit:
                break
            entry = done.get(f.path)
            if entry and entry.get("complete") and entry.get("file_id") == f.id:
                result.archives_skipped.append(f.path)
                result.skipped.extend(entry.get("subjects", {}))
                continue
            if self.src.geometry is None and mask_file is not None:
                self._mask_from_file(mask_file, download_dir, keep, result)
            dest = download_dir / f.path
            with byte_progress(f"download {f.name}") as bar:
                dl = self.client.download(f, dest, skip_checksum=self.skip_checksum, progress=bar)
            result.bytes_downloaded += dl.bytes_downloaded
            complete = self._ingest_archive(f, dest, limit, registered, result)
            result.archives_done.append(f.path)
            have = len(self._committed())
            if complete and not keep:
                for p in (dest, dest.with_name(dest.name + SIDECAR_SUFFIX)):
                    p.unlink(missing_ok=True)

    def _mask_from_file(self, f: DataverseFile, download_dir: Path, keep: bool, result: FetchResult) -> None:
        dest = download_dir / f.path
        dl = self.client.download(f, dest, skip_checksum=self.skip_checksum)
        result.bytes_downloaded += dl.bytes_downloaded
        data, grid = load_volume(dest, "a brain mask")
        self.src.geometry = _mask_geometry(data, grid, str(dest))
        if not keep:
            for p in (dest, dest.with_name(dest.name + SIDECAR_SUFFIX)):
                p.unlink(missing_ok=True)

    def _check_mask(self, geom: VoxelGeometry, item: ArchiveImage) -> None:
        if self.src.geometry is None:
            self.src.geometry = geom
        elif not geom.same_as(self.src.geometry):
            raise ArchiveError(
                f"{item.name}: this batch's brain mask differs from the earlier batches' mask "
                f"({geom.n_voxels} voxels on {geom.grid.shape}, the connectome has "
                f"{self.src.geometry.n_voxels} on {self.src.geometry.grid.shape}); none of it was ingested",
                item.archive,
            )

    def _ingest_archive(
        self, f: DataverseFile, path: Path, limit: int | None, registered: set[str], result: FetchResult
    ) -> bool:
        """Stream one archive into the store; commit and register its subjects. Returns whether every
        run of the archive is in the lake (False when ``limit`` stopped it)."""
        committed = set(self._committed())
        ids: list[str] = []
        n_valid: list[int] = []
        fps: dict[str, str] = {}
        republish: dict[str, str] = {}
        complete = True
        for item in iter_archive_images(path):
            if item.kind == "mask":
                self._check_mask(_member_mask(item), item)
                continue
            assert item.subject is not None
            sid = safe_subject_id(item.subject)
            fp = _fingerprint(f, item.name)
            if sid in committed:
                fps[sid] = fp
                if sid not in registered:
                    republish[sid] = fp
                continue
            if limit is not None and len(committed) + len(ids) >= limit:
                complete = False
                break
            if self.src.geometry is None:  # the mask comes later in this archive: read it first
                for m in iter_archive_images(path, run_pattern=_NO_RUNS, require_runs=False):
                    self._check_mask(_member_mask(m), m)
                    break
                if self.src.geometry is None:
                    raise ArchiveError("no brain mask (*brain_mask*.nii.gz) before the first run", path)
            if not _image_grid(item).same_as(self.src.geometry.grid):
                raise ArchiveError(f"{item.name}: run grid differs from the brain mask's grid", path)
            if self.writer is None:
                shape = item.image.shape
                self._make_writer(self.src.geometry, int(shape[3]) if len(shape) == 4 else 0)
            assert self.writer is not None
            rows = self.writer.reserve(len(ids) + 1)
            self.src.current = item
            ref = SubjectRef(sid, path, None, fp)
            _, n = _ingest_subject(self.src, ref, self.writer.rows(), rows[-1])
            self.src.current = None
            del item
            ids.append(sid)
            n_valid.append(n)
            fps[sid] = fp
        if ids:
            assert self.writer is not None
            self.writer.commit(ids, n_valid)
        if self.writer is not None:
            self.state["archives"][f.path] = {
                "file_id": f.id,
                "checksum": f.checksum,
                "checksum_type": f.checksum_type,
                "subjects": fps,
                "complete": complete,
            }
            self._save_state()
        new = {s: fps[s] for s in ids}
        if new or republish:
            self.ctx.publish(self._records({**republish, **new}))
        result.written.extend(ids)
        result.skipped.extend(s for s in fps if s not in new)
        log.info("fetch %s: %s: %d subject(s) ingested", self.name, f.path, len(ids))
        return complete


def _remove_empty(folder: Path) -> None:
    """Remove ``folder`` and its subfolders if no file (a ``.part`` to resume, say) is left in them."""
    if not folder.is_dir():
        return
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


__all__ = ["FetchResult", "default_download_dir", "fetch_gsp1000"]
