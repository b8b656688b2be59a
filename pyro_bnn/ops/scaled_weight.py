"""A Gaussian weight times multiplicative noise on its inputs or outputs.

The seeds' structured methods multiply a Gaussian weight by a random scale shared by a group of
weights: Bayesian compression's group noise ``z`` per input neuron (q(w_ij | z_i) =
N(z_i mu_ij, z_i^2 sigma_ij^2)), hard-concrete gates per input neuron or output channel, and
the multiplicative normalizing flow's ``z``, which scales only the mean (q(W | z) =
N(z mu, sigma^2)) (``reference/methods-from-seeds.md`` 8.2, cases 3 and 4).  When the scale is
drawn per example, no single weight tensor represents the product, but the pre-activation is
still exactly Gaussian given the scales, which :func:`~pyro_bnn.ops.sampled_linear` samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .gaussian_weight import GaussianWeight, bias_noise, moments
from .sampled_linear import _per_channel, sampled_conv, sampled_linear
from .stochastic_weight import StochasticWeight, register_conv_handler, register_handler


class ScaledWeight(StochasticWeight):
    """``w = z_in * z_out * v`` with ``v`` a :class:`GaussianWeight` and scales ``z``.

    :param weight: the Gaussian weight ``v``, in the layer's layout (``(out, in)`` or
        ``(out, in / groups, *kernel)``).
    :param input_scale: a scale per input unit (channel), shape ``(in,)``, or per example and
        input unit, shape ``(batch, in)``; ``in`` is ``weight.shape[1]``, which for a grouped
        convolution is ``in / groups``: a scale per kernel input channel, shared by the groups.
    :param output_scale: a scale per output unit (channel), ``(out,)`` or ``(batch, out)``.
    :param scale_variance: ``True``: the input scale multiplies the whole weight (mean and
        standard deviation); ``False``: only its mean (multiplicative normalizing flows).
        The output scale always multiplies the whole weight.

    Materializing (any use other than a layer call) needs scales without an example dimension.
    """

    @staticmethod
    def __new__(
        cls,
        weight: GaussianWeight,
        input_scale: torch.Tensor | None = None,
        output_scale: torch.Tensor | None = None,
        scale_variance: bool = True,
    ):
        if not isinstance(weight, GaussianWeight):
            raise TypeError(f"ScaledWeight scales a GaussianWeight, got {type(weight).__name__}")
        if weight.dim() < 2:
            raise ValueError(
                f"ScaledWeight needs a layer's weight, got shape {tuple(weight.shape)}"
            )
        for name, scale, size in (
            ("input_scale", input_scale, weight.shape[1]),
            ("output_scale", output_scale, weight.shape[0]),
        ):
            if scale is not None and (scale.dim() not in (1, 2) or scale.shape[-1] != size):
                raise ValueError(
                    f"{name} must have shape ({size},) or (batch, {size}) for a weight of shape "
                    f"{tuple(weight.shape)}, got {tuple(scale.shape)}"
                )
        result = StochasticWeight.__new__(cls, weight.loc)
        result.weight = weight
        result.input_scale = input_scale
        result.output_scale = output_scale
        result.scale_variance = scale_variance
        return result

    def _draw(self) -> torch.Tensor:
        for scale in (self.input_scale, self.output_scale):
            if scale is not None and scale.dim() > 1:
                raise ValueError(
                    "a weight with a scale per example has no single sample; it can only be "
                    "used as the weight of F.linear or F.conv1d/2d/3d"
                )
        extra = (1,) * (self.dim() - 2)
        loc, std = self.weight.loc, self.weight.scale
        if self.input_scale is not None:
            scale = self.input_scale.reshape(1, -1, *extra)
            loc = loc * scale
            std = std * scale if self.scale_variance else std
        sample = torch.addcmul(loc, std, torch.randn_like(loc))
        if self.output_scale is not None:
            sample = sample * self.output_scale.reshape(-1, 1, *extra)
        return sample


def _split_bias(weight: ScaledWeight, bias):
    """The bias moments to hand the op, and those to add after it (or ``None``).

    The ops' ``output_scale`` multiplies the bias too (the seeds' ``(x * mu + b) z``), but the
    layer is ``F.linear(x, z_out * v, b)``: the scale belongs to the weight alone, as in the
    materialized sample.  Such a bias is added afterwards, with its own noise if Gaussian.
    """
    bias_moments = moments(bias)
    if weight.output_scale is not None and bias is not None:
        return (None, None), bias_moments
    return bias_moments, None


def _add_bias(out: torch.Tensor, after, spatial: int) -> torch.Tensor:
    if after is None:
        return out
    bias_mean, bias_var = after
    return bias_noise(out + _per_channel(bias_mean, spatial), bias_var, spatial)


def _check_examples(weight: ScaledWeight, input: torch.Tensor, event_dim: int) -> None:
    """A scale per example must have one row per example of the input: broadcasting one
    example's input against many scales would silently make up examples."""
    batch = input.shape[-event_dim - 1] if input.dim() > event_dim else None
    for name, scale in (("input_scale", weight.input_scale), ("output_scale", weight.output_scale)):
        if scale is not None and scale.dim() == 2 and scale.shape[0] != batch:
            raise ValueError(
                f"the weight's {name} has a row per example ({scale.shape[0]} rows), but the "
                f"layer's input has {batch} examples (shape {tuple(input.shape)})"
            )


@register_handler(ScaledWeight, F.linear)
def _linear(input, weight, bias=None):
    if isinstance(input, StochasticWeight) or not isinstance(weight, ScaledWeight):
        return NotImplemented
    _check_examples(weight, input, 1)
    op_bias, after = _split_bias(weight, bias)
    out = sampled_linear(
        input,
        weight.weight.loc,
        weight.weight.variance,
        *op_bias,
        input_scale=weight.input_scale,
        output_scale=weight.output_scale,
        scale_variance=weight.scale_variance,
    )
    return _add_bias(out, after, 0)


@register_conv_handler(ScaledWeight)
def _conv(spatial, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(input, StochasticWeight) or not isinstance(weight, ScaledWeight):
        return NotImplemented
    _check_examples(weight, input, spatial + 1)
    input_scale = weight.input_scale
    if input_scale is not None and groups > 1:
        # The scale is per kernel input channel (weight.shape[1] = in / groups), as in the
        # materialized sample; the op's is per input channel: the same scales for every group.
        input_scale = input_scale.repeat(*(1,) * (input_scale.dim() - 1), groups)
    op_bias, after = _split_bias(weight, bias)
    out = sampled_conv(
        input,
        weight.weight.loc,
        weight.weight.variance,
        *op_bias,
        stride,
        padding,
        dilation,
        groups,
        input_scale=input_scale,
        output_scale=weight.output_scale,
        scale_variance=weight.scale_variance,
        spatial=spatial,
    )
    return _add_bias(out, after, spatial)
