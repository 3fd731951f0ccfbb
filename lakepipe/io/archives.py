"""NIfTI images read straight out of (gzipped) tar archives, one member at a time.

The GSP1000 connectome is published as tar archives of per-subject runs
(``sub-0001/func/sub-0001_bld001_rest_skip4_stc_mc_bp_0.0001_0.08_resid_FS1mm_MNI1mm_MNI2mm_sm7_finalmask.nii.gz``)
and a brain mask. :func:`iter_archive_images` reads such an archive in stream mode
(``tarfile.open(mode="r|*")``: plain, gzip, bzip2 or xz tar, read front to back once), never writes
a member to disk, and yields one image at a time: the member's bytes are gunzipped into memory and
opened with nibabel (``from_stream``, the seekable form of ``Nifti1Image.from_bytes``).

Memory: at most one decompressed member (a GSP1000 run is 91 x 109 x 91 x T float32, ~0.4 GB for
T = 120) plus one compressed read block. :meth:`ArchiveImage.data` gives the voxel array as a view
of those bytes; ``np.asanyarray(img.dataobj)`` (or ``get_fdata``, in float64) makes another copy.
Drop each yielded item before asking for the next one.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, BinaryIO, cast

import nibabel as nib
import numpy as np

from lakepipe.errors import InputError

if TYPE_CHECKING:
    from nibabel.arrayproxy import ArrayProxy

log = logging.getLogger(__name__)

#: one resting-state run per subject, as the GSP1000 archives name them
GSP1000_RUN_PATTERN = "sub-*/func/*bld001_rest_*_finalmask.nii.gz"
#: the brain mask shipped with the runs (FSL's ``MNI152_T1_2mm_brain_mask.nii.gz``)
GSP1000_MASK_PATTERN = "*brain_mask*.nii.gz"

_BLOCK = 1 << 20  # compressed bytes read at a time
_SUBJECT_DIR = re.compile(r"sub-([A-Za-z0-9]+)")
_SUBJECT_FILE = re.compile(r"sub-([A-Za-z0-9]+)_")


class ArchiveError(InputError):
    """An archive that cannot be read, or that lacks what it should hold (names the archive)."""


@dataclass
class ArchiveImage:
    """One NIfTI member of an archive, opened in memory."""

    archive: str  #: the archive it came from
    name: str  #: member path inside the archive (no leading ``./``)
    kind: str  #: ``"run"`` or ``"mask"``
    subject: str | None  #: subject label of a run (``"0001"`` for ``sub-0001``); ``None`` for a mask
    image: nib.Nifti1Image  #: (``Nifti2Image`` for a NIfTI-2 member)
    nbytes: int  #: decompressed size of the member
    _buffer: io.BytesIO | None = field(default=None, repr=False)

    def data(self) -> np.ndarray:
        """The voxel array in its stored dtype, scaled by ``scl_slope``/``scl_inter`` when set.

        Without scaling (the GSP1000 runs are plain float32) the array is a read-only view of the
        member's bytes: no second copy of the run.
        """
        # its offset/dtype/scaling are the file's (img.header's offset is 0); images of members are
        # read from a stream, so their data object is an ArrayProxy (nibabel types it ArrayLike)
        proxy = cast("ArrayProxy", self.image.dataobj)
        plain = float(proxy.slope) == 1.0 and float(proxy.inter) == 0.0
        if self._buffer is None or not plain or proxy.order != "F":
            return np.asanyarray(proxy)
        view = self._buffer.getbuffer()
        arr = np.ndarray(proxy.shape, dtype=proxy.dtype, buffer=view, offset=int(proxy.offset), order="F")
        arr.flags.writeable = False
        return arr


def member_matches(name: str, pattern: str) -> bool:
    """Whether member path ``name`` ends with path segments matching ``pattern`` segment by segment.

    ``*`` does not cross ``/``; any leading folders are allowed, so
    ``GSP1000/sub-0001/func/x_bld001_rest_y_finalmask.nii.gz`` matches the run pattern.
    """
    parts = PurePosixPath(name).parts
    pats = PurePosixPath(pattern).parts
    if len(parts) < len(pats):
        return False
    return all(fnmatchcase(p, q) for p, q in zip(parts[len(parts) - len(pats) :], pats, strict=True))


def subject_of(name: str) -> str | None:
    """Subject label of a member: its ``sub-<label>`` folder, checked against its file name's
    ``sub-<label>_`` entity when both are there; ``None`` when neither is."""
    parts = PurePosixPath(name).parts
    folder = next((m[1] for p in reversed(parts[:-1]) if (m := _SUBJECT_DIR.fullmatch(p))), None)
    entity = m[1] if (m := _SUBJECT_FILE.match(parts[-1])) else None
    if folder and entity and folder != entity:
        raise ValueError(f"folder says sub-{folder}, file name says sub-{entity}")
    return folder or entity


def iter_archive_images(
    archive: str | os.PathLike | BinaryIO,
    *,
    run_pattern: str = GSP1000_RUN_PATTERN,
    mask_pattern: str | None = GSP1000_MASK_PATTERN,
    require_runs: bool = True,
) -> Iterator[ArchiveImage]:
    """Yield the runs (and masks) of a tar archive one at a time, in archive order.

    Parameters
    ----------
    archive
        Path of a ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or ``.tar.xz`` file, or a readable binary
        stream of one (read once, front to back: an HTTP response body works).
    run_pattern
        Members yielded as ``kind="run"`` (see :func:`member_matches`); each must name its subject.
    mask_pattern
        Members yielded as ``kind="mask"``; ``None`` for none.
    require_runs
        Raise when the archive holds no member matching ``run_pattern``.

    Raises
    ------
    ArchiveError
        Unreadable or truncated archive or member, a run without a subject, a subject twice, no runs.
    """
    label = _label(archive)
    seen: dict[str, str] = {}
    n_runs = 0
    for name, kind, subject, fileobj in _members(archive, label, run_pattern, mask_pattern):
        if kind == "run" and subject is not None:
            if subject in seen:
                raise ArchiveError(f"subject {subject} has two runs: {seen[subject]} and {name}", label)
            seen[subject] = name
            n_runs += 1
        image, nbytes, buf = _read_nifti(fileobj, f"{label}:{name}")
        log.debug("%s: %s (%d bytes)", label, name, nbytes)
        yield ArchiveImage(label, name, kind, subject, image, nbytes, buf)
        del image, buf  # hold at most one member
    if require_runs and n_runs == 0:
        raise ArchiveError(f"no run matching {run_pattern!r} in the archive", label)


def _members(
    archive: str | os.PathLike | BinaryIO, label: str, run_pattern: str, mask_pattern: str | None
) -> Iterator[tuple[str, str, str | None, IO[bytes]]]:
    """(name, kind, subject, open member) of the matching regular members, read in stream mode."""
    source = {"name": os.fspath(archive)} if isinstance(archive, str | os.PathLike) else {"fileobj": archive}
    try:
        # opened outside ``with`` so that its errors become ArchiveError; closed by the ``with`` below
        tar = tarfile.open(mode="r|*", **source)  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"not a readable tar archive ({_why(exc)})", label) from None
    with tar:
        members = iter(tar)
        while True:
            try:
                member = next(members, None)
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise ArchiveError(f"archive is damaged or truncated ({_why(exc)})", label) from None
            if member is None:
                return
            name = member.name.removeprefix("./")
            if not member.isfile():
                continue
            if member_matches(name, run_pattern):
                kind = "run"
                try:
                    subject = subject_of(name)
                except ValueError as exc:
                    raise ArchiveError(f"{name}: {exc}", label) from None
                if subject is None:
                    raise ArchiveError(f"{name}: run without a sub-<label> folder or file name", label)
            elif mask_pattern is not None and member_matches(name, mask_pattern):
                kind, subject = "mask", ""
            else:
                continue
            fileobj = tar.extractfile(member)
            if fileobj is None:  # pragma: no cover - regular files always have data
                continue
            yield name, kind, subject or None, fileobj


def _read_nifti(fileobj: IO[bytes], label: str) -> tuple[nib.Nifti1Image, int, io.BytesIO]:
    """Gunzip (when gzipped) a member into memory and open it as a NIfTI-1/2 image."""
    buf = io.BytesIO()
    try:
        block = fileobj.read(_BLOCK)
        if block[:2] == b"\x1f\x8b":
            _gunzip_into(fileobj, block, buf)
        else:
            while block:
                buf.write(block)
                block = fileobj.read(_BLOCK)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"cannot read the member ({_why(exc)})", label) from None
    nbytes = buf.tell()
    buf.truncate(nbytes)  # drop what _reserve set aside but the member did not fill
    buf.seek(0)
    with buf.getbuffer() as view:  # released at once: a live export would pin the buffer's size
        head = bytes(view[:4])
    klass = nib.Nifti2Image if _sizeof_hdr(head) == 540 else nib.Nifti1Image
    try:
        image = klass.from_stream(buf)
        # the loaded header's vox_offset reads 0; the proxy (an ArrayProxy: the image is read from a
        # stream) keeps the file's
        proxy = cast("ArrayProxy", image.dataobj)
        need = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
    except Exception as exc:  # nibabel raises several types for a bad header; all mean "not NIfTI"
        raise ArchiveError(f"not a NIfTI image ({_why(exc)})", label) from None
    if nbytes < need:
        raise ArchiveError(f"NIfTI member truncated: {nbytes} bytes, its header needs {need}", label)
    return image, nbytes, buf


def _gunzip_into(fileobj: IO[bytes], block: bytes, buf: io.BytesIO) -> None:
    """Stream-decompress gzip data (possibly several concatenated gzip members) into ``buf``.

    zlib checks each member's CRC-32 and length. Once the NIfTI header has come out, ``buf`` is grown
    to the image's full size in one step, so a large run is not copied as the buffer grows.
    """
    dec = zlib.decompressobj(wbits=31)
    pending = block
    sized = False
    while True:
        if not pending:
            pending = fileobj.read(_BLOCK)
            if not pending:
                break
        if dec.eof:  # another gzip member follows (``cat a.gz b.gz``)
            dec = zlib.decompressobj(wbits=31)
        buf.write(dec.decompress(pending, _BLOCK * 16))  # bounded output: zeros compress ~1000:1
        pending = dec.unused_data if dec.eof else dec.unconsumed_tail
        if not sized and buf.tell() >= 540:
            sized = True
            _reserve(buf)
    if not dec.eof:
        raise EOFError("gzip data end early")


def _reserve(buf: io.BytesIO) -> None:
    """Grow ``buf`` to the size its NIfTI header announces (zero-filled), keeping the position."""
    with buf.getbuffer() as view:
        head = bytes(view[:540])
    try:
        klass = nib.Nifti2Header if _sizeof_hdr(head[:4]) == 540 else nib.Nifti1Header
        if len(head) < klass.template_dtype.itemsize:
            return
        hdr = klass.from_fileobj(io.BytesIO(head), check=False)
        total = (
            int(hdr.get_data_offset()) + int(np.prod(hdr.get_data_shape())) * hdr.get_data_dtype().itemsize
        )
    except Exception:  # only an optimisation: a bad header is reported when the image is opened
        return
    pos = buf.tell()
    if total > pos:
        buf.seek(total - 1)
        buf.write(b"\0")
        buf.seek(pos)


def _image_nbytes(hdr: nib.Nifti1Header) -> int:
    """Bytes a single-file NIfTI needs: header, extensions and data (``vox_offset`` + voxels)."""
    return int(hdr.get_data_offset()) + int(np.prod(hdr.get_data_shape())) * hdr.get_data_dtype().itemsize


def _sizeof_hdr(head: bytes) -> int:
    if len(head) < 4:
        return 0
    little, big = int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")
    return little if little in (348, 540) else big


def _label(archive: str | os.PathLike | BinaryIO) -> str:
    if isinstance(archive, str | os.PathLike):
        return str(Path(archive))
    return str(getattr(archive, "name", "<stream>"))


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
