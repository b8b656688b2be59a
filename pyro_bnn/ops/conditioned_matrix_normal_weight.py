"""A diagonal matrix-normal weight conditioned on pseudo-data (thesis Sec. 3.2.5, Eq. 39-45)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batched import batched_linear
from .gaussian_weight import moments
from .matrix_normal_weight import MatrixNormalWeight
from .sampled_linear import _sample
from .stochastic_weight import StochasticWeight, register_handler

#: The jitter of the pseudo-data's kernel matrix, relative to its mean diagonal: the thesis's
#: "noisy pseudo-observations" (an absolute 1e-8 in double precision; float32 needs more).
RELATIVE_JITTER = 1e-6


def _kernel_cholesky(
    pseudo_inputs: torch.Tensor, row_var: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Cholesky factor of ``S = A~ diag(row_var) A~^T + jitter I``, ``(..., P, P)``, and the
    jitter, ``(..., 1)``."""
    kernel = (pseudo_inputs * row_var.unsqueeze(-2)) @ pseudo_inputs.mT
    diagonal = kernel.diagonal(dim1=-2, dim2=-1)
    jitter = RELATIVE_JITTER * diagonal.mean(-1, keepdim=True) + torch.finfo(kernel.dtype).tiny
    kernel = kernel + torch.diag_embed(jitter.expand_as(diagonal))
    return torch.linalg.cholesky(kernel), jitter


