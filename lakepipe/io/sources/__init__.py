"""Connectome source formats behind one interface (:class:`ConnectomeSource`, :func:`open_source`).

One module per format, each registering its reader: ``hdf5`` (GSP1000-style batches), ``fmriprep``
(fMRIPrep derivatives, cleaned with nilearn), ``nifti`` (4D NIfTI per subject plus a brain mask),
``parcels`` (parcel series plus a region table), ``hcp`` (an HCP parcellated release in
Neuromatch Academy's layout: runs per task and their EVs; detected before ``parcels``).
"""

from lakepipe.io.sources import fmriprep, hcp, hdf5, nifti_folder, parcels  # noqa: F401  (register the formats, in detection order)
from lakepipe.io.sources.base import (
    SOURCE_FORMATS,
    ConnectomeSource,
    SubjectRef,
    VoxelGeometry,
    file_fingerprint,
    open_source,
    register_source,
    safe_subject_id,
)

__all__ = [
    "SOURCE_FORMATS",
    "ConnectomeSource",
    "SubjectRef",
    "VoxelGeometry",
    "file_fingerprint",
    "open_source",
    "register_source",
    "safe_subject_id",
]
