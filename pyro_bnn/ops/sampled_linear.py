"""The local reparameterization trick: sample a layer's pre-activation, not its weights.

For a linear layer whose weights are independent Gaussians, w_ij ~ N(mu_ij, var_ij), the
pre-activation of one example is a sum of independent Gaussians and therefore itself Gaussian
(Kingma, Salimans and Welling, 2015)::

    b = x @ W.T  ~  N(x @ mu.T, x**2 @ var.T)

Sampling ``b`` directly gives every example its own effective weight sample at the cost of two
matrix products, instead of one weight sample shared by the whole mini-batch; the gradient
estimator has lower variance and no correlation across the batch.

The multiplicative noises of the seeds' layers fold into the same formula
(``reference/methods-from-seeds.md`` 8.2):

- an *input scale* ``s`` per example (or per batch) and input unit: Bayesian compression's
  group noise, q(w | z) = N(z mu, z^2 var), replaces ``x`` by ``x * s`` in both products; the
  multiplicative normalizing flow's q(W | z) = N(z mu, var) scales the mean's inputs only
  (``scale_variance=False``);
- an *output scale* ``z`` per example (or per batch) and output unit or channel::

      b = (x * mu + bias_mu) z + sqrt((x**2 * var + bias_var) z**2) eps

  (``*`` the product or convolution), which for convolutions is the mean-field local
  reparameterization: exact per output position, ignoring the correlation between overlapping
  patches; the flow's convolutions scale the mean only (``z**2`` dropped from the variance);
- a diagonal matrix-normal weight MN(M, diag(row_var), diag(col_var)), whose entries are
  independent with variance ``row_var[i] * col_var[j]``: the variance of the pre-activation
  is ``(x**2 @ row_var) * col_var``, one GEMV next to the mean's GEMM.

No function builds a (batch, in, out) temporary: the variance is one more GEMM (or
convolution) with squared inputs.  Weights may carry leading sample dimensions
(:mod:`~pyro_bnn.ops.batched`).

On CUDA with Triton installed, :func:`sampled_linear` without ``noise`` runs the fused kernel
of :mod:`~pyro_bnn.ops.fused_linear` (both products from one read of the inputs, the
noise drawn in the kernel); everything else is the torch code below, the reference the kernel
is tested against.
"""

from __future__ import annotations

import torch

from .batched import batched_conv, batched_linear
from .fused_linear import fused_kernel_applies, fused_sampled_linear


def _standard_deviation(variance: torch.Tensor) -> torch.Tensor:
    # The variance is exactly zero when an input row is all zeros (dead ReLUs) and no bias
    # variance is given; sqrt has an infinite derivative there, and inf * 0 is NaN.  Clamping at
    # the smallest normal number keeps the value and makes the gradient exactly zero instead.
    return variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt()


def _check_moments(weight_mean, weight_var, bias_mean, bias_var) -> None:
    if weight_mean.shape != weight_var.shape:
        raise ValueError(
            f"weight_mean {tuple(weight_mean.shape)} and weight_var {tuple(weight_var.shape)} "
            "must have the same shape"
        )
    if bias_var is not None and bias_mean is None:
        raise ValueError("bias_var is given without bias_mean")


def _check_noise(noise: torch.Tensor | None, mean: torch.Tensor) -> torch.Tensor:
    if noise is None:
        return torch.randn_like(mean)
    if noise.shape != mean.shape:
        raise ValueError(
            f"noise has shape {tuple(noise.shape)} but the pre-activation has shape "
            f"{tuple(mean.shape)}; pass one standard-normal draw per output"
        )
    return noise


