"""Direct ``preadv`` reads of local uncompressed Zarr chunks give exactly what zarr reads, and are
used only where they can (every other array keeps zarr's reads)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from lakepipe.io.storage import StoreRef
from lakepipe.io.stores import direct
from lakepipe.io.stores.direct import DirectChunks, direct_chunks
from lakepipe.io.stores.rows import open_rows


def _array(path, shape, chunks, **kw):
    kw.setdefault("compressors", None)
    return zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=kw.pop("dtype", "float32"), **kw)


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((3, 7, 50), (1, 7, 16)),  # edge chunk on the feature axis (stored padded)
        ((4, 10, 33), (2, 4, 11)),  # several rows and time blocks per chunk, edge time chunk
        ((2, 5, 8), (1, 5, 8)),  # one chunk per row
        ((2, 700, 6), (1, 700, 5)),  # more vectors than one preadv call takes
    ],
)
def test_reads_equal_zarr(tmp_path, shape, chunks):
    arr = _array(tmp_path / "a.zarr", shape, chunks)
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    arr[...] = data
    reader = direct_chunks(arr)
    assert isinstance(reader, DirectChunks)
    out = np.full(shape[1:], 7.0, np.float32)
    for row in range(shape[0]):
        assert reader.read_into(row, out) is out
        np.testing.assert_array_equal(out, data[row])
        np.testing.assert_array_equal(out, arr[row])
    if shape[1] == 700:  # the case's point: its edge chunks' 1,400 vectors need several preadv calls
        assert 2 * shape[1] > direct._IOV_MAX >= 16


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((3, 7, 50), (1, 7, 16)),  # edge chunk on the feature axis (stored padded)
        ((4, 10, 33), (2, 4, 11)),  # several rows and time blocks per chunk, edge time chunk
        ((2, 5, 8), (1, 5, 8)),  # one chunk per row
    ],
)
def test_block_reads_equal_zarr(tmp_path, shape, chunks):
    arr = _array(tmp_path / "a.zarr", shape, chunks, fill_value=-3.0)
    data = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    arr[...] = data
    arr[shape[0] - 1, :, : chunks[2]] = -3.0  # a chunk zarr need not write: read as the fill value
    reader = direct_chunks(arr)
    out = np.full((shape[1], chunks[2]), 7.0, np.float32)
    for row in range(shape[0]):
        for start in range(0, shape[2], chunks[2]):
            block = reader.read_block(row, start, out)
            assert block.base is out or block is out
            np.testing.assert_array_equal(block, arr[row, :, start : start + chunks[2]])
    with pytest.raises(ValueError, match="not a chunk boundary"):
        reader.read_block(0, 1, out)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        reader.read_block(0, 0, np.zeros((shape[1], chunks[2] + 1), np.float32))


def test_unwritten_chunks_read_as_the_fill_value(tmp_path):
    arr = _array(tmp_path / "a.zarr", (2, 4, 10), (1, 4, 5), fill_value=-3.0)
    arr[0, :, :5] = 1.0
    out = np.zeros((4, 10), np.float32)
    direct_chunks(arr).read_into(0, out)
    np.testing.assert_array_equal(out, arr[0])
    assert (out[:, 5:] == -3.0).all() and (out[:, :5] == 1.0).all()


def test_bad_out_and_truncated_chunk(tmp_path):
    arr = _array(tmp_path / "a.zarr", (2, 4, 10), (1, 4, 10))
    arr[...] = 1.0
    reader = direct_chunks(arr)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        reader.read_into(0, np.zeros((4, 9), np.float32))
    with pytest.raises(IndexError):
        reader.read_into(2, np.zeros((4, 10), np.float32))
    chunk = tmp_path / "a.zarr" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:50])
    with pytest.raises(OSError, match="chunk file is 50 bytes"):
        reader.read_into(1, np.zeros((4, 10), np.float32))


def test_only_where_exact(tmp_path):
    shape, chunks = (2, 4, 10), (1, 4, 5)
    compressed = _array(tmp_path / "z.zarr", shape, chunks, compressors=zarr.codecs.ZstdCodec())
    big_endian = _array(tmp_path / "b.zarr", shape, chunks, serializer=zarr.codecs.BytesCodec(endian="big"))
    sharded = _array(tmp_path / "s.zarr", shape, chunks, shards=(2, 4, 10))
    memory = zarr.create_array("memory://m", shape=shape, chunks=chunks, dtype="float32", compressors=None)
    flat = _array(tmp_path / "f.zarr", (40,), (8,))
    for arr in (compressed, big_endian, sharded, memory, flat):
        assert direct_chunks(arr) is None


def _connectome_rows(tmp_path, data: np.ndarray, chunk_features: int):
    """The row reader of a local connectome store holding ``data`` (uncompressed series)."""
    group = zarr.open_group(str(tmp_path / "c.zarr"), mode="w", zarr_format=3)
    n, t, v = data.shape
    ts = group.create_array(
        "timeseries", shape=data.shape, chunks=(1, t, chunk_features), dtype=data.dtype, compressors=None
    )
    ts[...] = data
    for name in ("scale", "mean"):
        group.create_array(name, shape=(n, v), chunks=(1, v), dtype="float32")[...] = 1.0
    return open_rows(StoreRef.here(str(tmp_path / "c.zarr")))


def test_connectome_rows_use_it(tmp_path):
    """The connectome row reader of a local float32 store reads directly, and equals zarr's read."""
    data = np.random.default_rng(1).standard_normal((3, 6, 40)).astype(np.float32)
    rows = _connectome_rows(tmp_path, data, 16)
    assert rows._direct is not None
    out = np.empty((6, 40), np.float32)
    np.testing.assert_array_equal(rows.read_into(2, out), data[2])
    strided = np.empty((6, 80), np.float32)[:, ::2]  # not C-contiguous: zarr's read
    np.testing.assert_array_equal(rows.read_into(1, strided), data[1])


def test_float16_rows_read_directly_and_converted(tmp_path):
    """float16 storage: read directly, converted exactly into the caller's float32 buffer."""
    data = np.random.default_rng(2).standard_normal((2, 5, 30)).astype(np.float16)
    rows = _connectome_rows(tmp_path, data, 16)
    assert rows._direct is not None and rows.dtype == np.float16
    out = np.empty((5, 30), np.float32)
    for row in (1, 0):
        np.testing.assert_array_equal(rows.read_into(row, out), data[row].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_connectome_block_getter_equals_whole_rows(tmp_path, dtype):
    """The block getter of a local store gives each block of a row exactly as the whole-row read
    does (float16 converted); stores without local chunk files have none."""
    data = np.random.default_rng(4).standard_normal((2, 5, 30)).astype(dtype)
    rows = _connectome_rows(tmp_path, data, 16)
    get = rows.block_getter()
    assert get is not None
    whole = np.empty((5, 30), np.float32)
    out = np.empty((5, 16), np.float32)
    for row in (1, 0):
        rows.read_into(row, whole)
        for start in (0, 16):
            np.testing.assert_array_equal(get(row, start, out), whole[:, start : start + 16])
    group = zarr.open_group("memory://rows", mode="w", zarr_format=3)
    group.create_array("timeseries", shape=(1, 5, 30), chunks=(1, 5, 16), dtype="float32")
    for name in ("scale", "mean"):
        group.create_array(name, shape=(1, 30), chunks=(1, 30), dtype="float32")
    from lakepipe.io.stores.rows import ZarrRows

    assert ZarrRows(group).block_getter() is None
