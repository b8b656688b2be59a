"""Spike-and-slab posteriors: Bernoulli inclusion times a Gaussian slab (thesis App. 10.5.1).

The variational family of the "gold standard" sparsity prior that L0 regularization
approximates: ``q(z) = Bern(pi)``, ``q(w | z = 1) = N(mu, sigma^2)``, ``q(w | z = 0) =
delta_0``, whose KL against the spike-and-slab prior is ``KL(Bern(pi) || Bern(pi_0)) + pi
KL(N(mu, sigma^2) || slab)`` (registered for :class:`~pyro_bnn.distributions.SpikeAndSlab`).

SVI needs reparameterized samples, and the inclusion variable is discrete: during training it is
replaced by its concrete relaxation (Maddison et al., 2017; Jang et al., 2017) at
:data:`DEFAULT_TEMPERATURE`, while the KL stays the exact KL of the Bernoulli it relaxes.  With
local reparameterization off (prediction, :func:`pyro_bnn.predict`) the samples are exact: hard
inclusion indicators.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints, register_kl

from pyro_bnn.distributions import SpikeAndSlab
from pyro_bnn.ops import GaussianWeight, local_reparameterization_enabled, per_example

from .family import GuideFamily, Site, register_default_family, register_family

#: Temperature of the concrete relaxation of the inclusion variables during training (the
#: binary-concrete temperature of the L0 gates, 2/3, after Maddison et al.).
DEFAULT_TEMPERATURE = 2.0 / 3.0

#: Initial inclusion logit: every weight (group) starts included, pi = sigmoid(3) = 0.95.
DEFAULT_INIT_LOGIT = 3.0


def _relaxed_inclusion(probs: torch.Tensor, temperature: float, shape=()) -> torch.Tensor:
    return dist.RelaxedBernoulli(torch.as_tensor(temperature), probs=probs).rsample(shape)


class RelaxedSpikeAndSlab(SpikeAndSlab):
    """:class:`~pyro_bnn.distributions.SpikeAndSlab` with a reparameterized training sample:
    ``z * w`` with ``z`` a concrete relaxation of the inclusion and ``w`` a Gaussian weight that
    the layers sample locally.  KLs, ``log_prob`` and moments are the spike-and-slab's."""

    has_rsample = True

    def __init__(self, probs, loc, scale, temperature=DEFAULT_TEMPERATURE, validate_args=None):
        super().__init__(probs, loc, scale, validate_args=validate_args)
        self.temperature = temperature

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(RelaxedSpikeAndSlab, _instance)
        new = super().expand(batch_shape, new)
        new.temperature = self.temperature
        return new

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if sample_shape or not local_reparameterization_enabled():
            return self.sample(sample_shape)
        inclusion = _relaxed_inclusion(self.probs, self.temperature)
        slab = GaussianWeight(self.loc, self.scale)
        return slab * inclusion


class RelaxedInclusion(dist.RelaxedBernoulli):
    """The inclusion variables of a group spike-and-slab: ``Bern(pi)`` relaxed for training
    (concrete, :data:`DEFAULT_TEMPERATURE`), exact 0/1 draws with local reparameterization off.
    Its KL against a ``Bernoulli`` prior is the Bernoulli KL."""

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if not local_reparameterization_enabled():
            return torch.bernoulli(self.probs.expand(self._extended_shape(sample_shape)))
        return super().rsample(sample_shape)


@register_kl(RelaxedInclusion, dist.Bernoulli)
def _kl_relaxed_inclusion_bernoulli(p: RelaxedInclusion, q: dist.Bernoulli) -> torch.Tensor:
    return torch.distributions.kl_divergence(dist.Bernoulli(logits=p.logits), q)


class _InclusionFamily(GuideFamily):
    has_atoms = True

    def __init__(self, init_logit: float = DEFAULT_INIT_LOGIT, temperature=DEFAULT_TEMPERATURE):
        if not temperature > 0:
            raise ValueError(f"the relaxation temperature must be positive, got {temperature}")
        self.init_logit = float(init_logit)
        self.temperature = float(temperature)

    def _logit(self, site: Site, init: torch.Tensor) -> PyroParam:
        return PyroParam(torch.full(site.shape, self.init_logit).to(init), constraints.real)


@register_family
class SpikeAndSlabFamily(_InclusionFamily):
    """``q(w) = (1 - pi) delta_0 + pi N(mu, sigma^2)`` per weight, for a
    :class:`~pyro_bnn.distributions.SpikeAndSlab` prior.

    Parameters: the inclusion logit (start :data:`DEFAULT_INIT_LOGIT`), the slab mean (the
    site's initial value) and its log-variance (``init_log_variance``).  The median keeps the
    slab mean where ``pi > 1/2`` and is exactly zero elsewhere (the median probability model).
    """

    name = "spike_and_slab"

    def __init__(self, init_logit=DEFAULT_INIT_LOGIT, temperature=DEFAULT_TEMPERATURE,
                 init_log_variance: float = -9.0):  # fmt: skip
        super().__init__(init_logit, temperature)
        self.init_log_variance = float(init_log_variance)

    def unsupported(self, site: Site) -> str | None:
        if site.support is not constraints.real:
            return f"its support is {site.support}, and a spike-and-slab weight is real"
        return None

    def parameters(self, site: Site, init: torch.Tensor) -> dict[str, PyroParam]:
        return {
            "logit": self._logit(site, init),
            "loc": PyroParam(init.detach().clone(), constraints.real),
            "log_variance": PyroParam(torch.full_like(init, self.init_log_variance)),
        }

    def posterior(self, site: Site, params: PyroModule) -> dist.Distribution:
        scale = params.log_variance.mul(0.5).exp()
        if site.max_scale is not None:
            scale = scale.clamp(max=site.max_scale)
        return RelaxedSpikeAndSlab(
            torch.sigmoid(params.logit), params.loc, scale, self.temperature, validate_args=False
        )

    def median(self, site: Site, params: PyroModule) -> torch.Tensor:
        return torch.where(params.logit > 0, params.loc, torch.zeros_like(params.loc))


@register_family
class RelaxedBernoulliFamily(_InclusionFamily):
    """``q(z) = Bern(pi)`` for a ``Bernoulli`` prior (a group's inclusion variable in a group
    spike-and-slab), relaxed during training; drawn per example where the model asks
    (``infer={"per_example": True}``).  The median is the median probability model,
    ``pi > 1/2``."""

    name = "relaxed_bernoulli"

    def unsupported(self, site: Site) -> str | None:
        if not isinstance(site.prior, dist.Bernoulli):
            return f"it has a {type(site.prior).__name__} prior, not a Bernoulli"
        return None

    def parameters(self, site: Site, init: torch.Tensor) -> dict[str, PyroParam]:
        return {"logit": self._logit(site, init.to(torch.get_default_dtype()))}

    def posterior(self, site: Site, params: PyroModule) -> dist.Distribution:
        temperature = torch.as_tensor(self.temperature).to(params.logit)
        inclusion = RelaxedInclusion(temperature, logits=params.logit, validate_args=False)
        return per_example(inclusion) if site.per_example else inclusion

    def median(self, site: Site, params: PyroModule) -> torch.Tensor:
        return (params.logit > 0).to(params.logit.dtype)


register_default_family(SpikeAndSlab, SpikeAndSlabFamily.name)
register_default_family(dist.Bernoulli, RelaxedBernoulliFamily.name)
