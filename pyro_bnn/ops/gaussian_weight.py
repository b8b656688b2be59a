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
    marginal (:func:`~pyro_bnn.ops.sampled_linear`, :func:`~pyro_bnn.ops.sampled_conv`), and so
    does ``x @ w`` for a matrix ``w`` on the right (a layer written as ``x @ w.T``).
    Exact Gaussian transformations stay ``GaussianWeight`` s: the product with a tensor ``t`` of
    scales that broadcasts to the weight's shape, ``N(loc * t, variance * t**2)`` (a non-centred
    prior's ``standardized * scale`` keeps local reparameterization), transposes (``w.T``,
    ``w.mT``, ``w.t()``, ``w.transpose(i, j)``) and reshapes (``reshape``, ``view``,
    ``squeeze``, ``unsqueeze``).  Such a derived weight is the same random
    variable as its source: its sample, when one is needed, is the transformed sample of the
    source, so every use of the weight sees one draw.  Once the source's sample exists, the
    transformation simply applies to it.

    :param loc: the mean, any shape (a layer's weight layout, optionally with leading sample
        dimensions).
    :param scale: the standard deviation, same shape as ``loc``.
    :param variance: the variance instead of the standard deviation (give one of the three).
        The layers need only the variance, so a guide that has it saves a square root and a
        square per weight and step.
    :param log_variance: the log-variance instead (a mean-field guide's parameter as it is):
        the fused kernel of :func:`~pyro_bnn.ops.sampled_linear` exponentiates it as it reads
        it, the torch reference once per step.
    """

    @staticmethod
    def __new__(
        cls,
        loc: torch.Tensor,
        scale: torch.Tensor | None = None,
        variance: torch.Tensor | None = None,
        log_variance: torch.Tensor | None = None,
    ):
        given = {"scale": scale, "variance": variance, "log_variance": log_variance}
        given = {name: value for name, value in given.items() if value is not None}
        if len(given) != 1:
            raise ValueError("GaussianWeight needs exactly one of scale, variance and log_variance")
        ((name, spread),) = given.items()
        if loc.shape != spread.shape:
            raise ValueError(
                f"loc {tuple(loc.shape)} and {name} {tuple(spread.shape)} must have the same shape"
            )
        weight = StochasticWeight.__new__(cls, loc)
        weight._loc = loc
        weight._scale = scale
        weight._variance = variance
        weight._log_variance = log_variance
        weight._source = None
        return weight

    def derived(self, function, loc: torch.Tensor, variance: torch.Tensor) -> GaussianWeight:
        """``function(w)`` for an exact elementwise-Gaussian transformation with the given
        moments, sharing this weight's one sample (see the class docstring)."""
        weight = GaussianWeight(loc, variance=variance)
        weight._source = (self, function)
        return weight

    @property
    def loc(self) -> torch.Tensor:
        return self._loc

    @property
    def scale(self) -> torch.Tensor:
        if self._scale is None:
            self._scale = _standard_deviation(self.variance)
        return self._scale

    @property
    def variance(self) -> torch.Tensor:
        if self._variance is None:
            if self._log_variance is not None:
                self._variance = self._log_variance.exp()
            else:
                self._variance = self._scale.square()
        return self._variance

    @property
    def log_variance(self) -> torch.Tensor | None:
        """The log-variance when the weight was built from it, else ``None``."""
        return self._log_variance

    def _draw(self) -> torch.Tensor:
        if self._source is not None:
            source, function = self._source
            return function(source.rsample())
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
    bias_mean, bias_var = moments(bias)
    if not isinstance(weight, GaussianWeight):
        # Only the bias is random: one independent bias draw per example.
        mean = batched_linear(input, materialize(weight), bias_mean)
        return bias_noise(mean, bias_var)
    return sampled_linear(input, weight.loc, bias_mean=bias_mean, bias_var=bias_var,
                          **_linear_moments(weight))  # fmt: skip


def _linear_moments(weight: GaussianWeight) -> dict[str, torch.Tensor]:
    """The weight's spread as :func:`sampled_linear` takes it: the log-variance where the weight
    has one and the variance was not needed yet (the fused kernel reads it directly)."""
    if weight.log_variance is not None and weight._variance is None:
        return {"weight_var": None, "weight_log_var": weight.log_variance}
    return {"weight_var": weight.variance}


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


@register_handler(GaussianWeight, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)
def _matmul(input, other):
    # x @ w with a Gaussian matrix w of shape (in, out) on the right (or (*sample, in, out)) is
    # F.linear(x, w.mT), with the same broadcasting of sample dimensions.
    if (
        isinstance(input, StochasticWeight)
        or not isinstance(other, GaussianWeight)
        or other.dim() < 2
        or input.dim() < 1
    ):
        return NotImplemented
    return sampled_linear(input, other.loc.mT, other.variance.mT)


def _transposed(function):
    """A handler for a ``function`` that only rearranges entries (a transpose, a reshape): the
    rearranged Gaussian, sharing the sample."""

    def handler(weight, *args, **kwargs):
        if not isinstance(weight, GaussianWeight) or weight._sample is not None:
            return NotImplemented
        if "dtype" in kwargs or any(isinstance(arg, torch.dtype) for arg in args):
            return NotImplemented  # view(dtype) reinterprets bits: only a sample has them

        def apply(value):
            return function(value, *args, **kwargs)

        return weight.derived(apply, apply(weight.loc), apply(weight.variance))

    return handler


for _function in (
    torch.t,
    torch.Tensor.t,
    torch.transpose,
    torch.Tensor.transpose,
    torch.Tensor.T.__get__,
    torch.Tensor.mT.__get__,
    # Rearrangements that keep every entry once: Pyro's vectorized Predictive reshapes the
    # guide's samples before the model sees them.
    torch.reshape,
    torch.Tensor.reshape,
    torch.Tensor.view,
    torch.squeeze,
    torch.Tensor.squeeze,
    torch.unsqueeze,
    torch.Tensor.unsqueeze,
):
    register_handler(GaussianWeight, _function)(_transposed(_function))


# One handler for both orders: it finds the Gaussian weight among its two arguments.
@register_handler(
    GaussianWeight, torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__
)
def _scaled(first, second):
    weight, scale = (first, second) if isinstance(first, GaussianWeight) else (second, first)
    if weight._sample is not None:
        # The sample exists: the product is that sample times the scale, a plain tensor.
        return NotImplemented
    if isinstance(scale, (int, float)):
        scale = torch.as_tensor(scale, dtype=weight.dtype, device=weight.device)
    # Imported here: ScaledWeight is built on GaussianWeight.
    from .random_scale import RandomScale
    from .scaled_weight import ScaledWeight

    if isinstance(scale, RandomScale):
        # A layer's weight times a random scale of its input units, w * z with z of shape (in,)
        # as for nn.Linear: per-example scales at the layer call.
        if scale._sample is None and weight.dim() == 2 and scale.shape == weight.shape[1:]:
            return ScaledWeight(weight, input_scale=scale)
        return NotImplemented
    if not torch.is_tensor(scale) or isinstance(scale, StochasticWeight):
        return NotImplemented
    # Only a scale that keeps the weight's shape: a broadcast to new dimensions would turn one
    # shared weight sample into independent ones.
    if torch.broadcast_shapes(weight.shape, scale.shape) != weight.shape:
        return NotImplemented
    return weight.derived(
        lambda sample: sample * scale, weight.loc * scale, weight.variance * scale.square()
    )
