"""The truncated log-normal family for bounded positive noise (structured Bayesian pruning)."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from pyro_bnn.distributions import LogUniform, TruncatedLogNormal
from pyro_bnn.ops import per_example

from .family import GuideFamily, Site, register_default_family, register_family

#: Initial log-variance of log theta: sigma = exp(-5), the start of the SBP reference code
#: (with mu = 0, noise close to 1: the network starts as the deterministic one).
DEFAULT_INIT_LOG_VARIANCE = -10.0


@register_family
class TruncatedLogNormalFamily(GuideFamily):
    """``q(theta) = LogN_[a, b](mu, sigma^2)`` per entry, for a
    :class:`~pyro_bnn.distributions.LogUniform` prior on ``[a, b]`` (Neklyudov et al., 2017):
    the log-normal truncated to the prior's support, whose KL against it is registered.

    Parameters: ``loc`` (``mu``, the log of the site's initial value) and ``log_variance``
    (``log sigma^2``, start ``init_log_variance``).  The median is the truncated distribution's.
    """

    name = "truncated_log_normal"

    def __init__(self, init_log_variance: float = DEFAULT_INIT_LOG_VARIANCE):
        if not math.isfinite(init_log_variance):
            raise ValueError(f"init_log_variance must be finite, got {init_log_variance}")
        self.init_log_variance = float(init_log_variance)

    def unsupported(self, site: Site) -> str | None:
        if not isinstance(site.prior, LogUniform):
            return (
                f"it has a {type(site.prior).__name__} prior; the truncated log-normal family "
                "takes its bounds from a LogUniform prior"
            )
        return None

    def parameters(self, site: Site, init: torch.Tensor) -> dict[str, PyroParam]:
        low, high = site.prior.low.expand(site.shape), site.prior.high.expand(site.shape)
        loc = torch.minimum(torch.maximum(init, low), high).log().detach().clone()
        return {
            "loc": PyroParam(loc, constraints.real),
            "log_variance": PyroParam(torch.full_like(loc, self.init_log_variance)),
        }

    def posterior(self, site: Site, params: PyroModule) -> dist.Distribution:
        scale = params.log_variance.mul(0.5).exp()
        prior = site.prior
        noise = TruncatedLogNormal(params.loc, scale, prior.low, prior.high, validate_args=False)
        return per_example(noise) if site.per_example else noise

    def median(self, site: Site, params: PyroModule) -> torch.Tensor:
        return self.posterior(site, params).icdf(torch.full_like(params.loc, 0.5))


register_default_family(LogUniform, TruncatedLogNormalFamily.name)
