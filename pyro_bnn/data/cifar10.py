"""
CIFAR-10 (Krizhevsky, 2009): 32x32 colour images in 10 classes, read from the binary
version of the data set.

The binary files are plain fixed-size records, so they are read with numpy; the pickled
Python version is never used, as unpickling can run arbitrary code.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ._torchvision import import_torchvision

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_BATCH_DIR = "cifar-10-batches-bin"
_IMAGE_SHAPE = (3, 32, 32)
# One label byte, then the red, green and blue 32x32 planes, each in row-major order.
_RECORD_SIZE = 1 + 3 * 32 * 32


def _batch_files(train: bool) -> list[str]:
    if train:
        return [f"data_batch_{i}.bin" for i in range(1, 6)]
    return ["test_batch.bin"]


def _batch_directory(root: str, train: bool) -> str | None:
    """The first of root/cifar-10-batches-bin and root that holds every batch of the split."""
    for directory in (os.path.join(root, _BATCH_DIR), root):
        if all(os.path.isfile(os.path.join(directory, name)) for name in _batch_files(train)):
            return directory
    return None


def _first_missing(directory: str, train: bool) -> str:
    return next(
        name for name in _batch_files(train) if not os.path.isfile(os.path.join(directory, name))
    )


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    records = np.fromfile(path, dtype=np.uint8)
    if records.size == 0 or records.size % _RECORD_SIZE:
        raise ValueError(
            f"{path}: not a CIFAR-10 binary batch: its size ({records.size} bytes) is not a "
            f"positive multiple of the {_RECORD_SIZE}-byte record (truncated download?)"
        )
    records = records.reshape(-1, _RECORD_SIZE)
    labels = records[:, 0]
    if labels.max() >= len(CIFAR10_CLASSES):
        raise ValueError(f"{path}: labels must lie in 0..9, found {labels.max()}")
    return records[:, 1:].reshape((-1,) + _IMAGE_SHAPE), labels


def cifar10(root: str | os.PathLike, train: bool = True, download: bool = False) -> TensorDataset:
    """
    CIFAR-10: 50000 training and 10000 test images, 5000 and 1000 per class.

    Reads ``data_batch_1.bin`` ... ``data_batch_5.bin`` (training split) or
    ``test_batch.bin`` (test split) from ``root/cifar-10-batches-bin``, the directory the
    binary archive unpacks to, or else from ``root`` itself.

    :param root: directory holding the files, or where to download them.
    :param bool train: the training split if true, else the test split.
    :param bool download: if the files are missing, download and unpack the binary archive
        (about 160 MB) into ``root`` with torchvision's helpers, checking its MD5 sum. Needs
        torchvision and internet access.
    :returns: a dataset of images ``float32`` in ``[0, 1]`` of shape ``(N, 3, 32, 32)``,
        channels in RGB order, and labels ``int64`` in ``0..9`` of shape ``(N,)``; the class
        names are :data:`CIFAR10_CLASSES`.
    :rtype: torch.utils.data.TensorDataset
    :raises FileNotFoundError: if the files are missing and ``download`` is false.
    :raises ImportError: if the files are missing and torchvision cannot be imported.
    :raises ValueError: if a batch file is malformed.
    """
    root = os.path.expanduser(os.fspath(root))
    directory = _batch_directory(root, train)
    if directory is None:
        batch_dir = os.path.join(root, _BATCH_DIR)
        if not download:
            raise FileNotFoundError(
                f"CIFAR-10 file {_first_missing(batch_dir, train)} not found in {batch_dir}. "
                f"Unpack the binary archive {CIFAR10_URL} into {root}, or pass download=True "
                "to fetch it with torchvision (needs internet access)."
            )
        torchvision = import_torchvision("download CIFAR-10", f"unpack {CIFAR10_URL} into {root}")
        torchvision.datasets.utils.download_and_extract_archive(
            CIFAR10_URL, download_root=root, md5=CIFAR10_MD5
        )
        directory = _batch_directory(root, train)
        if directory is None:
            raise FileNotFoundError(
                f"the CIFAR-10 archive was unpacked into {root}, but "
                f"{_first_missing(batch_dir, train)} is still not in {batch_dir}"
            )
    paths = [os.path.join(directory, name) for name in _batch_files(train)]
    batches = [_read_batch(path) for path in paths]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    # Divide after converting: in uint8 the division would truncate.
    x = torch.from_numpy(images).to(torch.float32).div_(255)
    y = torch.from_numpy(labels).to(torch.int64)
    return TensorDataset(x, y)
