from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import Normal, constraints
from torch.distributions.utils import broadcast_all


class SpikeAndSlab(TorchDistribution):
    r"""
    Spike-and-slab distribution: a point mass at zero mixed with a Normal slab,

    .. math:: p(w) = (1 - \pi)\,\delta_0(w) + \pi\,\mathcal{N}(w \mid \mu, \sigma^2),

    the "gold standard" sparsity prior of thesis Sec. 6.4 and App. 10.5.1 (with
    :math:`\mu = 0`, :math:`\sigma = 1` there). It is a distribution on a mixed
    measure: :meth:`log_prob` is taken with respect to :math:`\delta_0 +` Lebesgue, so
    ``log_prob(0) = log(1 - pi)`` (the atom) and ``log_prob(w) = log pi +
    log N(w | mu, sigma^2)`` for :math:`w \neq 0`. Sampling is exact; it is not
    reparameterizable because the inclusion indicator is discrete.

    :param torch.Tensor probs: inclusion probability :math:`\pi = P(w \neq 0)`.
    :param torch.Tensor loc: slab mean :math:`\mu`.
    :param torch.Tensor scale: slab standard deviation :math:`\sigma > 0`.
    """

    arg_constraints = {
        "probs": constraints.unit_interval,
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    support = constraints.real
    has_rsample = False

    def __init__(self, probs, loc, scale, validate_args=None):
        self.probs, self.loc, self.scale = broadcast_all(probs, loc, scale)
        super().__init__(self.probs.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SpikeAndSlab, _instance)
        batch_shape = torch.Size(batch_shape)
        new.probs = self.probs.expand(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        super(SpikeAndSlab, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        return self.probs * self.loc

    @property
    def variance(self) -> torch.Tensor:
        return self.probs * (self.scale.square() + self.loc.square()) - self.mean.square()

    @property
    def slab(self) -> Normal:
        r"""The slab :math:`\mathcal{N}(\mu, \sigma^2)`."""
        return Normal(self.loc, self.scale, validate_args=False)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            included = torch.bernoulli(self.probs.expand(shape))
            slab = self.slab.sample(sample_shape)
            return torch.where(included.bool(), slab, torch.zeros_like(slab))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        # Each branch only sees probs where it is selected, so that probs of exactly
        # 0 or 1 give no inf * 0 = nan in the gradient of the other branch.
        is_spike = value == 0
        probs = self.probs.expand(torch.broadcast_shapes(value.shape, self.batch_shape))
        spike = torch.log1p(-torch.where(is_spike, probs, torch.zeros_like(probs)))
        slab = torch.where(is_spike, torch.ones_like(probs), probs).log()
        return torch.where(is_spike, spike, slab + self.slab.log_prob(value))

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        slab = self.slab.cdf(value)
        return (1 - self.probs) * (value >= 0).to(slab.dtype) + self.probs * slab

    def entropy(self) -> torch.Tensor:
        # Entropy with respect to the same mixed base measure as log_prob.
        return (
            -torch.special.xlogy(self.probs, self.probs)
            - torch.special.xlogy(1 - self.probs, 1 - self.probs)
            + self.probs * self.slab.entropy()
        )
