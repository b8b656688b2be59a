import builtins
import sys
import types

import numpy as np
import pytest

from pyro_bnn.data import write_idx


@pytest.fixture
def write_mnist_files():
    """
    A function writing a small copy of the MNIST layout: both splits, ``num_images`` random
    28x28 images each, labels cycling through 0..9 unless given.
    """

    def write(directory, num_images=12, gz=True, train_labels=None):
        directory.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        suffix = ".gz" if gz else ""
        for prefix in ("train", "t10k"):
            images = rng.integers(0, 256, size=(num_images, 28, 28), dtype=np.uint8)
            labels = np.arange(num_images, dtype=np.uint8) % 10
            if prefix == "train" and train_labels is not None:
                labels = np.asarray(train_labels, dtype=np.uint8)
            write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
            write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        return directory

    return write


@pytest.fixture
def no_torchvision(monkeypatch):
    """
    Make every import of torchvision fail, as on a machine without it, so nothing can be
    downloaded. Returns the list of the attempted imports.
    """
    attempts = []
    real_import = builtins.__import__

    def guarded_import(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            attempts.append(name)
            raise ImportError(f"test forbids importing {name}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded_import)
    return attempts


@pytest.fixture
def fake_torchvision(monkeypatch):
    """
    An empty stand-in for torchvision, to which a test adds download functions that write
    files instead of using the network; ``calls`` is a list for them to record their
    arguments in.
    """
    calls = []
    torchvision = types.ModuleType("torchvision")
    datasets = types.ModuleType("torchvision.datasets")
    utils = types.ModuleType("torchvision.datasets.utils")
    torchvision.datasets = datasets
    datasets.utils = utils
    for module in (torchvision, datasets, utils):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    torchvision.calls = calls
    return torchvision
