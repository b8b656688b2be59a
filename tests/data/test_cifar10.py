import numpy as np
import pytest
import torch

from pyro_bnn.data import CIFAR10_CLASSES, cifar10
from pyro_bnn.data.cifar10 import CIFAR10_MD5, CIFAR10_URL

RECORDS_PER_BATCH = 3


def _record(label, red, green, blue):
    planes = [np.full(32 * 32, value, dtype=np.uint8) for value in (red, green, blue)]
    return np.concatenate([np.array([label], dtype=np.uint8), *planes])


def _write_batch(path, first_label):
    # A red, a green and a blue image, so any mix-up of the channels shows.
    records = [
        _record(first_label, 255, 0, 0),
        _record((first_label + 1) % 10, 0, 255, 0),
        _record((first_label + 2) % 10, 0, 0, 51),
    ]
    path.write_bytes(np.concatenate(records).tobytes())


def _write_cifar(directory):
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        _write_batch(directory / f"data_batch_{i}.bin", first_label=i)
    _write_batch(directory / "test_batch.bin", first_label=7)
    return directory


def test_test_split(tmp_path, no_torchvision):
    _write_cifar(tmp_path / "cifar-10-batches-bin")
    images, labels = cifar10(tmp_path, train=False).tensors
    assert images.shape == (RECORDS_PER_BATCH, 3, 32, 32)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert labels.tolist() == [7, 8, 9]
    red, green, blue = images
    assert torch.all(red[0] == 1) and torch.all(red[1:] == 0)
    assert torch.all(green[1] == 1) and torch.all(green[[0, 2]] == 0)
    assert torch.all(blue[2] == 0.2) and torch.all(blue[:2] == 0)
    assert no_torchvision == []


def test_train_split_concatenates_batches_in_order(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-bin")
    images, labels = cifar10(str(tmp_path), train=True).tensors
    assert images.shape == (5 * RECORDS_PER_BATCH, 3, 32, 32)
    assert labels.tolist() == [(i + k) % 10 for i in range(1, 6) for k in range(3)]
    assert 0 <= images.min() and images.max() <= 1


def test_batches_directly_in_root(tmp_path):
    _write_cifar(tmp_path)
    assert len(cifar10(tmp_path, train=False)) == RECORDS_PER_BATCH


def test_missing_does_not_download(tmp_path, no_torchvision):
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin") as info:
        cifar10(tmp_path)
    assert "download=True" in str(info.value)
    assert no_torchvision == []


def test_one_missing_batch_is_named(tmp_path):
    (_write_cifar(tmp_path / "cifar-10-batches-bin") / "data_batch_4.bin").unlink()
    assert len(cifar10(tmp_path, train=False)) == RECORDS_PER_BATCH
    with pytest.raises(FileNotFoundError, match="data_batch_4.bin"):
        cifar10(tmp_path, train=True)


def test_download_without_torchvision(tmp_path, no_torchvision):
    with pytest.raises(ImportError, match="torchvision is needed to download CIFAR-10"):
        cifar10(tmp_path, download=True)


def test_download(tmp_path, fake_torchvision):
    def fake_download(url, download_root, md5):
        fake_torchvision.calls.append((url, download_root, md5))
        _write_cifar(tmp_path / "cifar-10-batches-bin")

    fake_torchvision.datasets.utils.download_and_extract_archive = fake_download
    assert len(cifar10(tmp_path, train=False, download=True)) == RECORDS_PER_BATCH
    assert fake_torchvision.calls == [(CIFAR10_URL, str(tmp_path), CIFAR10_MD5)]


def test_truncated_batch(tmp_path):
    directory = _write_cifar(tmp_path / "cifar-10-batches-bin")
    path = directory / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="test_batch.bin.*multiple of the 3073-byte record"):
        cifar10(tmp_path, train=False)


def test_bad_label(tmp_path):
    directory = _write_cifar(tmp_path / "cifar-10-batches-bin")
    (directory / "test_batch.bin").write_bytes(_record(10, 0, 0, 0).tobytes())
    with pytest.raises(ValueError, match="test_batch.bin: labels must lie in 0..9"):
        cifar10(tmp_path, train=False)


def test_class_names():
    assert len(CIFAR10_CLASSES) == 10
