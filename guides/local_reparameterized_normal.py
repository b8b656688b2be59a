"""A ``Normal`` whose samples carry their distribution into the layers that use them."""

from __future__ import annotations

import torch

from pyro_bnn.distributions import LogVarianceNormal
from pyro_bnn.ops import GaussianWeight
from pyro_bnn.ops.local_reparameterization import (  # noqa: F401 (re-exported)
    local_reparameterization,
    local_reparameterization_enabled,
)


class LocalReparameterizedNormal(LogVarianceNormal):
    """``Normal(loc, scale)`` whose single reparameterized sample is a
    :class:`~pyro_bnn.ops.GaussianWeight`.

    It *is* a ``Normal`` (a :class:`~pyro_bnn.distributions.LogVarianceNormal`: its KL
    divergences, ``log_prob`` and moments are the Normal's), so ``TraceMeanField_ELBO`` finds
    the registered KL against the prior.  When the sample reaches
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

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if sample_shape or not local_reparameterization_enabled():
            return super().rsample(sample_shape)
        if self.log_variance is not None and "variance" not in self.__dict__:
            # The layer takes it as it is (the fused kernel exponentiates it as it reads it).
            return GaussianWeight(self.loc, log_variance=self.log_variance)
        return GaussianWeight(self.loc, variance=self.variance)
