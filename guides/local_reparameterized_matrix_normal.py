"""A diagonal matrix normal written as the ``Normal`` it is, whose sample reaches the layers."""

from __future__ import annotations

import torch

from pyro_bnn.ops import ConditionedMatrixNormalWeight, MatrixNormalWeight
from pyro_bnn.ops.conditioned_matrix_normal_weight import draw_conditioned
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

    With pseudo-data (a linear layer's pseudo-inputs ``A~`` and pseudo-outputs ``B~``), samples
    come from the matrix normal conditioned on ``A~ W^T = B~`` (Eq. 39-45,
    :class:`~pyro_bnn.ops.ConditionedMatrixNormalWeight`), while the density and the KL stay
    those of the unconditioned matrix normal, as in the thesis (whose bound is therefore
    biased, Sec. 3.2.6).  With ``pseudo_log_alpha`` the pseudo-data are random too, with the
    variational-dropout posteriors ``A~ (1 + sqrt(alpha) eps)``, ``eps ~ N(0, 1)`` (Sec. 3.2.5):
    every draw of ``W`` perturbs them afresh, so the draws of a sample plate (``expand``) are
    independent draws of the whole guide.

    :param loc: ``M``, shape ``(*batch, out, in, *kernel)``.
    :param row_log_variance: ``log row_var``, shape ``(in, *kernel)``.
    :param col_log_variance: ``log col_var``, shape ``(out,)``.
    :param pseudo_inputs: ``A~`` (their means, with ``pseudo_log_alpha``), ``(P, in)``, or
        ``None``.
    :param pseudo_outputs: ``B~``, ``(P, out)``, or ``None``.
    :param pseudo_log_alpha: ``(log alpha_A, log alpha_B)``, the log-variances of the
        multiplicative noise on ``A~`` and ``B~``, each broadcastable to their shape, or
        ``None`` (fixed pseudo-data).
    """

    def __init__(
        self,
        loc,
        row_log_variance,
        col_log_variance,
        pseudo_inputs=None,
        pseudo_outputs=None,
        pseudo_log_alpha=None,
        validate_args=None,
    ):
        layer = torch.Size([*col_log_variance.shape, *row_log_variance.shape])
        if col_log_variance.dim() != 1 or loc.shape[-len(layer) :] != layer or loc.dim() < 2:
            raise ValueError(
                f"a matrix normal over weights of shape {tuple(loc.shape)} needs row log-"
                f"variances of shape {tuple(loc.shape[1:])} and column log-variances of shape "
                f"({loc.shape[0]},), got {tuple(row_log_variance.shape)} and "
                f"{tuple(col_log_variance.shape)}"
            )
        if (pseudo_inputs is None) != (pseudo_outputs is None):
            raise ValueError("give both pseudo-inputs and pseudo-outputs, or neither")
        if pseudo_log_alpha is not None and pseudo_inputs is None:
            raise ValueError("pseudo_log_alpha perturbs pseudo-data: give them too")
        self.row_log_variance = row_log_variance
        self.col_log_variance = col_log_variance
        self.pseudo_inputs, self.pseudo_outputs = pseudo_inputs, pseudo_outputs
        self.pseudo_log_alpha = pseudo_log_alpha
        log_variance = kronecker_log_variance(row_log_variance, col_log_variance)
        super().__init__(
            loc, log_variance=log_variance.expand(loc.shape), validate_args=validate_args
        )
        self._layer_dims = len(layer)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        if batch_shape[-self._layer_dims :] == self.batch_shape[-self._layer_dims :]:
            # More leading (sample) dimensions: the same matrix normal, drawn more often.
            return LocalReparameterizedMatrixNormal(
                self.loc.expand(batch_shape), self.row_log_variance, self.col_log_variance,
                self.pseudo_inputs, self.pseudo_outputs, self.pseudo_log_alpha,
            )  # fmt: skip
        plain = LocalReparameterizedNormal(self.loc, log_variance=self.log_variance)
        return plain.expand(batch_shape, _instance)

    def pseudo_data(self, draws: torch.Size = torch.Size()) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A~, B~)`` for ``draws`` independent draws of ``W``, shapes ``(*draws, P, in)`` and
        ``(*draws, P, out)``: perturbed by their noise when it is given, else as they are."""
        if self.pseudo_log_alpha is None:
            return self.pseudo_inputs, self.pseudo_outputs
        return tuple(
            mean
            + mean
            * (0.5 * log_alpha).exp()
            * torch.randn(draws + mean.shape, dtype=mean.dtype, device=mean.device)
            for mean, log_alpha in zip(
                (self.pseudo_inputs, self.pseudo_outputs), self.pseudo_log_alpha, strict=True
            )
        )

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        row_var, col_var = self.row_log_variance.exp(), self.col_log_variance.exp()
        lazy = not sample_shape and local_reparameterization_enabled()
        if lazy and self.loc.dim() == self._layer_dims:
            if self.pseudo_inputs is None:
                return MatrixNormalWeight(self.loc, row_var, col_var)
            return ConditionedMatrixNormalWeight(self.loc, row_var, col_var, *self.pseudo_data())
        if self.pseudo_inputs is None:
            return super(LocalReparameterizedNormal, self).rsample(sample_shape)
        loc = self.loc.expand(self._extended_shape(sample_shape))
        # One perturbation of the pseudo-data per drawn weight, not one shared by all of them.
        pseudo = self.pseudo_data(loc.shape[: -self._layer_dims])
        return draw_conditioned(loc, row_var, col_var, *pseudo)
