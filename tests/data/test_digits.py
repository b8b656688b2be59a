import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from pyro_bnn.data import digits


def _rows(dataset):
    """Each example as a hashable row: its 64 pixels then its label."""
    images, labels = dataset.tensors
    return [tuple(row) for row in torch.cat([images.flatten(1) * 16, labels[:, None]], 1).tolist()]


def test_shapes_and_values():
    train, test = digits(train=True), digits(train=False)
    assert len(train) == 1348 and len(test) == 449
    for dataset in (train, test):
        images, labels = dataset.tensors
        assert images.shape == (len(dataset), 1, 8, 8)
        assert images.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert images.min() == 0 and images.max() == 1
        assert set(labels.tolist()) == set(range(10))


def test_split_is_a_partition():
    # Some digits images occur twice, so compare multisets of (pixels, label) rows.
    bunch = load_digits()
    everything = [
        tuple(row) for row in np.column_stack([bunch.data, bunch.target]).astype(float).tolist()
    ]
    for seed in (0, 3):
        train, test = digits(train=True, seed=seed), digits(train=False, seed=seed)
        assert sorted(_rows(train) + _rows(test)) == sorted(everything)


def test_split_is_deterministic():
    np.random.seed(1)
    torch.manual_seed(1)
    first = digits(train=False).tensors
    np.random.seed(2)
    torch.manual_seed(2)
    second = digits(train=False).tensors
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    other = digits(train=False, seed=1).tensors
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("fraction, num_test", [(0.1, 180), (0.5, 898)])
def test_test_fraction(fraction, num_test):
    assert len(digits(train=False, test_fraction=fraction)) == num_test
    assert len(digits(train=True, test_fraction=fraction)) == 1797 - num_test


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_bad_test_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=fraction)
