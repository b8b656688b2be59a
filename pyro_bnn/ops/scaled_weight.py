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

from .batched import CONVOLUTIONS
from .gaussian_weight import GaussianWeight, bias_noise, moments
from .random_scale import RandomScale
from .sampled_linear import _per_channel, sampled_conv, sampled_linear
from .stochastic_weight import (
    StochasticWeight,
    materialize,
    register_conv_handler,
    register_handler,
)


class ScaledWeight(StochasticWeight):
    """``w = z_in * z_out * v`` with ``v`` a :class:`GaussianWeight` (or a plain tensor) and
    scales ``z``.

    :param weight: the weight ``v``, in the layer's layout (``(out, in)`` or
        ``(out, in / groups, *kernel)``): a :class:`GaussianWeight`, or an ordinary tensor for a
        deterministic weight under random noise (L0 gates, structured Bayesian pruning).
    :param input_scale: a scale per input unit (channel), shape ``(in,)``, or per example and
        input unit, shape ``(batch, in)``, or a :class:`~pyro_bnn.ops.RandomScale` of shape
        ``(in,)``, drawn afresh for every example of the layer's input; ``in`` is
        ``weight.shape[1]``, which for a grouped convolution is ``in / groups``: a scale per
        kernel input channel, shared by the groups.
    :param output_scale: a scale per output unit (channel), ``(out,)``, ``(batch, out)`` or a
        :class:`~pyro_bnn.ops.RandomScale` of shape ``(out,)``.
    :param scale_variance: ``True``: the scales multiply the whole weight (mean and standard
        deviation); ``False``: only its mean (multiplicative normalizing flows, q(W | z) =
        N(z mu, sigma^2)).

    Materializing (any use other than a layer call) needs scales without an example dimension;
    random scales then contribute one draw each.
    """

    @staticmethod
    def __new__(
        cls,
        weight: torch.Tensor,
        input_scale: torch.Tensor | None = None,
        output_scale: torch.Tensor | None = None,
        scale_variance: bool = True,
    ):
        if isinstance(weight, StochasticWeight) and not isinstance(weight, GaussianWeight):
            raise TypeError(
                f"ScaledWeight scales a GaussianWeight or a plain tensor, got "
                f"{type(weight).__name__}"
            )
        if weight.dim() < 2:
            raise ValueError(
                f"ScaledWeight needs a layer's weight, got shape {tuple(weight.shape)}"
            )
        for name, scale, size in (
            ("input_scale", input_scale, weight.shape[1]),
            ("output_scale", output_scale, weight.shape[0]),
        ):
            if scale is None:
                continue
            if isinstance(scale, RandomScale):
                if scale.shape != (size,):
                    raise ValueError(
                        f"a random {name} must have shape ({size},) for a weight of shape "
                        f"{tuple(weight.shape)}, got {tuple(scale.shape)}"
                    )
            elif scale.dim() not in (1, 2) or scale.shape[-1] != size:
                raise ValueError(
                    f"{name} must have shape ({size},) or (batch, {size}) for a weight of shape "
                    f"{tuple(weight.shape)}, got {tuple(scale.shape)}"
                )
        result = StochasticWeight.__new__(cls, _mean(weight))
        result.weight = weight
        result.input_scale = input_scale
        result.output_scale = output_scale
        result.scale_variance = scale_variance
        return result

    def _draw(self) -> torch.Tensor:
        for scale in (self.input_scale, self.output_scale):
            if scale is not None and not isinstance(scale, RandomScale) and scale.dim() > 1:
                raise ValueError(
                    "a weight with a scale per example has no single sample; it can only be "
                    "used as the weight of F.linear or F.conv1d/2d/3d"
                )
        extra = (1,) * (self.dim() - 2)
        input_scale, output_scale = map(materialize, (self.input_scale, self.output_scale))
        loc, std = _mean(self.weight), _std(self.weight)
        for scale in (
            None if input_scale is None else input_scale.reshape(1, -1, *extra),
            None if output_scale is None else output_scale.reshape(-1, 1, *extra),
        ):
            if scale is not None:
                loc = loc * scale
                std = std * scale if std is not None and self.scale_variance else std
        return loc if std is None else torch.addcmul(loc, std, torch.randn_like(loc))


def _mean(weight: torch.Tensor) -> torch.Tensor:
    return weight.loc if isinstance(weight, GaussianWeight) else weight


