"""
Reading and writing the IDX format of MNIST and Fashion-MNIST.

An IDX file starts with the magic bytes ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
big-endian ``uint32`` sizes, then the array itself in C order and big-endian byte order.
Files are often distributed gzipped; :func:`read_idx` recognises gzip by its magic bytes,
whatever the file is called.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from pyro_bnn.util import atomic_write

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# (kind, itemsize) of a numpy dtype -> IDX type code, whatever its byte order.
_IDX_CODES = {(dtype.kind, dtype.itemsize): code for code, dtype in _IDX_DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if not compressed:
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    # A cut-short stream raises EOFError, a damaged one OSError (BadGzipFile) or zlib.error.
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{os.fspath(path)}: corrupt or truncated gzip stream ({e})") from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """
    Read an IDX file, gzipped or not.

    :param path: the file. Gzip compression is detected from its content, not its name.
    :returns: the stored array, with the shape given in the file header, in native byte
        order and writable (so it can go straight to :func:`torch.from_numpy`).
    :rtype: numpy.ndarray
    :raises ValueError: if the file is not IDX, or holds fewer or more bytes than its
        header announces (for instance because a download was cut short).
    """
    data = _read_bytes(path)
    name = os.fspath(path)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise ValueError(
            f"{name}: not an IDX file (expected the magic bytes 00 00 <type> <ndim>, "
            f"found {data[:4].hex(' ') or 'an empty file'})"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{name}: unknown IDX type code 0x{code:02X} (known codes: {known})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"{name}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need "
            f"{header_size})"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = _IDX_DTYPES[code]
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{name}: IDX file {problem}: the header announces shape {shape} of {dtype.name} "
            f"({expected} bytes in all) but the file holds {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    # astype copies, so the result is writable and no longer tied to ``data``.
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """
    Write an array as an IDX file, gzipped if ``path`` ends with ``.gz``.

    The file is written to a temporary name in the same directory and then renamed, so a
    reader never sees a half-written file.

    :param path: destination.
    :param array: array of any shape with dtype ``uint8``, ``int8``, ``int16``, ``int32``,
        ``float32`` or ``float64`` (anything :func:`numpy.asarray` accepts).
    :raises TypeError: if the dtype has no IDX type code.
    :raises ValueError: if the array has more than 255 dimensions or a dimension of
        :math:`2^{32}` or more.
    """
    array = np.asarray(array)
    code = _IDX_CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        supported = ", ".join(d.newbyteorder("=").name for d in _IDX_DTYPES.values())
        raise TypeError(f"IDX cannot store dtype {array.dtype}; supported dtypes: {supported}")
    if array.ndim > 255 or any(size >= 2**32 for size in array.shape):
        raise ValueError(f"IDX cannot store an array of shape {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()

    def write(temporary: str) -> None:
        with open(temporary, "wb") as f:
            if os.fspath(path).endswith(".gz"):
                # mtime=0 makes the output reproducible byte for byte.
                with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
                    gz.write(payload)
            else:
                f.write(payload)

    atomic_write(path, write)
