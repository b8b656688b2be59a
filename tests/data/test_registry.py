import dataclasses
import subprocess
import sys

import pytest
import torch

import pyro_bnn.data
from pyro_bnn.data import DATASET_NAMES, DataSplits, load_dataset
from pyro_bnn.data.registry import TOY_TEST_POINTS


def _check_splits(splits, name):
    assert isinstance(splits, DataSplits)
    assert splits.name == name
    for dataset in (splits.train, splits.test):
        inputs, targets = dataset.tensors
        assert inputs.shape[1:] == splits.input_shape
        assert inputs.dtype == torch.float32
        assert targets.shape == (len(inputs),)
        if splits.task == "classification":
            assert targets.dtype == torch.int64
            assert 0 <= targets.min() and targets.max() < splits.num_classes
        else:
            assert splits.task == "regression"
            assert splits.num_classes is None
            assert targets.dtype == torch.float32


def test_fashion_mnist(tmp_path, write_mnist_files):
    root = write_mnist_files(tmp_path, num_images=12)
    splits = load_dataset("fashion-mnist", root=root)
    _check_splits(splits, "fashion-mnist")
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert len(splits.train) == len(splits.test) == 12


def test_mnist(tmp_path, write_mnist_files, no_torchvision):
    write_mnist_files(tmp_path / "MNIST" / "raw", num_images=4)
    _check_splits(load_dataset("mnist", root=str(tmp_path)), "mnist")
    with pytest.raises(FileNotFoundError):
        load_dataset("cifar10", root=tmp_path)
    assert no_torchvision == []


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_root_required(name):
    with pytest.raises(ValueError, match="needs root="):
        load_dataset(name)


def test_digits():
    splits = load_dataset("digits")
    _check_splits(splits, "digits")
    assert splits.input_shape == (1, 8, 8)
    assert len(splits.train) + len(splits.test) == 1797


@pytest.mark.parametrize("name, low, high", [("toy-cubic", -4, 4), ("toy-sinusoid", 0, 1)])
def test_toy(name, low, high):
    splits = load_dataset(name)
    _check_splits(splits, name)
    assert splits.input_shape == (1,)
    assert len(splits.train) == 20 and len(splits.test) == TOY_TEST_POINTS
    train_x, test_x = splits.train.tensors[0], splits.test.tensors[0]
    assert not torch.isin(train_x, test_x).any()
    for x in (train_x, test_x):
        assert x.min() >= low and x.max() <= high
    again = load_dataset(name)
    assert torch.equal(again.train.tensors[1], splits.train.tensors[1])


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'") as info:
        load_dataset("svhn")
    for name in DATASET_NAMES:
        assert repr(name) in str(info.value)


def test_names():
    assert set(DATASET_NAMES) == {
        "fashion-mnist",
        "boston",
        "concrete",
        "digits",
        "mnist",
        "cifar10",
        "toy-cubic",
        "toy-sinusoid",
    }


def test_splits_are_frozen():
    splits = load_dataset("toy-cubic")
    with pytest.raises(dataclasses.FrozenInstanceError):
        splits.name = "other"


def test_public_names():
    for name in pyro_bnn.data.__all__:
        assert hasattr(pyro_bnn.data, name), name


def test_import_is_light():
    # torchvision may be missing or broken; scikit-learn is slow to import.
    code = (
        "import sys, pyro_bnn.data; "
        "print(sorted(m for m in ('torchvision', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