def _std(weight: torch.Tensor) -> torch.Tensor | None:
    return weight.scale if isinstance(weight, GaussianWeight) else None


def scale_groups(weight: torch.Tensor, scale: torch.Tensor, dim: int) -> torch.Tensor:
    """``weight`` with the units along ``dim`` (1: input units, 0: output units) multiplied by
    ``scale``, shape ``(weight.shape[dim],)``.

    A :class:`RandomScale` (per-example draws) becomes a :class:`ScaledWeight`, whose layer call
    is locally reparameterized in the scale as well as in the weight (thesis Alg. 5-8); a plain
    tensor scale gives the plain product, which a Gaussian weight keeps Gaussian.
    """
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 (output units) or 1 (input units), got {dim}")
    size = weight.shape[dim]
    if tuple(scale.shape) != (size,):
        raise ValueError(
            f"the scale of the units along dim {dim} of a weight of shape {tuple(weight.shape)} "
            f"must have shape ({size},), got {tuple(scale.shape)}"
        )
    if isinstance(scale, RandomScale):
        if isinstance(weight, RandomScale) or (
            isinstance(weight, StochasticWeight) and not isinstance(weight, GaussianWeight)
        ):
            raise TypeError(f"cannot scale a {type(weight).__name__} by a random scale")
        if dim == 1:
            return ScaledWeight(weight, input_scale=scale)
        return ScaledWeight(weight, output_scale=scale)
    view = [1] * weight.dim()
    view[dim] = size
    return weight * scale.reshape(view)


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


def _examples(input: torch.Tensor, event_dim: int) -> int | None:
    return input.shape[-event_dim - 1] if input.dim() > event_dim else None


def _scales(weight: ScaledWeight, input: torch.Tensor, event_dim: int):
    """The input and output scales for this call: a random scale is drawn once per example of
    the input.  A scale per example must have one row per example of the input: broadcasting
    one example's input against many scales would silently make up examples."""
    batch = _examples(input, event_dim)
    scales = []
    for name, scale in (("input_scale", weight.input_scale), ("output_scale", weight.output_scale)):
        if isinstance(scale, RandomScale):
            scale = scale.draw(() if batch is None else (batch,))
        elif scale is not None and scale.dim() == 2 and scale.shape[0] != batch:
            raise ValueError(
                f"the weight's {name} has a row per example ({scale.shape[0]} rows), but the "
                f"layer's input has {batch} examples (shape {tuple(input.shape)})"
            )
        scales.append(scale)
    return scales


@register_handler(ScaledWeight, F.linear)
def _linear(input, weight, bias=None):
    if isinstance(input, StochasticWeight) or not isinstance(weight, ScaledWeight):
        return NotImplemented
    input_scale, output_scale = _scales(weight, input, 1)
    if not isinstance(weight.weight, GaussianWeight):
        scaled = input if input_scale is None else input * input_scale
        out = F.linear(scaled, weight.weight)
        out = out if output_scale is None else out * output_scale
        return _add_bias(out, None if bias is None else moments(bias), 0)
    op_bias, after = _split_bias(weight, bias)
    out = sampled_linear(
        input,
        weight.weight.loc,
        weight.weight.variance,
        *op_bias,
        input_scale=input_scale,
        output_scale=output_scale,
        scale_variance=weight.scale_variance,
    )
    return _add_bias(out, after, 0)


@register_conv_handler(ScaledWeight)
def _conv(spatial, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(input, StochasticWeight) or not isinstance(weight, ScaledWeight):
        return NotImplemented
    input_scale, output_scale = _scales(weight, input, spatial + 1)
    if input_scale is not None and groups > 1:
        # The scale is per kernel input channel (weight.shape[1] = in / groups), as in the
        # materialized sample; the op's is per input channel: the same scales for every group.
        input_scale = input_scale.repeat(*(1,) * (input_scale.dim() - 1), groups)
    if not isinstance(weight.weight, GaussianWeight):
        scaled = input if input_scale is None else input * _per_channel(input_scale, spatial)
        out = CONVOLUTIONS[spatial](scaled, weight.weight, None, stride, padding, dilation, groups)
        out = out if output_scale is None else out * _per_channel(output_scale, spatial)
        return _add_bias(out, None if bias is None else moments(bias), spatial)
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
        output_scale=output_scale,
        scale_variance=weight.scale_variance,
        spatial=spatial,
    )
    return _add_bias(out, after, spatial)
