"""A diagonal matrix-normal weight (the thesis's matrix-variate Gaussian posterior, Sec. 2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .gaussian_weight import moments
from .sampled_linear import _standard_deviation, matrix_normal_conv, matrix_normal_linear
from .stochastic_weight import StochasticWeight, register_conv_handler, register_handler


class MatrixNormalWeight(StochasticWeight):
    """``W ~ MN(M, diag(col_var), diag(row_var))`` in a layer's layout.

    For ``nn.Linear`` (``(out, in)``) the rows of the thesis's ``in x out`` matrix are the input
    units and its columns the output units: ``Var W[j, i] = col_var[j] * row_var[i]``.  For a
    convolution ``(out, in / groups, *kernel)`` a "row" is one input channel and kernel position:
    ``row_var`` has shape ``(in / groups, *kernel)``.  A layer call samples the pre-activation
    with variance ``(x**2 @ row_var) * col_var`` (:func:`~pyro_bnn.ops.matrix_normal_linear`).

    :param loc: the mean ``M``, optionally with leading sample dimensions ``(*sample, out,
        *row)``.
    :param row_var: positive row variances, shape ``loc.shape[1:]`` (or ``(*sample, *row)``).
    :param col_var: positive column variances, shape ``(loc.shape[0],)`` (or ``(*sample,
        out)``); its leading dimensions are the sample dimensions of all three.
    """

    @staticmethod
    def __new__(cls, loc: torch.Tensor, row_var: torch.Tensor, col_var: torch.Tensor):
        # The sample dimensions (a vectorized plate's, as for GaussianWeight) are those of
        # col_var, (*sample, out): loc.shape alone cannot tell them from a kernel's.
        samples = col_var.shape[:-1] if 1 <= col_var.dim() <= loc.dim() - 1 else ()
        n = len(samples)
        rows = samples + loc.shape[n + 1 :]
        if loc.dim() < n + 2 or row_var.shape != rows or col_var.shape != loc.shape[: n + 1]:
            raise ValueError(
                f"a matrix-normal weight of shape {tuple(loc.shape)} needs row_var of shape "
                f"{tuple(rows)} and col_var of shape {tuple(loc.shape[: n + 1])}, got "
                f"{tuple(row_var.shape)} and {tuple(col_var.shape)} (leading sample dimensions, "
                "if any, on all three)"
            )
        weight = StochasticWeight.__new__(cls, loc)
        weight.loc, weight.row_var, weight.col_var = loc, row_var, col_var
        return weight

    @property
    def variance(self) -> torch.Tensor:
        """The entries' variances, ``col_var[..., j] * row_var[..., i...]``."""
        n = self.col_var.dim() - 1  # sample dimensions
        col_var = self.col_var.reshape(*self.col_var.shape, *(1,) * (self.row_var.dim() - n))
        return col_var * self.row_var.unsqueeze(n)

    def _draw(self) -> torch.Tensor:
        std = _standard_deviation(self.variance)
        return torch.addcmul(self.loc, std, torch.randn_like(self.loc))


@register_handler(MatrixNormalWeight, F.linear)
def _linear(input, weight, bias=None):
    if isinstance(input, StochasticWeight) or not isinstance(weight, MatrixNormalWeight):
        return NotImplemented
    bias_mean, bias_var = moments(bias)
    return matrix_normal_linear(
        input, weight.loc, weight.row_var, weight.col_var, bias_mean, bias_var
    )


@register_conv_handler(MatrixNormalWeight)
def _conv(spatial, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(input, StochasticWeight) or not isinstance(weight, MatrixNormalWeight):
        return NotImplemented
    bias_mean, bias_var = moments(bias)
    return matrix_normal_conv(
        input, weight.loc, weight.row_var, weight.col_var, bias_mean, bias_var,
        stride, padding, dilation, groups, spatial=spatial,
    )  # fmt: skip