def conditioned_matrix_normal_linear(
    x: torch.Tensor,
    weight_mean: torch.Tensor,
    row_var: torch.Tensor,
    col_var: torch.Tensor,
    pseudo_inputs: torch.Tensor,
    pseudo_outputs: torch.Tensor,
    bias_mean: torch.Tensor | None = None,
    bias_var: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """A sample of ``x @ W.T + b`` for ``W ~ MN(M, diag(col_var), diag(row_var))`` conditioned
    on the layer mapping the pseudo-inputs ``A~`` to the pseudo-outputs ``B~`` (Eq. 40)::

        b_i ~ N(x_i M^T + s_i^T S^-1 (B~ - A~ M^T),  (x_i^2 @ row_var - s_i^T S^-1 s_i) col_var)

    with ``S = A~ diag(row_var) A~^T`` (plus a small jitter) and ``s_i = A~ diag(row_var)
    x_i^T``: the Gaussian-process reading of the matrix normal, whose kernel over the layer's
    inputs is linear with weights ``row_var``.  One ``P x P`` Cholesky factorization per call,
    ``P`` the number of pseudo-data points (``P`` must stay below the input dimension, the
    kernel's rank).

    :param x: inputs ``(B, in)``.
    :param weight_mean: ``M``, ``(out, in)``.
    :param row_var: ``(in,)``.  :param col_var: ``(out,)``.
    :param pseudo_inputs: ``A~``, ``(P, in)``.  :param pseudo_outputs: ``B~``, ``(P, out)``.
    :returns: the pre-activation sample, ``(B, out)``.
    """
    factor, _ = _kernel_cholesky(pseudo_inputs, row_var)
    cross = (pseudo_inputs * row_var) @ x.mT  # s_i as columns, (P, B)
    solved = torch.cholesky_solve(cross, factor)  # S^-1 s_i
    residual = pseudo_outputs - batched_linear(pseudo_inputs, weight_mean)  # B~ - A~ M^T
    mean = batched_linear(x, weight_mean, bias_mean) + solved.mT @ residual
    reduction = x.square() @ row_var - (cross * solved).sum(-2)
    variance = reduction.clamp_min(0).unsqueeze(-1) * col_var
    if bias_var is not None:
        variance = variance + bias_var
    return _sample(mean, variance, None, noise)


class ConditionedMatrixNormalWeight(MatrixNormalWeight):
    """A :class:`MatrixNormalWeight` of an ``nn.Linear`` conditioned on pseudo-data: ``F.linear``
    samples the pre-activation by :func:`conditioned_matrix_normal_linear`; any other use draws
    one weight from the conditional matrix normal (Eq. 43-45) by Matheron's rule.

    :param loc: ``M``, ``(out, in)``.  :param row_var: ``(in,)``.  :param col_var: ``(out,)``.
    :param pseudo_inputs: ``(P, in)``.  :param pseudo_outputs: ``(P, out)``.
    """

    @staticmethod
    def __new__(cls, loc, row_var, col_var, pseudo_inputs, pseudo_outputs):
        if loc.dim() != 2:
            raise ValueError(
                f"pseudo-data condition the weight of a linear layer, (out, in); got shape "
                f"{tuple(loc.shape)}"
            )
        weight = MatrixNormalWeight.__new__(cls, loc, row_var, col_var)
        points = pseudo_inputs.shape[0]
        if pseudo_inputs.shape != (points, loc.shape[1]) or pseudo_outputs.shape != (
            points,
            loc.shape[0],
        ):
            raise ValueError(
                f"a weight of shape {tuple(loc.shape)} needs pseudo-inputs (P, {loc.shape[1]}) "
                f"and pseudo-outputs (P, {loc.shape[0]}); got {tuple(pseudo_inputs.shape)} and "
                f"{tuple(pseudo_outputs.shape)}"
            )
        weight.pseudo_inputs, weight.pseudo_outputs = pseudo_inputs, pseudo_outputs
        return weight

    def _draw(self) -> torch.Tensor:
        return draw_conditioned(
            self.loc, self.row_var, self.col_var, self.pseudo_inputs, self.pseudo_outputs
        )


def draw_conditioned(loc, row_var, col_var, pseudo_inputs, pseudo_outputs) -> torch.Tensor:
    """Weights from the matrix normal conditioned on the pseudo-data, by Matheron's rule: a
    draw ``W~`` of the unconditioned matrix normal, corrected by the kernel regression of its
    pseudo-data residual, ``W = W~ + (B~ - A~ W~^T - d)^T S^-1 A~ diag(row_var)`` with ``d`` the
    jitter's noise.  Leading sample dimensions of ``loc`` (and of the others) broadcast."""
    col_std, row_std = col_var.sqrt().unsqueeze(-1), row_var.sqrt().unsqueeze(-2)
    prior = loc + col_std * torch.randn_like(loc) * row_std
    factor, jitter = _kernel_cholesky(pseudo_inputs, row_var)
    observation_noise = jitter.sqrt().unsqueeze(-1) * col_std.mT  # (..., P, out) scales
    residual = pseudo_outputs - pseudo_inputs @ prior.mT
    residual = residual - observation_noise * torch.randn_like(residual)
    return _correct(prior, row_var, pseudo_inputs, residual, factor)


def conditioned_mean(loc, row_var, pseudo_inputs, pseudo_outputs) -> torch.Tensor:
    """The mean of the matrix normal conditioned on the pseudo-data (Eq. 45),
    ``M + (B~ - A~ M^T)^T S^-1 A~ diag(row_var)``."""
    factor, _ = _kernel_cholesky(pseudo_inputs, row_var)
    residual = pseudo_outputs - pseudo_inputs @ loc.mT
    return _correct(loc, row_var, pseudo_inputs, residual, factor)


def _correct(weight, row_var, pseudo_inputs, residual, factor) -> torch.Tensor:
    solved = torch.cholesky_solve(residual, factor)  # S^-1 residual, (P, out)
    return weight + solved.mT @ (pseudo_inputs * row_var.unsqueeze(-2))


@register_handler(ConditionedMatrixNormalWeight, F.linear)
def _linear(input, weight, bias=None):
    if isinstance(input, StochasticWeight) or not isinstance(weight, ConditionedMatrixNormalWeight):
        return NotImplemented
    bias_mean, bias_var = moments(bias)
    return conditioned_matrix_normal_linear(
        input, weight.loc, weight.row_var, weight.col_var, weight.pseudo_inputs,
        weight.pseudo_outputs, bias_mean, bias_var,
    )  # fmt: skip
