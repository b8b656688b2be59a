import os

import numpy as np
import pytest
import torch

from pyro_bnn.data import (
    DEBIAN_FASHION_MNIST,
    fashion_mnist,
    fashion_mnist_available,
    mnist,
    read_idx,
    write_idx,
)
from pyro_bnn.data.fashion_mnist import ENV_VAR


def _check(dataset, num_images):
    images, labels = dataset.tensors
    assert images.shape == (num_images, 1, 28, 28)
    assert images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert labels.shape == (num_images,)
    assert labels.dtype == torch.int64
    assert torch.equal(labels, torch.arange(num_images) % 10)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_fashion_mnist_local_copy(tmp_path, write_mnist_files, train, gz):
    root = write_mnist_files(tmp_path / "fashion", num_images=12, gz=gz)
    dataset = fashion_mnist(root, train=train)
    _check(dataset, 12)

    # Pixels are the file's bytes divided by 255, image by image in order.
    prefix = "train" if train else "t10k"
    name = f"{prefix}-images-idx3-ubyte" + (".gz" if gz else "")
    expected = torch.from_numpy(read_idx(root / name)).float() / 255
    assert torch.equal(dataset.tensors[0][:, 0], expected)


def test_fashion_mnist_env_var(tmp_path, write_mnist_files, monkeypatch):
    root = write_mnist_files(tmp_path / "fashion", num_images=5)
    monkeypatch.setenv(ENV_VAR, str(root))
    _check(fashion_mnist(train=False), 5)
    assert fashion_mnist_available()


def test_fashion_mnist_root_beats_env_var(tmp_path, write_mnist_files, monkeypatch):
    root = write_mnist_files(tmp_path / "fashion", num_images=7)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    _check(fashion_mnist(str(root)), 7)


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert not fashion_mnist_available()
    for root in (None, tmp_path):
        with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as info:
            fashion_mnist(root)
        message = str(info.value)
        assert "train-images-idx3-ubyte" in message
        assert str(tmp_path) in message
        assert "root=" in message


def test_fashion_mnist_missing_labels_only(tmp_path, write_mnist_files):
    root = write_mnist_files(tmp_path, num_images=3)
    os.remove(root / "t10k-labels-idx1-ubyte.gz")
    fashion_mnist(root, train=True)
    assert not fashion_mnist_available(root)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        fashion_mnist(root, train=False)


def test_labels_out_of_range(tmp_path, write_mnist_files):
    root = write_mnist_files(tmp_path, num_images=4, train_labels=[0, 3, 10, 9])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*0..9"):
        fashion_mnist(root)
    with pytest.raises(ValueError, match="0..9"):
        mnist(root)


def test_length_mismatch(tmp_path, write_mnist_files):
    root = write_mnist_files(tmp_path, num_images=4, train_labels=[0, 1, 2])
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        fashion_mnist(root)


def test_wrong_image_shape(tmp_path, write_mnist_files):
    root = write_mnist_files(tmp_path, num_images=2)
    write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((2, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"shape \(N, 28, 28\)"):
        fashion_mnist(root)


@pytest.mark.skipif(
    not os.path.exists(DEBIAN_FASHION_MNIST),
    reason=f"Debian package dataset-fashion-mnist not installed ({DEBIAN_FASHION_MNIST})",
)
def test_fashion_mnist_debian_files(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert fashion_mnist_available()
    images, labels = fashion_mnist(train=False).tensors
    assert images.shape == (10000, 1, 28, 28)
    assert images.min() == 0 and images.max() == 1
    assert torch.equal(labels.bincount(), torch.full((10,), 1000))


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_mnist_local_copy(tmp_path, write_mnist_files, no_torchvision, gz):
    root = write_mnist_files(tmp_path, num_images=12, gz=gz)
    _check(mnist(root), 12)
    # The files are there, so download=True has nothing to do.
    _check(mnist(str(root), train=False, download=True), 12)
    assert no_torchvision == []


def test_mnist_torchvision_layout(tmp_path, write_mnist_files, no_torchvision):
    write_mnist_files(tmp_path / "MNIST" / "raw", num_images=6, gz=False)
    _check(mnist(tmp_path, train=True), 6)
    _check(mnist(tmp_path, train=False), 6)
    assert no_torchvision == []


def test_mnist_missing_does_not_download(tmp_path, no_torchvision):
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        mnist(tmp_path)
    assert "internet" in str(info.value)
    assert no_torchvision == []


def test_mnist_download_without_torchvision(tmp_path, no_torchvision):
    with pytest.raises(ImportError, match="torchvision is needed to download MNIST") as info:
        mnist(tmp_path, download=True)
    assert str(tmp_path) in str(info.value)


def test_mnist_download(tmp_path, write_mnist_files, fake_torchvision):
    def fake_mnist(root, train, download):
        fake_torchvision.calls.append((root, train, download))
        write_mnist_files(tmp_path / "MNIST" / "raw", num_images=3, gz=False)

    fake_torchvision.datasets.MNIST = fake_mnist
    _check(mnist(tmp_path, train=False, download=True), 3)
    assert fake_torchvision.calls == [(str(tmp_path), False, True)]
    # Now the files are there: no second download.
    _check(mnist(tmp_path, train=True, download=True), 3)
    assert len(fake_torchvision.calls) == 1


def test_mnist_download_writes_nothing(tmp_path, fake_torchvision):
    fake_torchvision.datasets.MNIST = lambda root, train, download: None
    with pytest.raises(FileNotFoundError, match="still not in"):
        mnist(tmp_path, download=True)
