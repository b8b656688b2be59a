"""The mean-field Gaussian autoguide with transparent local reparameterization."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from .auto_site_guide import AutoSiteGuide
from .normal_family import DEFAULT_INIT_LOG_VARIANCE


class AutoMeanFieldNormal(AutoSiteGuide):
    """A fully factorized Gaussian guide ``q(w) = prod_i N(w_i | mu_i, sigma_i^2)``: the
    all-Normal case of :class:`AutoSiteGuide`.

    Every site gets the :class:`~pyro_bnn.guides.NormalFamily`: a real site a
    :class:`~pyro_bnn.guides.LocalReparameterizedNormal` (registered KL divergences apply;
    ``TraceMeanField_ELBO`` uses the sparse variational dropout KL against
    :class:`~pyro_bnn.distributions.ImproperLogUniform`, and a sample that reaches
    ``F.linear`` / ``F.convNd`` makes the layer sample its output by local
    reparameterization), a positive site a ``LogNormal``, any other elementwise-constrained
    site the Normal pushed through ``biject_to(support)``.  The parameterization is additive:
    a mean and ``log sigma^2`` per entry; ``log alpha`` is derived (:meth:`log_alpha`).

    The arguments are :class:`AutoSiteGuide`'s, without ``families``.
    """

    def __init__(
        self,
        model: Callable,
        *,
        pretrained: nn.Module | Mapping[str, torch.Tensor] | None = None,
        init_loc_fn: Callable | None = None,
        init_log_variance: float = DEFAULT_INIT_LOG_VARIANCE,
        max_scale: float | Mapping[str, float] | None = None,
        local_reparameterization: bool = True,
    ):
        super().__init__(
            model,
            pretrained=pretrained,
            init_loc_fn=init_loc_fn,
            init_log_variance=init_log_variance,
            max_scale=max_scale,
            local_reparameterization=local_reparameterization,
        )

    def _default_family(self, site):
        return self._normal
