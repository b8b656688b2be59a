"""
Data sets for Bayesian deep learning experiments, as
:class:`torch.utils.data.TensorDataset` objects held in memory.

* Images: :func:`fashion_mnist` (read from local files, by default those of the Debian
  package ``dataset-fashion-mnist``), :func:`mnist` and :func:`cifar10` (read from local
  files or downloaded with torchvision on request), and :func:`digits` (bundled with
  scikit-learn). Images are ``float32`` in ``[0, 1]`` of shape ``(N, C, H, W)``, labels
  ``int64`` of shape ``(N,)``.
* Synthetic regression: :func:`toy_cubic` and :func:`toy_sinusoid`, with inputs of shape
  ``(N, 1)`` and targets of shape ``(N,)``.
* :func:`load_dataset` loads any of them by name as :class:`DataSplits`.
* :func:`read_idx` and :func:`write_idx` handle the IDX files of the MNIST family.

torchvision is imported only when a download is asked for.
"""

from .cifar10 import CIFAR10_CLASSES, cifar10
from .digits import digits
from .fashion_mnist import DEBIAN_FASHION_MNIST, fashion_mnist, fashion_mnist_available
from .idx import read_idx, write_idx
from .mnist import mnist
from .registry import DATASET_NAMES, DataSplits, load_dataset
from .toy_regression import (
    CUBIC_NOISE_STD,
    SINUSOID_NOISE_STD,
    cubic_function,
    sinusoid_function,
    toy_cubic,
    toy_sinusoid,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CUBIC_NOISE_STD",
    "DATASET_NAMES",
    "DEBIAN_FASHION_MNIST",
    "DataSplits",
    "SINUSOID_NOISE_STD",
    "cifar10",
    "cubic_function",
    "digits",
    "fashion_mnist",
    "fashion_mnist_available",
    "load_dataset",
    "mnist",
    "read_idx",
    "sinusoid_function",
    "toy_cubic",
    "toy_sinusoid",
    "write_idx",
]
