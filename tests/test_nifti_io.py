"""The NIfTI files lakepipe writes: standard gzip, the data and grid as given, the same bytes twice."""

import gzip

import nibabel as nib
import numpy as np

from lakepipe.io.nifti import write_nifti


def test_written_maps_round_trip_and_are_reproducible(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((9, 11, 7, 2)).astype(np.float32)
    affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    a = write_nifti(data, affine, tmp_path / "1" / "map.nii.gz", space="MNI152NLin6Asym")
    b = write_nifti(data, affine, tmp_path / "2" / "map.nii.gz", space="MNI152NLin6Asym")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[4:8] == bytes(4)  # no time stamp in the gzip header (RFC 1952 MTIME)
    raw = gzip.decompress(a.read_bytes())  # any gzip reader: the standard library's
    img = nib.Nifti1Image.from_bytes(raw)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    np.testing.assert_array_equal(img.affine, affine)
    assert int(img.header["sform_code"]) == int(img.header["qform_code"]) == 4  # MNI
    plain = write_nifti(data[..., 0], affine, tmp_path / "c.nii")
    np.testing.assert_array_equal(nib.load(plain).get_fdata(dtype=np.float32), data[..., 0])
    assert int(nib.load(plain).header["sform_code"]) == 2  # no space: aligned to another file
