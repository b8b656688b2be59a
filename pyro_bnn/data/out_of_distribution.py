"""
Out-of-distribution inputs for models of Fashion-MNIST, laid out like
:func:`~pyro_bnn.data.fashion_mnist` images: ``float32`` in ``[0, 1]`` of shape
``(N, 1, 28, 28)``, background 0.

* :func:`noise_images`: Gaussian noise with the pixel statistics of the training images, or
  uniform noise over the pixel range.
* :func:`upsampled_digits`: scikit-learn's 8x8 handwritten digits, enlarged to 28x28.
* :func:`split_classes`: the protocol "train on some classes, the held-out classes are out of
  distribution".

Nothing here needs the Fashion-MNIST files or a download.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import torch
from torch.utils.data import TensorDataset

from .digits import _MAX_PIXEL

FASHION_MNIST_PIXEL_MEAN = 0.2860
"""Mean pixel value of the 60000 Fashion-MNIST training images, in ``[0, 1]`` units."""

FASHION_MNIST_PIXEL_STD = 0.3530
"""Standard deviation of the pixels of the 60000 Fashion-MNIST training images."""

NOISE_KINDS = ("gaussian", "uniform")
"""The kinds of :func:`noise_images`."""


def _reference_moments(reference: torch.Tensor | TensorDataset) -> tuple[float, float]:
    if isinstance(reference, TensorDataset):
        reference = reference.tensors[0]
    if not isinstance(reference, torch.Tensor):
        raise ValueError(
            f"reference must be a tensor of images or a TensorDataset, got {type(reference)}"
        )
    if reference.numel() < 2:
        raise ValueError("reference must hold at least two pixels")
    pixels = reference.double()
    if not torch.isfinite(pixels).all():
        raise ValueError("reference contains NaN or infinite values")
    return pixels.mean().item(), pixels.std(unbiased=False).item()


def noise_images(
    num: int,
    shape: tuple[int, ...] = (1, 28, 28),
    kind: str = "gaussian",
    seed: int = 0,
    reference: torch.Tensor | TensorDataset | None = None,
) -> torch.Tensor:
    """
    Images of pure noise, with nothing in them for a classifier to recognize.

    - ``kind="gaussian"``: every pixel drawn from ``N(mean, std^2)`` and clipped to
      ``[0, 1]``, with ``mean`` and ``std`` the pixel mean and standard deviation of
      ``reference`` (over all its pixels), or of the Fashion-MNIST training images
      (:data:`FASHION_MNIST_PIXEL_MEAN`, :data:`FASHION_MNIST_PIXEL_STD`) when it is None.
    - ``kind="uniform"``: every pixel drawn from ``Uniform(0, 1)``; ``reference`` is not used.

    The draws come from a :class:`torch.Generator` seeded with ``seed``, so they neither depend
    on nor disturb the global random state.

    :param int num: the number of images ``N``, at least 1.
    :param tuple shape: the shape of one image, ``(1, 28, 28)`` for Fashion-MNIST.
    :param str kind: ``"gaussian"`` or ``"uniform"``.
    :param int seed: seed of the draws.
    :param reference: images (a tensor, or a dataset whose first tensor holds them) whose pixel
        statistics the Gaussian noise takes.
    :returns: ``float32`` images in ``[0, 1]`` of shape ``(N, *shape)``.
    """
    try:
        num = operator.index(num)
        shape = tuple(operator.index(size) for size in shape)
    except TypeError:
        raise ValueError(
            f"num must be an integer and shape a tuple of integers, got {num!r} and {shape!r}"
        ) from None
    if num < 1:
        raise ValueError(f"num must be a positive integer, got {num}")
    if any(size < 1 for size in shape):
        raise ValueError(f"shape must hold positive sizes, got {shape}")
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(NOISE_KINDS)}")
    generator = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        return torch.rand(num, *shape, generator=generator)
    if reference is None:
        mean, std = FASHION_MNIST_PIXEL_MEAN, FASHION_MNIST_PIXEL_STD
    else:
        mean, std = _reference_moments(reference)
    noise = torch.randn(num, *shape, generator=generator)
    return (mean + std * noise).clamp_(0.0, 1.0)


def upsampled_digits(size: int = 28) -> torch.Tensor:
    """
    The 1797 handwritten digits bundled with scikit-learn (``load_digits``), enlarged from
    8x8 to ``size`` x ``size`` by bilinear interpolation (``torch.nn.functional.interpolate``,
    ``align_corners=False``).  Their pixels, counts from 0 to 16, are divided by 16, so that
    they span ``[0, 1]`` with a background of 0 like Fashion-MNIST's.  The digit labels are
    dropped: they are not classes of the model.

    :param int size: the side of the images; 28 matches Fashion-MNIST.
    :returns: ``float32`` images in ``[0, 1]`` of shape ``(1797, 1, size, size)``.
    """
    try:
        size = operator.index(size)
    except TypeError:
        raise ValueError(f"size must be a positive integer, got {size!r}") from None
    if size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    # scikit-learn is slow to import; pay for it only when the digits are asked for.
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).to(torch.float32).unsqueeze(1) / _MAX_PIXEL
    enlarged = torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False
    )
    # Bilinear weights are convex, so this only removes rounding outside [0, 1].
    return enlarged.clamp_(0.0, 1.0)


def split_classes(
    dataset: TensorDataset, classes: Iterable[int]
) -> tuple[TensorDataset, TensorDataset]:
    """
    Split a labelled dataset by class, for the protocol "train on some classes, the held-out
    classes are out of distribution" (for example five Fashion-MNIST classes in, five out).

    :param TensorDataset dataset: pairs ``(input, label)``, labels non-negative integers of
        shape ``(N,)``.
    :param classes: the classes to keep, each occurring in the labels.
    :returns: ``(inside, rest)``: ``inside`` holds the examples whose label is in ``classes``,
        relabelled ``0..k-1`` in the sorted order of ``classes`` (the smallest class becomes 0),
        so that a ``k``-class model can be trained on it; ``rest`` holds the other examples with
        their original labels.  Both keep the order of ``dataset``.
    """
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
        raise ValueError("dataset must be a TensorDataset of (inputs, labels)")
    inputs, labels = dataset.tensors
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be integers of shape (N,), got {labels.dtype} of shape "
            f"{tuple(labels.shape)}"
        )
    if len(labels) and labels.min() < 0:
        raise ValueError(f"labels must be non-negative, found {labels.min().item()}")
    try:
        chosen = [operator.index(label) for label in classes]
    except TypeError:
        raise ValueError(f"classes must be integers, got {classes!r}") from None
    if not chosen:
        raise ValueError("classes is empty")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"classes must not repeat, got {chosen}")
    present = set(labels.tolist())
    missing = sorted(set(chosen) - present)
    if missing:
        raise ValueError(f"classes {missing} do not occur in the dataset's labels")
    chosen = sorted(chosen)
    inside = torch.isin(labels, labels.new_tensor(chosen))
    relabel = torch.full((max(present) + 1,), -1, dtype=torch.int64, device=labels.device)
    relabel[chosen] = torch.arange(len(chosen), device=labels.device)
    kept = TensorDataset(inputs[inside], relabel[labels[inside].long()])
    return kept, TensorDataset(inputs[~inside], labels[~inside])
