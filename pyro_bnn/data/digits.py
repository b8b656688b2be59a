"""
The 8x8 handwritten digits bundled with scikit-learn (from the UCI optical recognition
data set): 1797 images in 10 classes, available offline, small enough for quick
experiments and tests.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

NUM_DIGITS = 1797
# Pixels are counts of set cells in 4x4 blocks of a 32x32 bitmap, so 0..16.
_MAX_PIXEL = 16.0


def digits(train: bool = True, test_fraction: float = 0.25, seed: int = 0) -> TensorDataset:
    """
    scikit-learn's digits, split at random into a training and a test set.

    The split is a permutation drawn from ``numpy.random.default_rng(seed)``: the test set
    is its first ``round(test_fraction * 1797)`` indices, the training set the rest. Calls
    with the same ``test_fraction`` and ``seed`` therefore give complementary, disjoint
    splits, whatever the global random state.

    :param bool train: the training split if true, else the test split.
    :param float test_fraction: share of the images held out for testing, in ``(0, 1)``.
    :param int seed: seed of the split.
    :returns: a dataset of images ``float32`` in ``[0, 1]`` of shape ``(N, 1, 8, 8)`` and
        labels ``int64`` in ``0..9`` of shape ``(N,)``.
    :rtype: torch.utils.data.TensorDataset
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    # scikit-learn is slow to import; pay for it only when the digits are asked for.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8) / _MAX_PIXEL
    labels = bunch.target

    permutation = np.random.default_rng(seed).permutation(len(labels))
    num_test = round(test_fraction * len(labels))
    index = permutation[num_test:] if train else permutation[:num_test]
    x = torch.from_numpy(images[index]).to(torch.float32)
    y = torch.from_numpy(labels[index]).to(torch.int64)
    return TensorDataset(x, y)
