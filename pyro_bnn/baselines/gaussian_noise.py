"""The homoscedastic Gaussian observation noise of the regression baselines."""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianNoise(nn.Module):
    r"""Observation noise :math:`y \sim \mathcal{N}(f(x), \sigma^2)` with one variance for every
    example, the likelihood of the regression baselines.

    The network outputs the mean :math:`f(x)`; the variance is parameterized as
    :math:`\log \sigma^2` and, with ``learn=True``, is a parameter that the training loop fits by
    maximum likelihood together with the network (type-II maximum likelihood for the
    deterministic, MC-dropout and ensemble baselines).  With ``learn=False`` it is a fixed
    buffer.  The per-example negative log-likelihood is

    .. math:: \tfrac12 \bigl(\log 2\pi + \log\sigma^2 + (y - f(x))^2 / \sigma^2\bigr).

    :param variance: the (initial) noise variance :math:`\sigma^2 > 0`.
    :param learn: fit the variance by maximum likelihood during training.
    """

    def __init__(self, variance: float = 1.0, learn: bool = True):
        super().__init__()
        if not (isinstance(variance, (int, float)) and math.isfinite(variance) and variance > 0):
            raise ValueError(
                f"the noise variance must be a positive finite number, got {variance!r}"
            )
        log_variance = torch.tensor(math.log(variance))
        if learn:
            self.log_variance = nn.Parameter(log_variance)
        else:
            self.register_buffer("log_variance", log_variance)

    @property
    def variance(self) -> torch.Tensor:
        """The noise variance :math:`\\sigma^2`, a scalar tensor."""
        return self.log_variance.exp()

    def negative_log_likelihood(self, mean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-example ``-log N(target | mean, sigma^2)``, shape ``mean.shape``."""
        if mean.shape != target.shape:
            raise ValueError(
                f"the means have shape {tuple(mean.shape)}, the targets {tuple(target.shape)}"
            )
        log_variance = self.log_variance.to(mean)
        return 0.5 * (
            math.log(2 * math.pi) + log_variance + (target - mean).square() / log_variance.exp()
        )

    def extra_repr(self) -> str:
        learned = isinstance(self.log_variance, nn.Parameter)
        return f"variance={self.variance.item():.4g}, learn={learned}"
