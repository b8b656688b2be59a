"""
The two synthetic one-dimensional regression tasks of Louizos (2019), *Priors and
Approximate Inference for Bayesian Deep Learning*, used to look at predictive uncertainty
inside and outside the range of the data.

Both return a dataset of inputs ``x`` of shape ``(N, 1)`` and targets ``y`` of shape
``(N,)``, in ``float32``. The draws come from a :class:`torch.Generator` seeded with
``seed``, so they do not depend on, or disturb, the global random state.
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

CUBIC_NOISE_STD = 3.0
"""Standard deviation of the additive Gaussian noise of :func:`toy_cubic`."""

SINUSOID_NOISE_STD = 0.03
"""Standard deviation of the Gaussian input noise of :func:`toy_sinusoid`."""

# toy_sinusoid draws 12 of its 20 points from the left interval and 8 from the right one.
_SINUSOID_INTERVALS = ((0.0, 0.6), (0.8, 1.0))
_SINUSOID_LEFT_SHARE = 0.6


def _check_num_points(num_points: int) -> None:
    if num_points < 1:
        raise ValueError(f"num_points must be a positive integer, got {num_points}")


def cubic_function(x: torch.Tensor) -> torch.Tensor:
    """
    The noiseless truth of :func:`toy_cubic`, :math:`f(x) = x^3`, elementwise.

    :param torch.Tensor x: inputs of any shape.
    :returns: a tensor of the same shape.
    """
    return x**3


def toy_cubic(num_points: int = 20, seed: int = 0) -> TensorDataset:
    r"""
    The cubic task:

    .. math:: x \sim \mathrm{Uniform}(-4, 4), \qquad y = x^3 + \epsilon,
        \qquad \epsilon \sim \mathcal{N}(0, 3^2).

    :param int num_points: number of points :math:`N`; the original task has 20.
    :param int seed: seed of the draws.
    :returns: a dataset of ``x`` of shape ``(N, 1)`` and ``y`` of shape ``(N,)``.
    :rtype: torch.utils.data.TensorDataset
    """
    _check_num_points(num_points)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(num_points, 1, generator=generator) * 8 - 4
    noise = CUBIC_NOISE_STD * torch.randn(num_points, generator=generator)
    y = cubic_function(x.squeeze(-1)) + noise
    return TensorDataset(x, y)


def sinusoid_function(x: torch.Tensor) -> torch.Tensor:
    r"""
    The noiseless truth of :func:`toy_sinusoid`, :math:`f(x) = x + \sin(4x) + \sin(13x)`,
    elementwise.

    :param torch.Tensor x: inputs of any shape.
    :returns: a tensor of the same shape.
    """
    return x + torch.sin(4 * x) + torch.sin(13 * x)


def toy_sinusoid(seed: int = 0, num_points: int = 20) -> TensorDataset:
    r"""
    The sinusoid task, with a gap in the inputs between 0.6 and 0.8:

    .. math:: y = f(x + \epsilon), \qquad f(t) = t + \sin(4t) + \sin(13t),
        \qquad \epsilon \sim \mathcal{N}(0, 0.03^2),

    where 60% of the inputs (12 of the original 20) are drawn from
    :math:`\mathrm{Uniform}(0, 0.6)` and the rest from :math:`\mathrm{Uniform}(0.8, 1)`.
    The noise enters through the input, so ``y - f(x)`` is not Gaussian.

    :param int seed: seed of the draws.
    :param int num_points: number of points :math:`N`; the original task has 20.
    :returns: a dataset of ``x`` of shape ``(N, 1)`` and ``y`` of shape ``(N,)``; the
        points of the left interval come first.
    :rtype: torch.utils.data.TensorDataset
    """
    _check_num_points(num_points)
    generator = torch.Generator().manual_seed(seed)
    num_left = round(_SINUSOID_LEFT_SHARE * num_points)
    parts = []
    for (low, high), n in zip(_SINUSOID_INTERVALS, (num_left, num_points - num_left), strict=True):
        parts.append(low + (high - low) * torch.rand(n, 1, generator=generator))
    x = torch.cat(parts)
    noise = SINUSOID_NOISE_STD * torch.randn(num_points, generator=generator)
    y = sinusoid_function(x.squeeze(-1) + noise)
    return TensorDataset(x, y)