def sampled_linear(
    x: torch.Tensor,
    weight_mean: torch.Tensor,
    weight_var: torch.Tensor | None,
    bias_mean: torch.Tensor | None = None,
    bias_var: torch.Tensor | None = None,
    input_scale: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    *,
    output_scale: torch.Tensor | None = None,
    scale_variance: bool = True,
    weight_log_var: torch.Tensor | None = None,
) -> torch.Tensor:
    """A sample of ``x @ W.T + b`` for independent Gaussian ``W`` and ``b``, per example.

    :param x: inputs, shape ``(..., in)``.
    :param weight_mean: posterior means, shape ``(out, in)`` (``nn.Linear`` layout), or
        ``(*sample, out, in)``.
    :param weight_var: posterior variances, same shape as ``weight_mean``.
    :param bias_mean: optional bias means, shape ``(out,)``.
    :param bias_var: optional bias variances, shape ``(out,)``; needs ``bias_mean``.
    :param input_scale: optional multiplicative noise on the inputs, broadcastable to ``x``
        (one value per example and input unit, or per input unit).
    :param noise: optional standard-normal draws of shape ``(..., out)``; drawn with
        ``torch.randn`` when omitted (by the fused kernel on CUDA, see the module's
        docstring).  Passing it makes the output a deterministic function, which tests use.
    :param output_scale: optional multiplicative noise per example (or per batch) and output
        unit, broadcastable to the output; scales the mean by z and the variance by z**2.
    :param scale_variance: whether the scales enter the variance too (Bayesian compression:
        ``z**2`` on the variance) or only the mean (multiplicative normalizing flows).
    :param weight_log_var: the log-variances instead of ``weight_var`` (pass ``None`` there):
        a mean-field guide's parameters as they are; the fused kernel exponentiates them as it
        reads them.
    :returns: ``(x s) @ mu.T + b_mu + sqrt((x s)**2 @ var.T + b_var) * noise``, of shape
        ``(..., out)`` (with ``x``, not ``x s``, in the variance when ``scale_variance`` is
        false).
    """
    if (weight_var is None) == (weight_log_var is None):
        raise ValueError("give exactly one of weight_var and weight_log_var")
    spread = weight_var if weight_log_var is None else weight_log_var
    _check_moments(weight_mean, spread, bias_mean, bias_var)
    if noise is None and fused_kernel_applies(
        x, weight_mean, spread, bias_mean, bias_var, input_scale, output_scale
    ):
        return fused_sampled_linear(
            x, weight_mean, weight_var, bias_mean, bias_var, input_scale,
            output_scale=output_scale, scale_variance=scale_variance,
            weight_log_var=weight_log_var,
        )  # fmt: skip
    if weight_var is None:
        weight_var = weight_log_var.exp()
    scaled = x if input_scale is None else x * input_scale
    mean = batched_linear(scaled, weight_mean, bias_mean)
    variance = batched_linear((scaled if scale_variance else x).square(), weight_var, bias_var)
    return _sample(mean, variance, output_scale, noise, scale_variance)


def sampled_conv(
    x: torch.Tensor,
    weight_mean: torch.Tensor,
    weight_var: torch.Tensor,
    bias_mean: torch.Tensor | None = None,
    bias_var: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    input_scale: torch.Tensor | None = None,
    output_scale: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    *,
    scale_variance: bool = True,
    spatial: int | None = None,
) -> torch.Tensor:
    """The convolutional sibling of :func:`sampled_linear` (mean-field local reparameterization)
    for 1-, 2- and 3-d convolutions.

    :param x: inputs, shape ``(batch, in_channels, *spatial)``.
    :param weight_mean: shape ``(out_channels, in_channels / groups, *kernel)``, optionally
        with leading sample dimensions.
    :param weight_var: same shape as ``weight_mean``.
    :param bias_mean: optional, shape ``(out_channels,)``.
    :param bias_var: optional, shape ``(out_channels,)``; needs ``bias_mean``.
    :param stride, padding, dilation, groups: as in :func:`torch.nn.functional.conv2d`.
    :param input_scale: optional multiplicative noise per example and input channel, shape
        ``(batch, in_channels)``, or per input channel, ``(in_channels,)``.
    :param output_scale: optional multiplicative noise per example and output channel, shape
        ``(batch, out_channels)``, or per channel; it scales the mean by z and, with
        ``scale_variance``, the variance by z**2.
    :param noise: optional standard-normal draws with the output's shape.
    :param scale_variance: as in :func:`sampled_linear`.
    :param spatial: the number of spatial dimensions; by default ``weight_mean.dim() - 2``.
    :returns: a sample of the pre-activation, shape ``(batch, out_channels, *spatial_out)``.
    """
    _check_moments(weight_mean, weight_var, bias_mean, bias_var)
    spatial = weight_mean.dim() - 2 if spatial is None else spatial
    args = (stride, padding, dilation, groups, spatial)
    scaled = x if input_scale is None else x * _per_channel(input_scale, spatial)
    mean = batched_conv(scaled, weight_mean, bias_mean, *args)
    variance = batched_conv((scaled if scale_variance else x).square(), weight_var, bias_var, *args)
    if output_scale is not None:
        output_scale = _per_channel(output_scale, spatial)
    return _sample(mean, variance, output_scale, noise, scale_variance)


def sampled_conv2d(x, weight_mean, weight_var, *args, **kwargs) -> torch.Tensor:
    """:func:`sampled_conv` for a 2-d convolution."""
    return sampled_conv(x, weight_mean, weight_var, *args, spatial=2, **kwargs)


