import gzip
import os
import re

import numpy as np
import pytest

from pyro_bnn.data import read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True, dtype=dtype)
    else:
        array = rng.standard_normal((3, 4, 5)).astype(dtype)
    path = tmp_path / ("array.idx.gz" if gz else "array.idx")
    write_idx(path, array)

    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == gz
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    assert result.flags.writeable
    np.testing.assert_array_equal(result, array)
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"


def test_layout_is_big_endian(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.array([[1, 2, 3]], dtype=np.int16))
    assert path.read_bytes() == bytes.fromhex("0000 0b02 00000001 00000003 0001 0002 0003")


@pytest.mark.parametrize("shape", [(0,), (2, 0, 3), (7,)])
def test_round_trip_shapes(tmp_path, shape):
    array = np.zeros(shape, dtype=np.uint8)
    write_idx(tmp_path / "a.idx", array)
    assert read_idx(tmp_path / "a.idx").shape == shape


def test_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    os.rename(tmp_path / "a.gz", tmp_path / "compressed")
    write_idx(tmp_path / "b", array)
    os.rename(tmp_path / "b", tmp_path / "raw.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), array)


def test_accepts_str_path(tmp_path):
    path = str(tmp_path / "a.idx")
    write_idx(path, np.ones((2, 2), dtype=np.float32))
    assert read_idx(path).shape == (2, 2)


def test_overwrites_existing_file(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.zeros(100, dtype=np.uint8))
    write_idx(path, np.ones(3, dtype=np.uint8))
    np.testing.assert_array_equal(read_idx(path), np.ones(3, dtype=np.uint8))


def _error_for(path):
    return re.escape(str(path))


@pytest.mark.parametrize("cut", [1, 50])
def test_truncated_raw_file(tmp_path, cut):
    path = tmp_path / "images-idx3-ubyte"
    write_idx(path, np.zeros((4, 5, 5), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(ValueError, match=_error_for(path)) as info:
        read_idx(path)
    assert "truncated" in str(info.value)


def test_truncated_header(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 4]))
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.zeros(4, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(path)


def test_truncated_gzip_file(tmp_path):
    path = tmp_path / "images-idx3-ubyte.gz"
    # Random pixels do not compress, so cutting the stream short loses data for sure.
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    write_idx(path, pixels)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match=_error_for(path)):
        read_idx(path)


def test_gzip_of_truncated_idx(tmp_path):
    path = tmp_path / "a.gz"
    write_idx(tmp_path / "a", np.zeros(10, dtype=np.uint8))
    path.write_bytes(gzip.compress((tmp_path / "a").read_bytes()[:-3]))
    with pytest.raises(ValueError, match=_error_for(path)):
        read_idx(path)


@pytest.mark.parametrize(
    "content", [b"", b"\x00", b"PK\x03\x04 not idx", bytes([0, 1, 0x08, 1, 0, 0, 0, 0])]
)
def test_bad_magic(tmp_path, content):
    path = tmp_path / "not-idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=_error_for(path)) as info:
        read_idx(path)
    assert "not an IDX file" in str(info.value)


def test_unknown_type_code(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(bytes([0, 0, 0x0A, 1, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="unknown IDX type code 0x0A"):
        read_idx(path)


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.bool_, np.complex64])
def test_write_unsupported_dtype(tmp_path, dtype):
    with pytest.raises(TypeError, match="IDX cannot store dtype"):
        write_idx(tmp_path / "a.idx", np.zeros(3, dtype=dtype))
    assert not list(tmp_path.iterdir())


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")
