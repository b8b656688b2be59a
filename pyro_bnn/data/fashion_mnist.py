"""
Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 28x28 grey-scale images of clothing in
10 classes, in the MNIST file layout.

Nothing is downloaded: the files are read from a local directory, by default the one the
Debian package ``dataset-fashion-mnist`` installs.
"""

from __future__ import annotations

import os

from torch.utils.data import TensorDataset

from ._mnist_format import all_files, find_file, load_pair, split_files

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
"""Where ``apt-get install dataset-fashion-mnist`` puts the four gzipped IDX files."""

ENV_VAR = "PYRO_BNN_FASHION_MNIST"
"""Environment variable naming a directory with the files, used when ``root`` is None."""


def _resolve_root(root: str | os.PathLike | None) -> str:
    if root is None:
        root = os.environ.get(ENV_VAR) or DEBIAN_FASHION_MNIST
    return os.path.expanduser(os.fspath(root))


def fashion_mnist_available(root: str | os.PathLike | None = None) -> bool:
    """
    Whether all four Fashion-MNIST IDX files are present (their contents are not checked).

    :param root: directory to look in; None means the same default as :func:`fashion_mnist`.
    """
    root = _resolve_root(root)
    return all(find_file([root], name) is not None for name in all_files())


def fashion_mnist(root: str | os.PathLike | None = None, train: bool = True) -> TensorDataset:
    """
    Fashion-MNIST: 60000 training and 10000 test images, 6000 and 1000 per class.

    The files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` are read from ``root``, each
    either gzipped (with a ``.gz`` suffix) or not.

    :param root: directory holding the files. None means the directory named by the
        environment variable ``PYRO_BNN_FASHION_MNIST`` if it is set, else
        :data:`DEBIAN_FASHION_MNIST`.
    :param bool train: the training split if true, else the test split.
    :returns: a dataset of images ``float32`` in ``[0, 1]`` of shape ``(N, 1, 28, 28)`` and
        labels ``int64`` in ``0..9`` of shape ``(N,)``.
    :rtype: torch.utils.data.TensorDataset
    :raises FileNotFoundError: if a file of the split is missing.
    :raises ValueError: if the files are malformed or do not match each other.
    """
    root = _resolve_root(root)
    paths = []
    for name in split_files(train):
        path = find_file([root], name)
        if path is None:
            raise FileNotFoundError(
                f"Fashion-MNIST file {name}[.gz] not found in {root}. Install the Debian "
                "package with `apt-get install dataset-fashion-mnist`, or pass root= (or set "
                f"{ENV_VAR} to) a directory holding the four IDX files "
                f"({', '.join(all_files())}, optionally gzipped)."
            )
        paths.append(path)
    return load_pair(*paths)
