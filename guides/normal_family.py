"""The Normal family: a Gaussian in the unconstrained space of each site (mean field)."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints
from torch.distributions.transforms import ExpTransform, identity_transform

from pyro_bnn.distributions import LogVarianceNormal
from pyro_bnn.distributions.kl import LOG_ALPHA_RANGE
from pyro_bnn.ops import per_example

from .family import GuideFamily, Site, register_family
from .local_reparameterized_normal import LocalReparameterizedNormal

#: Initial log-variance of every site (Louizos' thesis initializes log sigma^2 around -9):
#: the guide starts almost at the point estimate and lets the data ask for noise.
DEFAULT_INIT_LOG_VARIANCE = -9.0


@register_family
class NormalFamily(GuideFamily):
    """``q(w) = N(w | mu, sigma^2)`` per entry, pushed through the site's elementwise bijection.

    A real site gets a :class:`LocalReparameterizedNormal` (its sample reaches the layers as a
    :class:`~pyro_bnn.ops.GaussianWeight`), a positive site a ``LogNormal`` (the KLs against
    ``Gamma`` and ``InverseGamma`` are registered) and any other elementwise-constrained site
    the Normal pushed through ``biject_to(support)``.

    The parameterization is additive (Molchanov et al., 2017): a mean ``loc`` and a
    log-variance ``log_variance = log sigma^2``, so the noise never enters ``dw/dmu``.
    Initialization: ``loc`` is the site's initial value mapped to the reals (the layer's own
    initialization or a pretrained network), ``log_variance`` is ``init_log_variance`` (or the
    value the model suggests with ``infer={"init_log_variance": ...}``).

    :param init_log_variance: initial ``log sigma^2``.
    :param local_reparameterization: let real sites' samples reach the layers as
        :class:`~pyro_bnn.ops.GaussianWeight` s.
    """

    name = "normal"

    def __init__(
        self,
        init_log_variance: float = DEFAULT_INIT_LOG_VARIANCE,
        local_reparameterization: bool = True,
    ):
        if not math.isfinite(init_log_variance):
            raise ValueError(f"init_log_variance must be finite, got {init_log_variance}")
        self.init_log_variance = float(init_log_variance)
        self.local_reparameterization = local_reparameterization

    def unsupported(self, site: Site) -> str | None:
        if site.transform is None:
            return (
                f"its support {site.support} has no elementwise bijection to the real line, "
                "which the Normal family needs"
            )
        return None

    def parameters(self, site: Site, init: torch.Tensor) -> dict[str, PyroParam]:
        loc = site.transform.inv(init).detach().clone()
        start = self.init_log_variance if site.init_log_variance is None else site.init_log_variance
        log_variance = torch.as_tensor(start).to(loc).expand_as(loc).clone()
        return {
            "loc": PyroParam(loc, constraints.real),
            "log_variance": PyroParam(log_variance, constraints.real),
        }

    def posterior(self, site: Site, params: PyroModule) -> dist.Distribution:
        loc, log_variance = params.loc, capped_log_variance(site, params.log_variance)
        if site.per_example:
            return per_example(self._plain(site, loc, log_variance))
        # The scale is an exponential, positive by construction: skip the per-step validation
        # pass over every weight.
        if site.transform == identity_transform and self.local_reparameterization:
            return LocalReparameterizedNormal(loc, log_variance=log_variance, validate_args=False)
        return self._plain(site, loc, log_variance)

    @staticmethod
    def _plain(site: Site, loc: torch.Tensor, log_variance: torch.Tensor) -> dist.Distribution:
        if site.transform == identity_transform:
            return LogVarianceNormal(loc, log_variance=log_variance, validate_args=False)
        scale = (0.5 * log_variance).exp()
        if isinstance(site.transform, ExpTransform):
            return dist.LogNormal(loc, scale, validate_args=False)
        base = dist.Normal(loc, scale, validate_args=False)
        return dist.TransformedDistribution(base, [site.transform], validate_args=False)

    def median(self, site: Site, params: PyroModule) -> torch.Tensor:
        return site.transform(params.loc)

    def log_alpha(self, site: Site, params: PyroModule) -> torch.Tensor | None:
        """``log sigma^2 - log mu^2`` of a real site, clamped as in the sparse-VD KL."""
        if site.transform != identity_transform:
            return None
        return noise_to_signal(params.loc, capped_log_variance(site, params.log_variance))


def noise_to_signal(loc: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """``log alpha = log sigma^2 - log mu^2``, clamped to
    :data:`~pyro_bnn.distributions.kl.LOG_ALPHA_RANGE` as in the sparse-VD KL."""
    log_alpha = log_variance - loc.square().clamp_min(1e-30).log()
    return log_alpha.clamp(*LOG_ALPHA_RANGE)


def capped_log_variance(site: Site, log_variance: torch.Tensor) -> torch.Tensor:
    """``log sigma^2`` clamped at the site's standard-deviation cap (:attr:`Site.max_scale`):
    Louizos et al. clip sigma in multiplicative-flow and Bayesian-compression networks."""
    if site.max_scale is None:
        return log_variance
    return log_variance.clamp(max=2 * math.log(site.max_scale))
