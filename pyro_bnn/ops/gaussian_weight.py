"""A factorized Gaussian weight: the case of mean-field guides (sparse variational dropout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batched import batched_conv, batched_linear
from .sampled_linear import _standard_deviation, sampled_conv, sampled_linear
from .stochastic_weight import (
    StochasticWeight,
    materialize,
    register_conv_handler,
    register_handler,
)


class GaussianWeight(StochasticWeight):
    """A lazily sampled ``w ~ Normal(loc, scale)`` with independent entries.

    ``F.linear`` and ``F.conv{1,2,3}d`` sample the pre-activation from its exact Gaussian
    marginal (:func:`~pyro_bnn.ops.sampled_linear`, :func:`~pyro_bnn.ops.sampled_conv`).  The
    product with a tensor ``t`` of scales that broadcasts to the weight's shape is again a
    ``GaussianWeight``, ``N(loc * t, variance * t**2)``, so a non-centred prior's
    ``standardized * scale`` keeps local reparameterization (unless the weight's one sample
    was already drawn, which the product then uses).

    :param loc: the mean, any shape (a layer's weight layout, optionally with leading sample
        dimensions).
    :param scale: the standard deviation, same shape as ``loc``.
    :param variance: the variance instead of the standard deviation (give one of the two).  The
        layers need only the variance, so a guide that has it (``exp`` of its log-variance)
        saves a square root and a square per weight and step.
    """

    @staticmethod
    def __new__(
        cls,
        loc: torch.Tensor,
        scale: torch.Tensor | None = None,
        variance: torch.Tensor | None = None,
    ):
        if (scale is None) == (variance is None):
            raise ValueError("GaussianWeight needs exactly one of scale and variance")
        spread = scale if variance is None else variance
        if loc.shape != spread.shape:
            name = "scale" if variance is None else "variance"
            raise ValueError(
                f"loc {tuple(loc.shape)} and {name} {tuple(spread.shape)} must have the same shape"
            )
        weight = StochasticWeight.__new__(cls, loc)
        weight._loc = loc
        weight._scale = scale
        weight._variance = variance
        return weight

    @property
    def loc(self) -> torch.Tensor:
        return self._loc

    @property
    def scale(self) -> torch.Tensor:
        if self._scale is None:
            self._scale = _standard_deviation(self._variance)
        return self._scale

    @property
    def variance(self) -> torch.Tensor:
        if self._variance is None:
            self._variance = self._scale.square()
        return self._variance

    def _draw(self) -> torch.Tensor:
        return torch.addcmul(self._loc, self.scale, torch.randn_like(self._loc))


def moments(parameter) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mean, variance) of a weight or bias that may be Gaussian (variance ``None`` if not);
    any other stochastic weight contributes one sample."""
    if isinstance(parameter, GaussianWeight):
        return parameter.loc, parameter.variance
    return materialize(parameter), None


def bias_noise(mean: torch.Tensor, bias_var: torch.Tensor | None, spatial: int = 0):
    """``mean`` plus one independent draw of a Gaussian bias per output (no-op without one)."""
    if bias_var is None:
        return mean
    std = _standard_deviation(bias_var).reshape(*bias_var.shape, *(1,) * spatial)
    if bias_var.dim() > 1:  # sample dimensions: (*sample, out) against (*sample, B, out, ...)
        std = std.unsqueeze(-spatial - 2)
    return mean + std * torch.randn_like(mean)


@register_handler(GaussianWeight, F.linear)
def _linear(input, weight, bias=None):
    if isinstance(input, StochasticWeight):
        return NotImplemented
    weight_mean, weight_var = moments(weight)
    bias_mean, bias_var = moments(bias)
    if weight_var is None:
        # Only the bias is random: one independent bias draw per example.
        return bias_noise(batched_linear(input, weight_mean, bias_mean), bias_var)
    return sampled_linear(input, weight_mean, weight_var, bias_mean, bias_var)


@register_conv_handler(GaussianWeight)
def _conv(spatial, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(input, StochasticWeight):
        return NotImplemented
    weight_mean, weight_var = moments(weight)
    bias_mean, bias_var = moments(bias)
    args = (stride, padding, dilation, groups)
    if weight_var is None:
        mean = batched_conv(input, weight_mean, bias_mean, *args, spatial=spatial)
        return bias_noise(mean, bias_var, spatial)
    return sampled_conv(input, weight_mean, weight_var, bias_mean, bias_var, *args, spatial=spatial)


@register_handler(GaussianWeight, torch.mul, torch.Tensor.mul, torch.Tensor.__mul__)
def _mul(input, other):
    return _scaled(input, other)


@register_handler(GaussianWeight, torch.Tensor.__rmul__)
def _rmul(input, other):
    return _scaled(input, other)


def _scaled(first, second):
    weight, scale = (first, second) if isinstance(first, GaussianWeight) else (second, first)
    if weight._sample is not None:
        # Something already used this weight's sample: the product must use the same draw.
        return NotImplemented
    if isinstance(scale, (int, float)):
        scale = torch.as_tensor(scale, dtype=weight.dtype, device=weight.device)
    if not torch.is_tensor(scale) or isinstance(scale, StochasticWeight):
        return NotImplemented
    # Only a scale that keeps the weight's shape: a broadcast to new dimensions would turn one
    # shared weight sample into independent ones.
    if torch.broadcast_shapes(weight.shape, scale.shape) != weight.shape:
        return NotImplemented
    return GaussianWeight(weight.loc * scale, variance=weight.variance * scale.square())
