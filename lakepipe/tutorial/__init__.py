"""Deterministic, realistic example inputs for lakepipe, generated locally (nothing is downloaded).

:func:`write_tutorial` writes, under one folder:

- ``bids/``: a BIDS lesion dataset (binary acute-infarct masks in MNI152NLin6Asym at 1 mm and 2 mm,
  some participants with two sessions, one or two with a second label, ``participants.tsv``);
- ``connectome/``: a normative connectome in the GSP1000 HDF5 batch layout (``batch-001.h5``, ...);
- ``atlas/``: the Seitzman et al. (2018) 300-ROI atlas (the coordinates nilearn ships) as 5 mm spheres
  on the 2 mm MNI grid, with a label table;
- ``parcel_timeseries/`` (optional): the same subjects' parcel-mean series under that atlas
  (parcels x time, as in the HCP parcellated release);
- ``nifti_connectome/`` (optional): a few of the same subjects as 4D NIfTI plus the brain mask;
- ``lnm/`` (by default): a lesion network mapping question with a known answer: spatial-neglect cases
  whose lesions sit on the dorsal attention network, stroke controls, and the ground truth;
- ``fmriprep/`` (optional): fMRIPrep-style resting-state derivatives that need cleaning, with confounds;
- ``hcp/`` (optional): a synthetic HCP parcellated release (Neuromatch Academy layout) with rest runs
  and MOTOR runs carrying a planted, lateralised hand response;
- ``README.md`` and the manifest ``tutorial.json``.

All of it comes from one latent network model (:func:`build_latent_model`): a handful of smooth,
bilateral network maps on the 2 mm brain mask, AR(1) network time courses with a fixed between-network
covariance, subject-specific loadings and noise. Seed-to-voxel maps computed from the connectome
therefore show networks, and lesions placed on those networks give meaningful lesion network maps.

Everything is a deterministic function of ``seed`` (:class:`numpy.random.Generator` streams keyed by
``(seed, component, index)``): subject ``k`` has the same series whatever the number of subjects or
the batch size, so a larger tutorial is a superset of a smaller one. Voxel series are generated and
written one subject at a time, so memory stays bounded by a few copies of one subject's (time x voxel)
array whatever the connectome size.

Modules: :mod:`~lakepipe.tutorial.model` (the latent network model), :mod:`~.lesions` (the ``bids/``
cohort) drawn with :mod:`~.blobs` (lesion shapes), :mod:`~.connectome` (HDF5, parcel and NIfTI writers),
:mod:`~.atlas` (Seitzman atlas), :mod:`~.cohorts` (the LNM cases and controls), :mod:`~.fmriprep`,
:mod:`~.hcp`, :mod:`~.readme` and :mod:`~.writer` (orchestration, manifest, up-to-date check).
"""

from lakepipe.tutorial.atlas import ATLAS_NAME, ATLAS_RADIUS_MM, seitzman_table, sphere_labels
from lakepipe.tutorial.cohorts import SYMPTOM, TARGET_NETWORK
from lakepipe.tutorial.common import MAIN_LABEL, REPETITION_TIME, SECOND_LABEL, SPACE
from lakepipe.tutorial.connectome import N_NIFTI_SUBJECTS, write_hdf5_batch
from lakepipe.tutorial.lesions import CORTICAL_SITES, SUBCORTICAL_SITES
from lakepipe.tutorial.model import (
    NETWORK_CORRELATIONS,
    NETWORKS,
    LatentModel,
    Network,
    build_latent_model,
    subject_timeseries,
)
from lakepipe.tutorial.writer import LAYOUT_VERSION, TutorialPaths, tutorial_is_current, write_tutorial

__all__ = [
    "ATLAS_NAME",
    "ATLAS_RADIUS_MM",
    "CORTICAL_SITES",
    "LAYOUT_VERSION",
    "MAIN_LABEL",
    "NETWORKS",
    "NETWORK_CORRELATIONS",
    "N_NIFTI_SUBJECTS",
    "REPETITION_TIME",
    "SECOND_LABEL",
    "SPACE",
    "SUBCORTICAL_SITES",
    "SYMPTOM",
    "TARGET_NETWORK",
    "LatentModel",
    "Network",
    "TutorialPaths",
    "build_latent_model",
    "seitzman_table",
    "sphere_labels",
    "subject_timeseries",
    "write_hdf5_batch",
    "tutorial_is_current",
    "write_tutorial",
]
