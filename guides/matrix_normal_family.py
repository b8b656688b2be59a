"""The matrix-normal family for a layer's weight (Louizos and Welling, 2016; thesis Ch. 3)."""

from __future__ import annotations

import math

import pyro
import torch
from pyro.nn import PyroModule, PyroParam
from pyro.poutine.runtime import am_i_wrapped
from torch.distributions import constraints

from pyro_bnn.distributions import sparse_vd_kl
from pyro_bnn.ops.conditioned_matrix_normal_weight import conditioned_mean

from .auxiliary import auxiliary_log_density
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

    A standard-deviation cap (:attr:`Site.max_scale`, the guide's ``max_scale``) bounds the row
    and the column standard deviations by its square root each, so every entry's standard
    deviation stays below the cap, whether the cap is above or below 1.

    **Pseudo-data** (``pseudo_data=P``, linear layers; thesis Sec. 3.2.5): ``P`` pseudo-inputs
    ``A~`` and pseudo-outputs ``B~`` per layer, which the weights are conditioned on (the
    sparse-GP reading of the matrix normal, :class:`LocalReparameterizedMatrixNormal`).  They
    start uniform in [-0.01, 0.01] and have multiplicative Gaussian posteriors
    ``A~ = mu (1 + sqrt(alpha) eps)`` with log-uniform priors, whose variational-dropout KL
    (:func:`~pyro_bnn.distributions.sparse_vd_kl`) joins the bound through a guide factor; the
    dropout rate ``alpha / (1 + alpha)`` is bounded by ``pseudo_dropout_bound`` (0.005 or 0.05
    on the UCI sets, 0.2 on the toy task) and starts there.  ``P`` must stay below the layer's
    input dimension (the rank of the linear kernel).

    :param init_log_variance: the initial log-variance of every entry.
    :param pseudo_data: pseudo-data points per linear layer (0: none).
    :param pseudo_dropout_bound: the largest dropout rate of the pseudo-data's noise, in (0, 1).
    """

    name = "matrix_normal"

    def __init__(
        self,
        init_log_variance: float = DEFAULT_INIT_LOG_VARIANCE,
        pseudo_data: int = 0,
        pseudo_dropout_bound: float = 0.05,
    ):
        if not math.isfinite(init_log_variance):
            raise ValueError(f"init_log_variance must be finite, got {init_log_variance}")
        if isinstance(pseudo_data, bool) or not isinstance(pseudo_data, int) or pseudo_data < 0:
            raise ValueError(f"pseudo_data must be a non-negative integer, got {pseudo_data!r}")
        if not (isinstance(pseudo_dropout_bound, (int, float)) and 0 < pseudo_dropout_bound < 1):
            raise ValueError(
                f"pseudo_dropout_bound must lie in (0, 1), got {pseudo_dropout_bound!r}"
            )
        self.init_log_variance = float(init_log_variance)
        self.pseudo_data = pseudo_data
        self.max_pseudo_log_alpha = math.log(pseudo_dropout_bound / (1 - pseudo_dropout_bound))

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
        if self.pseudo_data and len(site.shape) != 2:
            return f"it has shape {tuple(site.shape)}; pseudo-data condition linear layers only"
        if self.pseudo_data >= (site.shape[1] if len(site.shape) == 2 else 0) > 0:
            return (
                f"{self.pseudo_data} pseudo-data points are too many for {site.shape[1]} inputs: "
                "the linear kernel's rank is the input dimension"
            )
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
        params = {
            "loc": PyroParam(loc, constraints.real),
            "row_log_variance": PyroParam(loc.new_full(loc.shape[1:], half), constraints.real),
            "col_log_variance": PyroParam(loc.new_full(loc.shape[:1], half), constraints.real),
        }
        if self.pseudo_data:
            for name, size in (("pseudo_inputs", loc.shape[1]), ("pseudo_outputs", loc.shape[0])):
                shape = (self.pseudo_data, size)
                params[name] = PyroParam(
                    torch.empty(shape).uniform_(-0.01, 0.01).to(loc), constraints.real
                )
                params[f"{name}_log_alpha"] = PyroParam(
                    loc.new_full(shape, self.max_pseudo_log_alpha), constraints.real
                )
        return params

    def _variances(self, site: Site, params: PyroModule) -> tuple[torch.Tensor, torch.Tensor]:
        row, col = params.row_log_variance, params.col_log_variance
        if site.max_scale is not None:
            cap = math.log(site.max_scale)  # row and column variances at most the cap each
            row, col = row.clamp(max=cap), col.clamp(max=cap)
        return row, col

    def posterior(self, site: Site, params: PyroModule) -> LocalReparameterizedMatrixNormal:
        """``q(W)``; with pseudo-data, conditioned on their posterior means."""
        pseudo = (params.pseudo_inputs, params.pseudo_outputs) if self.pseudo_data else ()
        return LocalReparameterizedMatrixNormal(
            params.loc, *self._variances(site, params), *pseudo, validate_args=False
        )

    def sample(self, site: Site, params: PyroModule) -> torch.Tensor:
        if not self.pseudo_data:
            return super().sample(site, params)
        log_alpha = tuple(
            getattr(params, f"{name}_log_alpha").clamp(max=self.max_pseudo_log_alpha)
            for name in ("pseudo_inputs", "pseudo_outputs")
        )
        if am_i_wrapped():  # the pseudo-data's KL, in the KL part of the bound
            kl = sum(sparse_vd_kl(value).sum() for value in log_alpha)
            auxiliary_log_density(f"{site.name}.pseudo_data", -kl)
        # The distribution perturbs the pseudo-data for each weight it draws (one perturbation
        # per step in training, one per posterior sample under a sample plate).
        fn = LocalReparameterizedMatrixNormal(
            params.loc, *self._variances(site, params), params.pseudo_inputs,
            params.pseudo_outputs, log_alpha, validate_args=False,
        )  # fmt: skip
        return pyro.sample(site.name, fn.to_event(site.event_dim))

    def median(self, site: Site, params: PyroModule) -> torch.Tensor:
        if not self.pseudo_data:
            return params.loc
        row_var = self._variances(site, params)[0].exp()
        return conditioned_mean(params.loc, row_var, params.pseudo_inputs, params.pseudo_outputs)

    def log_alpha(self, site: Site, params: PyroModule) -> torch.Tensor:
        return noise_to_signal(self.median(site, params), self.posterior(site, params).log_variance)
