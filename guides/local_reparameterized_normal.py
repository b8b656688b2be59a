"""A ``Normal`` whose samples carry their distribution into the layers that use them."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import Distribution, Normal, register_kl
from torch.distributions.kl import _kl_normal_normal
from torch.distributions.utils import broadcast_all, lazy_property

from pyro_bnn.distributions import ImproperLogUniform
from pyro_bnn.distributions.kl import expand_to_pair, normal_kl_normal, sparse_vd_kl_normal
from pyro_bnn.ops import GaussianWeight
from pyro_bnn.ops.local_reparameterization import (  # noqa: F401 (re-exported)
    local_reparameterization,
    local_reparameterization_enabled,
)


class LocalReparameterizedNormal(dist.Normal):
    """``Normal(loc, scale)`` whose single reparameterized sample is a
    :class:`~pyro_bnn.ops.GaussianWeight`.

    It *is* a ``Normal`` (its KL divergences, ``log_prob`` and moments are the Normal's), so
    ``TraceMeanField_ELBO`` finds the registered KL against the prior.  When the sample reaches
    ``F.linear`` or ``F.conv{1,2,3}d`` the layer samples its pre-activation instead (local
    reparameterization); any other use draws one ordinary sample.  Batched draws
    (``sample_shape`` non-empty) and draws with local reparameterization turned off are ordinary
    tensors.

    :param loc: the mean.
    :param scale: the standard deviation; may be omitted when ``log_variance`` is given.
    :param log_variance: ``log scale^2``, when the caller has it (a guide's parameter).  The
        layers then get the variance as one exponential, the registered KL uses it directly,
        and the scale is only computed if something asks for it.
    """

    def __init__(self, loc, scale=None, log_variance=None, validate_args=None):
        if scale is not None:
            super().__init__(loc, scale, validate_args=validate_args)
            self.log_variance = (
                None if log_variance is None else log_variance.expand(self.batch_shape)
            )
            return
        if log_variance is None:
            raise ValueError("LocalReparameterizedNormal needs a scale or a log_variance")
        self.loc, self.log_variance = broadcast_all(loc, log_variance)
        Distribution.__init__(self, self.loc.shape, validate_args=validate_args)

    @lazy_property
    def scale(self) -> torch.Tensor:
        return self.log_variance.mul(0.5).exp()

    @lazy_property
    def variance(self) -> torch.Tensor:
        if self.log_variance is None:
            return self.scale.square()
        return self.log_variance.exp()

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LocalReparameterizedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.log_variance = (
            None if self.log_variance is None else self.log_variance.expand(batch_shape)
        )
        # Only what was already computed is carried over; the rest stays lazy.
        for name in ("scale", "variance"):
            if name in self.__dict__:
                setattr(new, name, self.__dict__[name].expand(batch_shape))
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if sample_shape or not local_reparameterization_enabled():
            return super().rsample(sample_shape)
        return GaussianWeight(self.loc, variance=self.variance)


@register_kl(LocalReparameterizedNormal, ImproperLogUniform)
def _kl_local_normal_improper_log_uniform(p, q) -> torch.Tensor:
    # The guide's own log sigma^2, when it gave one, saves a logarithm per weight.
    log_variance = 2 * p.scale.log() if p.log_variance is None else p.log_variance
    return expand_to_pair(sparse_vd_kl_normal(p.loc, log_variance), p, q)


@register_kl(LocalReparameterizedNormal, Normal)
def _kl_local_normal_normal(p, q) -> torch.Tensor:
    # From the guide's own log sigma^2, with a hand-written gradient (normal_kl_normal); the
    # general Normal-Normal KL where the guide has no log-variance or the prior is larger.
    if p.log_variance is None or q.batch_shape != p.batch_shape:
        return _kl_normal_normal(p, q)
    return normal_kl_normal(p.loc, p.log_variance, q.loc, q.scale)
