"""A ``Normal`` that can be given its log-variance instead of its scale."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import Distribution
from torch.distributions.utils import broadcast_all, lazy_property


class LogVarianceNormal(dist.Normal):
    """``Normal(loc, scale)`` that keeps ``log_variance = log scale^2`` when it was built from it.

    Mean-field guides parameterize each weight by its mean and log-variance (Molchanov et al.,
    2017).  A plain ``Normal`` would take ``scale = exp(log_variance / 2)``, and its KL
    divergences would take the logarithm again, one exponential and one logarithm per weight
    and step.  This class carries ``log_variance`` along, so the registered KLs
    (:func:`~pyro_bnn.distributions.kl.sparse_vd_kl_normal` against the log-uniform prior,
    :func:`~pyro_bnn.distributions.kl.normal_kl_normal` against a Normal) read it directly,
    and computes ``scale`` and ``variance`` only if something asks for them.  It *is* a
    ``Normal``: its density, sampling and every other KL are the Normal's.

    :param loc: the mean.
    :param scale: the standard deviation; may be omitted when ``log_variance`` is given.
    :param log_variance: ``log scale^2``, broadcastable with ``loc``; when given alone the
        batch shape is the broadcast shape of the two.
    """

    def __init__(self, loc, scale=None, log_variance=None, validate_args=None):
        if scale is not None:
            super().__init__(loc, scale, validate_args=validate_args)
            self.log_variance = (
                None if log_variance is None else log_variance.expand(self.batch_shape)
            )
            return
        if log_variance is None:
            raise ValueError(f"{type(self).__name__} needs a scale or a log_variance")
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
        new = self._get_checked_instance(type(self), _instance)
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
