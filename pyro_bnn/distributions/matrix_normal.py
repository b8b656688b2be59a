from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import lazy_property

from .util import check_trailing_shape


class CovarianceFactor:
    r"""
    A square root :math:`L` of a covariance :math:`C = L L^\top`, stored either as a
    lower-triangular matrix ``(..., n, n)`` or, for a diagonal covariance, as the
    vector of standard deviations ``(..., n)``. It provides the few products and
    solves the matrix normal needs without densifying a diagonal factor.
    """

    def __init__(self, factor: torch.Tensor, is_diagonal: bool):
        self.factor = factor
        self.is_diagonal = is_diagonal

    @property
    def batch_shape(self) -> torch.Size:
        return self.factor.shape[:-1] if self.is_diagonal else self.factor.shape[:-2]

    def expand(self, batch_shape: torch.Size) -> CovarianceFactor:
        n = self.factor.shape[-1]
        trailing = (n,) if self.is_diagonal else (n, n)
        return CovarianceFactor(self.factor.expand(batch_shape + trailing), self.is_diagonal)

    @property
    def tril(self) -> torch.Tensor:
        return torch.diag_embed(self.factor) if self.is_diagonal else self.factor

    def log_det(self) -> torch.Tensor:
        """:math:`\\log|C|`, shape ``batch_shape``."""
        diag = self.factor if self.is_diagonal else self.factor.diagonal(dim1=-2, dim2=-1)
        return 2 * diag.log().sum(-1)

    def cov_diag(self) -> torch.Tensor:
        """Diagonal of :math:`C`, shape ``batch_shape + (n,)``."""
        return self.factor.square() if self.is_diagonal else self.factor.square().sum(-1)

    def precision_diag(self) -> torch.Tensor:
        """Diagonal of :math:`C^{-1}`, shape ``batch_shape + (n,)``."""
        if self.is_diagonal:
            return self.factor.square().reciprocal()
        eye = torch.eye(self.factor.shape[-1], dtype=self.factor.dtype, device=self.factor.device)
        inverse = torch.linalg.solve_triangular(self.factor, eye, upper=False)
        return inverse.square().sum(-2)

    def left(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`L x` for ``x`` of shape ``(..., n, m)``."""
        return self.factor.unsqueeze(-1) * x if self.is_diagonal else self.factor @ x

    def right(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`x L^\\top` for ``x`` of shape ``(..., m, n)``."""
        return x * self.factor.unsqueeze(-2) if self.is_diagonal else x @ self.factor.mT

    def solve_left(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`L^{-1} x` for ``x`` of shape ``(..., n, m)``."""
        if self.is_diagonal:
            return x / self.factor.unsqueeze(-1)
        return torch.linalg.solve_triangular(self.factor, x, upper=False)

    def solve_right(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`x L^{-\\top}` for ``x`` of shape ``(..., m, n)``."""
        if self.is_diagonal:
            return x / self.factor.unsqueeze(-2)
        return torch.linalg.solve_triangular(self.factor.mT, x, upper=True, left=False)

    def trace_solve(self, other: CovarianceFactor) -> torch.Tensor:
        """:math:`\\mathrm{tr}(C^{-1} C_{other}) = \\|L^{-1} L_{other}\\|_F^2`."""
        if self.is_diagonal and other.is_diagonal:
            return (other.factor / self.factor).square().sum(-1)
        return self.solve_left(other.tril).square().sum((-2, -1))


class MatrixNormal(TorchDistribution):
    r"""
    Matrix normal distribution :math:`\mathcal{MN}(M, U, V)` over :math:`r \times c`
    matrices (thesis Eq. 32, with the normalizer's exponents corrected):

    .. math::
        p(W) = \frac{\exp\left(-\tfrac12 \mathrm{tr}
                     \left[V^{-1}(W - M)^\top U^{-1}(W - M)\right]\right)}
                    {(2\pi)^{rc/2}\,|V|^{r/2}\,|U|^{c/2}},

    equivalently :math:`\mathrm{vec}(W) \sim \mathcal{N}(\mathrm{vec}(M), V \otimes U)`
    with :math:`U` the ``r x r`` row covariance and :math:`V` the ``c x c`` column
    covariance. Samples are :math:`W = M + A E B^\top` with :math:`U = AA^\top`,
    :math:`V = BB^\top` and :math:`E_{ij} \sim \mathcal{N}(0, 1)` (Eq. 34).

    Each covariance is given either by its lower Cholesky factor or, for the diagonal
    case used in practice by the matrix-variate Gaussian guide, by the vector of its
    square roots; exactly one of each pair must be given.

    :param torch.Tensor loc: mean :math:`M`, shape ``batch_shape + (r, c)``.
    :param torch.Tensor row_scale_tril: :math:`A`, shape ``(..., r, r)``.
    :param torch.Tensor col_scale_tril: :math:`B`, shape ``(..., c, c)``.
    :param torch.Tensor row_scale: :math:`\sqrt{\mathrm{diag}\,U}` for diagonal
        :math:`U`, shape ``(..., r)``.
    :param torch.Tensor col_scale: :math:`\sqrt{\mathrm{diag}\,V}` for diagonal
        :math:`V`, shape ``(..., c)``.
    """

    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(
        self,
        loc: torch.Tensor,
        row_scale_tril: torch.Tensor | None = None,
        col_scale_tril: torch.Tensor | None = None,
        *,
        row_scale: torch.Tensor | None = None,
        col_scale: torch.Tensor | None = None,
        validate_args=None,
    ):
        loc = torch.as_tensor(loc)
        if loc.dim() < 2:
            raise ValueError(
                f"loc must be at least 2-dimensional (r, c), got shape {tuple(loc.shape)}"
            )
        rows, cols = loc.shape[-2:]
        row = self._factor("row", rows, row_scale_tril, row_scale, loc)
        col = self._factor("col", cols, col_scale_tril, col_scale, loc)
        batch_shape = torch.broadcast_shapes(loc.shape[:-2], row.batch_shape, col.batch_shape)
        self._init(
            loc.expand(batch_shape + (rows, cols)), row.expand(batch_shape), col.expand(batch_shape)
        )
        super().__init__(batch_shape, torch.Size((rows, cols)), validate_args=validate_args)

    @staticmethod
    def _factor(side, size, tril, scale, loc) -> CovarianceFactor:
        if (tril is None) == (scale is None):
            raise ValueError(
                f"MatrixNormal: give exactly one of {side}_scale_tril and {side}_scale"
            )
        if tril is not None:
            tril = torch.as_tensor(tril, dtype=loc.dtype, device=loc.device)
            check_trailing_shape(f"{side}_scale_tril", tril, (size, size))
            return CovarianceFactor(tril, is_diagonal=False)
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        check_trailing_shape(f"{side}_scale", scale, (size,))
        return CovarianceFactor(scale, is_diagonal=True)

    def _init(self, loc: torch.Tensor, row: CovarianceFactor, col: CovarianceFactor) -> None:
        self.loc = loc
        self._row, self._col = row, col
        # Store the given parameters under their own names so that argument
        # validation and lazy_property see exactly what the user passed.
        setattr(self, "row_scale" if row.is_diagonal else "row_scale_tril", row.factor)
        setattr(self, "col_scale" if col.is_diagonal else "col_scale_tril", col.factor)

    @property
    def arg_constraints(self) -> dict[str, constraints.Constraint]:
        diagonal = constraints.independent(constraints.positive, 1)
        return {
            "loc": constraints.independent(constraints.real, 2),
            "row_scale" if self._row.is_diagonal else "row_scale_tril": (
                diagonal if self._row.is_diagonal else constraints.lower_cholesky
            ),
            "col_scale" if self._col.is_diagonal else "col_scale_tril": (
                diagonal if self._col.is_diagonal else constraints.lower_cholesky
            ),
        }

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MatrixNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new._init(
            self.loc.expand(batch_shape + self.event_shape),
            self._row.expand(batch_shape),
            self._col.expand(batch_shape),
        )
        super(MatrixNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @lazy_property
    def row_scale_tril(self) -> torch.Tensor:
        return self._row.tril

    @lazy_property
    def col_scale_tril(self) -> torch.Tensor:
        return self._col.tril

    @property
    def row_covariance(self) -> torch.Tensor:
        """:math:`U`, shape ``batch_shape + (r, r)``."""
        return self.row_scale_tril @ self.row_scale_tril.mT

    @property
    def col_covariance(self) -> torch.Tensor:
        """:math:`V`, shape ``batch_shape + (c, c)``."""
        return self.col_scale_tril @ self.col_scale_tril.mT

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        # Var(W_ij) = U_ii V_jj.
        return self._row.cov_diag().unsqueeze(-1) * self._col.cov_diag().unsqueeze(-2)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self._col.right(self._row.left(eps))

    def _log_normalizer(self) -> torch.Tensor:
        rows, cols = self.event_shape
        return 0.5 * (
            rows * cols * math.log(2 * math.pi)
            + cols * self._row.log_det()
            + rows * self._col.log_det()
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        whitened = self._col.solve_right(self._row.solve_left(value - self.loc))
        return -0.5 * whitened.square().sum((-2, -1)) - self._log_normalizer()

    def entropy(self) -> torch.Tensor:
        rows, cols = self.event_shape
        return 0.5 * rows * cols + self._log_normalizer()
