"""MNIST handwritten digits, read from IDX files and optionally downloaded with torchvision."""

from __future__ import annotations

import os

from torch.utils.data import TensorDataset

from ._mnist_format import all_files, find_file, load_pair, split_files
from ._torchvision import import_torchvision


def _directories(root: str) -> list[str]:
    # torchvision.datasets.MNIST keeps its files under root/MNIST/raw.
    return [root, os.path.join(root, "MNIST", "raw")]


def mnist(root: str | os.PathLike, train: bool = True, download: bool = False) -> TensorDataset:
    """
    The MNIST handwritten digits: 60000 training and 10000 test images in 10 classes.

    The four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally gzipped) are
    looked for in ``root`` and then in ``root/MNIST/raw``, where torchvision puts them.

    :param root: directory holding the files, or where to download them.
    :param bool train: the training split if true, else the test split.
    :param bool download: if the files are missing, download them with torchvision into
        ``root/MNIST/raw``. Needs torchvision and internet access.
    :returns: a dataset of images ``float32`` in ``[0, 1]`` of shape ``(N, 1, 28, 28)`` and
        labels ``int64`` in ``0..9`` of shape ``(N,)``.
    :rtype: torch.utils.data.TensorDataset
    :raises FileNotFoundError: if the files are missing and ``download`` is false.
    :raises ImportError: if the files are missing and torchvision cannot be imported.
    """
    root = os.path.expanduser(os.fspath(root))
    directories = _directories(root)
    names = split_files(train)
    paths = [find_file(directories, name) for name in names]
    if None in paths:
        missing = names[paths.index(None)]
        if not download:
            raise FileNotFoundError(
                f"MNIST file {missing}[.gz] not found in {root} or "
                f"{os.path.join(root, 'MNIST', 'raw')}. Put the IDX files "
                f"({', '.join(all_files())}, optionally gzipped) in {root}, or pass "
                "download=True to fetch them with torchvision (needs internet access)."
            )
        torchvision = import_torchvision("download MNIST", f"put the IDX files in {root}")
        torchvision.datasets.MNIST(root, train=train, download=True)
        paths = [find_file(directories, name) for name in names]
        if None in paths:
            raise FileNotFoundError(
                f"torchvision downloaded MNIST into {root}, but "
                f"{names[paths.index(None)]}[.gz] is still not in {directories[-1]}"
            )
    return load_pair(*paths)
