"""``F.linear`` and ``F.convNd`` for weights with leading sample dimensions.

Vectorized inference (Pyro's ``Predictive(parallel=True)``, :func:`pyro_bnn.predict`) draws
``S`` posterior samples of a weight at once, under a plate to the left of the model's own
dimensions: a linear weight arrives with shape ``(*sample, out, in)`` and a conv weight with
``(*sample, out, in / groups, *kernel)``.  Torch's functionals accept only the unbatched layout;
these accept both, and are the plain functionals when there are no sample dimensions.

Inputs carry the sample dimensions to the left of their batch dimension, ``(*sample, B, in)``
or ``(*sample, B, C, *spatial)``, or none at all (the network's input, shared by every sample);
the output always has them: ``(*sample, B, out)`` or ``(*sample, B, out, *spatial)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def sample_shape(weight: torch.Tensor, event_dim: int) -> torch.Size:
    """The leading sample dimensions of a weight whose own layout has ``event_dim`` dims."""
    return weight.shape[: weight.dim() - event_dim]


def batched_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ weight.T + bias`` for ``weight`` of shape ``(*sample, out, in)``.

    :param x: ``(B, in)`` or ``(*sample, B, in)``.
    :param bias: ``(out,)`` or ``(*sample, out)``.
    """
    samples = sample_shape(weight, 2)
    if not samples and (bias is None or bias.dim() == 1):
        # F.linear broadcasts an input's sample dimensions, not a bias's (a Gaussian bias of a
        # plain weight under a vectorized plate): those take the path below.
        return F.linear(x, weight, bias)
    out_features, in_features = weight.shape[-2:]
    if x.dim() == 2:
        # One GEMM for all samples: (B, in) @ (in, S * out), instead of broadcasting x into a
        # (S, B, in) copy for a batched product.
        out = x @ weight.reshape(-1, in_features).T
        out = out.reshape(len(x), -1, out_features).transpose(0, 1)
        out = out.reshape(*samples, len(x), out_features)
    else:
        out = x @ weight.mT
    if bias is not None:
        out = out + bias.unsqueeze(-2)
    return out


def batched_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    spatial: int | None = None,
) -> torch.Tensor:
    """``F.conv{1,2,3}d`` for weights with sample dimensions.

    The ``S`` samples become ``S`` times as many groups of one grouped convolution: the input
    channels of every sample side by side, each group convolved with its own sample's kernel.

    :param x: ``(B, C, *spatial)`` or ``(*sample, B, C, *spatial)``.
    :param weight: ``(*sample, out, C / groups, *kernel)``.
    :param bias: ``(out,)`` or ``(*sample, out)``.
    :param spatial: the number of spatial dimensions (1, 2 or 3); by default the weight's
        dimensions minus two, i.e. a weight without sample dimensions.
    """
    spatial = weight.dim() - 2 if spatial is None else spatial
    if spatial not in CONVOLUTIONS:
        raise ValueError(f"no {spatial}-d convolution for a weight of shape {tuple(weight.shape)}")
    conv = CONVOLUTIONS[spatial]
    lead = x.shape[: x.dim() - spatial - 1]  # (*sample, B) or (B,)
    # Sample dimensions may come from any argument, not only the weight: an earlier layer's
    # output with a plain weight, or a Gaussian bias of a plain weight.
    samples = torch.broadcast_shapes(
        sample_shape(weight, spatial + 2), lead[:-1], () if bias is None else bias.shape[:-1]
    )
    if not samples:
        return conv(x, weight, bias, stride, padding, dilation, groups)
    num_samples, batch = math.prod(samples), lead[-1]
    channels = x.shape[-spatial - 1 :]
    x = x.expand(*samples, batch, *channels).reshape(num_samples, batch, *channels)
    x = x.transpose(0, 1).reshape(batch, num_samples * channels[0], *channels[1:])
    kernel = weight.expand(*samples, *weight.shape[-spatial - 2 :])
    kernel = kernel.reshape(-1, *weight.shape[-spatial - 1 :])
    if bias is not None:
        bias = bias.expand(*samples, bias.shape[-1]).reshape(-1)
    out = conv(x, kernel, bias, stride, padding, dilation, groups * num_samples)
    out = out.reshape(batch, num_samples, -1, *out.shape[2:]).transpose(0, 1)
    return out.reshape(*samples, batch, *out.shape[2:])
