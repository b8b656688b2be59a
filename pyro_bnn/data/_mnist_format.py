"""
The layout shared by MNIST and Fashion-MNIST: one IDX file of ``uint8`` images of shape
``(N, 28, 28)`` and one IDX file of ``uint8`` labels of shape ``(N,)`` per split.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .idx import read_idx

NUM_CLASSES = 10
IMAGE_SIZE = 28


def split_files(train: bool) -> tuple[str, str]:
    """The file names, without ``.gz``, of the images and labels of one split."""
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def all_files() -> tuple[str, ...]:
    """The four file names, without ``.gz``, of a complete copy."""
    return split_files(True) + split_files(False)


def find_file(directories: list[str], name: str) -> str | None:
    """The first of ``directory/name`` or ``directory/name.gz`` that exists, else None."""
    for directory in directories:
        for candidate in (name, name + ".gz"):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                return path
    return None


def load_pair(image_path: str, label_path: str) -> TensorDataset:
    """
    Load and check one split.

    :returns: images ``float32`` in ``[0, 1]`` of shape ``(N, 1, 28, 28)`` and labels
        ``int64`` of shape ``(N,)``.
    :raises ValueError: if the files do not hold ``uint8`` arrays of the expected shapes, if
        their lengths differ, or if a label is not in ``0..9``.
    """
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{image_path}: expected uint8 images of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), "
            f"found {images.dtype} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{label_path}: expected uint8 labels of shape (N,), found {labels.dtype} of "
            f"shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise ValueError(
            f"{label_path}: labels must lie in 0..{NUM_CLASSES - 1}, found {labels.max()}"
        )
    # Divide after converting: in uint8 the division would truncate.
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255)
    y = torch.from_numpy(labels).to(torch.int64)
    return TensorDataset(x, y)
