from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints


class ImproperLogUniform(TorchDistribution):
    r"""
    The scale-invariant log-uniform prior of sparse variational dropout,

    .. math:: p(w) \propto \frac{1}{|w|}, \qquad w \in \mathbb{R},

    i.e. :math:`\log |w|` is uniform on the whole real line (Molchanov et al., 2017;
    the normal-Jeffreys prior of Bayesian compression, thesis Eq. 76). The prior is
    improper: :meth:`log_prob` returns :math:`-\log|w|`, which is correct up to an
    additive constant, and it has no samples.  :meth:`sample` returns the placeholder
    :math:`w = 0` (the mode, where the density is infinite): Pyro runs a model once
    without its guide to read the shapes of its sites (``pyro.infer.Predictive``,
    autoguide set-up), and that run needs a value of the right shape.  A prior predictive
    drawn from this prior is therefore meaningless: every weight is zero.

    Paired with a Gaussian guide :math:`q(w) = \mathcal{N}(\mu, \sigma^2)` the KL
    divergence depends only on :math:`\alpha = \sigma^2/\mu^2`; it is registered with
    :func:`torch.distributions.kl.kl_divergence` as the sparse-VD approximation
    :func:`~pyro_bnn.distributions.kl.sparse_vd_kl`, whose constant is fixed so the KL
    tends to zero as :math:`\alpha \to \infty`. Monte Carlo estimates of
    :math:`\mathbb{E}_q[\log q - \log p]` built from :meth:`log_prob` (as in
    :class:`~pyro.infer.Trace_ELBO`) differ from that KL by the constant
    :data:`~pyro_bnn.distributions.kl.LOG_UNIFORM_KL_OFFSET`, which changes no gradient.

    :param torch.Size batch_shape: the batch shape; usually the shape of the weight,
        followed by ``.to_event(n)`` in a model.
    """

    arg_constraints = {}
    support = constraints.real

    def __init__(
        self, batch_shape: torch.Size | tuple[int, ...] = torch.Size(), validate_args=None
    ):
        super().__init__(torch.Size(batch_shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        try:
            compatible = torch.broadcast_shapes(self.batch_shape, batch_shape) == batch_shape
        except RuntimeError:
            compatible = False
        if not compatible:
            raise ValueError(
                f"ImproperLogUniform: cannot expand batch_shape {tuple(self.batch_shape)} "
                f"to {tuple(batch_shape)}"
            )
        new = self._get_checked_instance(ImproperLogUniform, _instance)
        super(ImproperLogUniform, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        return -value.abs().log().expand(shape)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """The placeholder ``0`` of shape ``sample_shape + batch_shape`` (see above); for
        draws from a proper log-uniform use :class:`~pyro_bnn.distributions.LogUniform`."""
        return torch.zeros(self._extended_shape(sample_shape))