def matrix_normal_linear(
    x: torch.Tensor,
    weight_mean: torch.Tensor,
    row_var: torch.Tensor,
    col_var: torch.Tensor,
    bias_mean: torch.Tensor | None = None,
    bias_var: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """A sample of ``x @ W.T + b`` for a diagonal matrix-normal ``W`` (thesis Sec. 2.2).

    ``W ~ MN(M, diag(col_var), diag(row_var))`` in the ``nn.Linear`` layout ``(out, in)``: the
    entries are independent with ``Var W[j, i] = col_var[j] * row_var[i]``, so::

        b ~ N(x @ M.T + b_mu, (x**2 @ row_var) * col_var + b_var)

    which costs one GEMM (the mean) and one GEMV (the variance).

    :param x: inputs, shape ``(..., in)``.
    :param weight_mean: ``M``, shape ``(out, in)``, optionally with leading sample dimensions.
    :param row_var: variances of the input rows, shape ``(in,)`` (or ``(*sample, in)``).
    :param col_var: variances of the output columns, shape ``(out,)`` (or ``(*sample, out)``).
    :returns: a sample of the pre-activation, shape ``(..., out)``.
    """
    _check_matrix_normal(weight_mean, row_var, col_var, 2)
    mean = batched_linear(x, weight_mean, bias_mean)
    variance = (x.square() @ row_var.unsqueeze(-1)) * col_var.unsqueeze(-2)
    if bias_var is not None:
        variance = variance + bias_var.unsqueeze(-2)
    return _sample(mean, variance, None, noise)


def matrix_normal_conv(
    x: torch.Tensor,
    weight_mean: torch.Tensor,
    row_var: torch.Tensor,
    col_var: torch.Tensor,
    bias_mean: torch.Tensor | None = None,
    bias_var: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    noise: torch.Tensor | None = None,
    *,
    spatial: int | None = None,
) -> torch.Tensor:
    """:func:`matrix_normal_linear` for convolutions: the kernel of output channel ``j`` has
    entries of variance ``col_var[j] * row_var[c, k...]``, so the variance of each output is
    ``conv(x**2, row_var) * col_var`` (one single-channel convolution per group).

    :param weight_mean: ``(out, in / groups, *kernel)``, optionally with sample dimensions.
    :param row_var: ``(in / groups, *kernel)`` (or with sample dimensions).
    :param col_var: ``(out,)`` (or with sample dimensions).
    """
    spatial = weight_mean.dim() - 2 if spatial is None else spatial
    _check_matrix_normal(weight_mean, row_var, col_var, spatial + 2)
    args = (stride, padding, dilation, groups, spatial)
    mean = batched_conv(x, weight_mean, bias_mean, *args)
    # One kernel per group, all groups' rows alike: (*sample, groups, in / groups, *kernel).
    rows = row_var.unsqueeze(-spatial - 2)
    rows = rows.expand(*rows.shape[: -spatial - 2], groups, *rows.shape[-spatial - 1 :])
    variance = batched_conv(x.square(), rows, None, *args)
    out_channels = weight_mean.shape[-spatial - 2]
    variance = variance.repeat_interleave(out_channels // groups, dim=-spatial - 1)
    variance = variance * _per_channel(col_var, spatial).unsqueeze(-spatial - 2)
    if bias_var is not None:
        variance = variance + _per_channel(bias_var, spatial).unsqueeze(-spatial - 2)
    return _sample(mean, variance, None, noise)


def _per_channel(value: torch.Tensor, spatial: int) -> torch.Tensor:
    """``(..., C)`` -> ``(..., C, 1, ..., 1)``, to broadcast against ``(..., C, *spatial)``."""
    return value.reshape(*value.shape, *(1,) * spatial)


def _sample(mean, variance, output_scale, noise, scale_variance: bool = True) -> torch.Tensor:
    if output_scale is not None:
        mean = mean * output_scale
        if scale_variance:
            variance = variance * output_scale.square()
    return mean + _standard_deviation(variance) * _check_noise(noise, mean)


def _check_matrix_normal(weight_mean, row_var, col_var, event_dim: int) -> None:
    rows, cols = weight_mean.shape[-event_dim + 1 :], weight_mean.shape[-event_dim]
    if row_var.shape[-event_dim + 1 :] != rows or col_var.shape[-1:] != (cols,):
        raise ValueError(
            f"a matrix-normal weight of shape {tuple(weight_mean.shape[-event_dim:])} needs "
            f"row variances of shape {tuple(rows)} and column variances of shape ({cols},); "
            f"got {tuple(row_var.shape)} and {tuple(col_var.shape)}"
        )
