"""The local reparameterization trick: sample a layer's pre-activation, not its weights.

For a linear layer whose weights are independent Gaussians, w_ij ~ N(mu_ij, var_ij), the
pre-activation of one example is a sum of independent Gaussians and therefore itself Gaussian
(Kingma, Salimans and Welling, 2015)::

    b = x @ W.T  ~  N(x @ mu.T, x**2 @ var.T)

Sampling ``b`` directly gives every example its own effective weight sample at the cost of two
matrix products, instead of one weight sample shared by the whole mini-batch; the gradient
estimator has lower variance and no correlation across the batch.

Two multiplicative noises of the Bayesian compression layers fold into the same formula:

- an *input scale* ``s`` per example and input unit (Bayesian compression's group noise z):
  ``x`` is replaced by ``x * s`` in both products;
- for convolutions, an *output scale* ``z`` per example and output channel::

      b = (x * mu + bias_mu) z + sqrt((x**2 * var + bias_var) z**2) eps

  (``*`` the convolution), which is the mean-field local reparameterization for convolutions:
  exact per output position, ignoring the correlation between overlapping patches.

Neither function builds a (batch, in, out) temporary: the variance is one more GEMM (or
convolution) with squared inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    weight_var: torch.Tensor,
    bias_mean: torch.Tensor | None = None,
    bias_var: torch.Tensor | None = None,
    input_scale: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """A sample of ``x @ W.T + b`` for independent Gaussian ``W`` and ``b``, per example.

    :param x: inputs, shape ``(..., in)``.
    :param weight_mean: posterior means, shape ``(out, in)`` (``nn.Linear`` layout).
    :param weight_var: posterior variances, shape ``(out, in)``.
    :param bias_mean: optional bias means, shape ``(out,)``.
    :param bias_var: optional bias variances, shape ``(out,)``; needs ``bias_mean``.
    :param input_scale: optional multiplicative noise on the inputs, broadcastable to ``x``
        (one value per example and input unit).
    :param noise: optional standard-normal draws of shape ``(..., out)``; drawn with
        ``torch.randn`` when omitted.  Passing it makes the output a deterministic function,
        which tests use.
    :returns: ``(x s) @ mu.T + b_mu + sqrt((x s)**2 @ var.T + b_var) * noise``, of shape
        ``(..., out)``.
    """
    _check_moments(weight_mean, weight_var, bias_mean, bias_var)
    if input_scale is not None:
        x = x * input_scale
    mean = F.linear(x, weight_mean, bias_mean)
    variance = F.linear(x.square(), weight_var, bias_var)
    return mean + _standard_deviation(variance) * _check_noise(noise, mean)


def sampled_conv2d(
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
) -> torch.Tensor:
    """The convolutional sibling of :func:`sampled_linear` (mean-field local reparameterization).

    :param x: inputs, shape ``(batch, in_channels, height, width)``.
    :param weight_mean: shape ``(out_channels, in_channels / groups, kh, kw)``.
    :param weight_var: same shape as ``weight_mean``.
    :param bias_mean: optional, shape ``(out_channels,)``.
    :param bias_var: optional, shape ``(out_channels,)``; needs ``bias_mean``.
    :param stride, padding, dilation, groups: as in :func:`torch.nn.functional.conv2d`.
    :param input_scale: optional multiplicative noise per example and input channel, shape
        ``(batch, in_channels)``.
    :param output_scale: optional multiplicative noise per example and output channel, shape
        ``(batch, out_channels)``; it scales the mean by z and the variance by z**2.
    :param noise: optional standard-normal draws with the output's shape.
    :returns: a sample of the pre-activation, shape ``(batch, out_channels, h_out, w_out)``.
    """
    _check_moments(weight_mean, weight_var, bias_mean, bias_var)
    if input_scale is not None:
        x = x * input_scale[..., None, None]
    mean = F.conv2d(x, weight_mean, bias_mean, stride, padding, dilation, groups)
    variance = F.conv2d(x.square(), weight_var, bias_var, stride, padding, dilation, groups)
    if output_scale is not None:
        output_scale = output_scale[..., None, None]
        mean = mean * output_scale
        variance = variance * output_scale.square()
    return mean + _standard_deviation(variance) * _check_noise(noise, mean)
