"""The matrix-normal family for a layer's weight (Louizos and Welling, 2016; thesis Ch. 3)."""

from __future__ import annotations

import math

import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from .family import GuideFamily, Site, register_family
from .local_reparameterized_matrix_normal import LocalReparameterizedMatrixNormal
from .normal_family import DEFAULT_INIT_LOG_VARIANCE, noise_to_signal


@register_family
class MatrixNormalFamily(GuideFamily):
    """``q(W) = MN(M, U, V)`` per weight matrix with diagonal row and column covariances
    ``U = diag(row_var)`` (one variance per input unit, or per input channel and kernel
    position of a convolution) and ``V = diag(col_var)`` (one per output unit or channel).

    ``r c + r + c`` parameters per ``r x c`` layer instead of the mean field's ``2 r c``: the
    weights of one input unit share its noise level, scaled per output unit, the correlations
    the thesis reads as a Gaussian process over the layer's inputs.  The layers sample their
    pre-activations by local reparameterization (:class:`LocalReparameterizedMatrixNormal`).

    Initialization: ``M`` is the site's initial value (the layer's own initialization or a
    pretrained network); ``log row_var`` and ``log col_var`` both start at half of
    ``init_log_variance`` (or of the model's ``infer={"init_log_variance": ...}``), so every
    entry starts with variance ``exp(init_log_variance)``.  The split between the two is not
    identified (``U c``, ``V / c`` is the same distribution), which does not hinder training.

    A standard-deviation cap (:attr:`Site.max_scale`, the guide's ``max_scale``) bounds each of
    the row and column standard deviations, so every entry's standard deviation stays below
    its square.

    :param init_log_variance: the initial log-variance of every entry.
    """

    name = "matrix_normal"

    def __init__(self, init_log_variance: float = DEFAULT_INIT_LOG_VARIANCE):
        if not math.isfinite(init_log_variance):
            raise ValueError(f"init_log_variance must be finite, got {init_log_variance}")
        self.init_log_variance = float(init_log_variance)

    def unsupported(self, site: Site) -> str | None:
        if site.support is not constraints.real:
            return f"its support is {site.support}; a matrix normal is over real matrices"
        if len(site.shape) < 2:
            return (
                f"it has shape {tuple(site.shape)}; a matrix normal needs a layer's weight, "
                "(out, in) or (out, in, *kernel)"
            )
        if site.per_example:
            return "the model asks for a draw per example, which a weight matrix cannot take"
        return None

    def parameters(self, site: Site, init: torch.Tensor) -> dict[str, PyroParam]:
        start = self.init_log_variance if site.init_log_variance is None else site.init_log_variance
        if torch.as_tensor(start).numel() != 1:
            raise ValueError(
                f"site {site.name!r} suggests an initial log-variance per entry; the "
                "matrix-normal family needs one number (its entries share row and column "
                "variances)"
            )
        half = 0.5 * float(start)
        loc = init.detach().clone()
        return {
            "loc": PyroParam(loc, constraints.real),
            "row_log_variance": PyroParam(loc.new_full(loc.shape[1:], half), constraints.real),
            "col_log_variance": PyroParam(loc.new_full(loc.shape[:1], half), constraints.real),
        }

    def posterior(self, site: Site, params: PyroModule) -> LocalReparameterizedMatrixNormal:
        row, col = params.row_log_variance, params.col_log_variance
        if site.max_scale is not None:
            cap = 2 * math.log(site.max_scale)
            row, col = row.clamp(max=cap), col.clamp(max=cap)
        return LocalReparameterizedMatrixNormal(params.loc, row, col, validate_args=False)

    def median(self, site: Site, params: PyroModule) -> torch.Tensor:
        return params.loc

    def log_alpha(self, site: Site, params: PyroModule) -> torch.Tensor:
        return noise_to_signal(params.loc, self.posterior(site, params).log_variance)
