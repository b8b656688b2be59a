"""A diagonal matrix normal written as the ``Normal`` it is, whose sample reaches the layers."""

from __future__ import annotations

import torch

from pyro_bnn.ops import MatrixNormalWeight
from pyro_bnn.ops.local_reparameterization import local_reparameterization_enabled

from .local_reparameterized_normal import LocalReparameterizedNormal


def kronecker_log_variance(row_log_variance: torch.Tensor, col_log_variance: torch.Tensor):
    """``log Var W[j, i...] = log col_var[j] + log row_var[i...]`` in a layer's layout
    ``(out, in, *kernel)``, from ``col_log_variance`` ``(out,)`` and ``row_log_variance``
    ``(in, *kernel)``."""
    col = col_log_variance.reshape(-1, *(1,) * row_log_variance.dim())
    return col + row_log_variance


class LocalReparameterizedMatrixNormal(LocalReparameterizedNormal):
    """``W ~ MN(M, diag(col_var), diag(row_var))`` in a layer's layout, as the ``Normal`` it is.

    With diagonal row and column covariances the entries of a matrix normal are independent,
    ``W[j, i] ~ N(M[j, i], col_var[j] row_var[i])`` (thesis Sec. 3.2, Eq. 32 with ``U =
    diag(row_var)``, ``V = diag(col_var)``), so this *is* a ``Normal`` and every KL registered
    for the Normal applies: against ``Normal(0, 1)`` (the MN(0, I, I) prior) it sums to the
    thesis's Eq. 35,

    .. math:: \\mathrm{KL} = \\tfrac12 \\Big[\\textstyle\\sum_i \\sigma^2_{r,i}
              \\sum_j \\sigma^2_{c,j} + \\|M\\|_F^2 - rc - c \\sum_i \\log \\sigma^2_{r,i}
              - r \\sum_j \\log \\sigma^2_{c,j}\\Big].

    Its single reparameterized sample is a :class:`~pyro_bnn.ops.MatrixNormalWeight`: a layer
    samples its pre-activation with variance ``(x**2 @ row_var) * col_var``, one GEMM and one
    GEMV (Eq. 36 with the diagonal of the row covariance).

    :param loc: ``M``, shape ``(out, in, *kernel)``.
    :param row_log_variance: ``log row_var``, shape ``(in, *kernel)``.
    :param col_log_variance: ``log col_var``, shape ``(out,)``.
    """

    def __init__(self, loc, row_log_variance, col_log_variance, validate_args=None):
        if loc.dim() < 2 or row_log_variance.shape != loc.shape[1:]:
            raise ValueError(
                f"a matrix normal over weights of shape {tuple(loc.shape)} needs row log-"
                f"variances of shape {tuple(loc.shape[1:])}, got {tuple(row_log_variance.shape)}"
            )
        if col_log_variance.shape != loc.shape[:1]:
            raise ValueError(
                f"a matrix normal over weights of shape {tuple(loc.shape)} needs column log-"
                f"variances of shape ({loc.shape[0]},), got {tuple(col_log_variance.shape)}"
            )
        self.row_log_variance = row_log_variance
        self.col_log_variance = col_log_variance
        log_variance = kronecker_log_variance(row_log_variance, col_log_variance)
        super().__init__(loc, log_variance=log_variance, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        # A larger batch of matrices no longer has one row and one column covariance.
        plain = LocalReparameterizedNormal(self.loc, log_variance=self.log_variance)
        return plain.expand(batch_shape, _instance)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if sample_shape or not local_reparameterization_enabled():
            return super(LocalReparameterizedNormal, self).rsample(sample_shape)
        return MatrixNormalWeight(
            self.loc, self.row_log_variance.exp(), self.col_log_variance.exp()
        )
