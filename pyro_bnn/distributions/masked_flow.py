"""A base distribution pushed through masked coupling steps whose masks are random."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from .masked_coupling import MaskedCoupling


def push_forward(
    steps: Sequence[MaskedCoupling], z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``z`` through the coupling steps, each with a fresh Bernoulli(1/2) mask per entry, and
    the summed log-determinant of the Jacobian, shape ``z.shape[:-1]``."""
    log_det = z.new_zeros(z.shape[:-1])
    for step in steps:
        z, step_log_det = step(z, torch.bernoulli(torch.full_like(z, 0.5)))
        log_det = log_det + step_log_det
    return z, log_det


class MaskedFlow(TorchDistribution):
    r"""``z = T_K(... T_1(z_0))`` with ``z_0 ~ base`` and :class:`MaskedCoupling` steps ``T_k``,
    each drawing a fresh Bernoulli(1/2) mask per draw (the ``q(z)`` of multiplicative
    normalizing flows, thesis Eq. 51 and 61):

    .. math:: \log q(z) = \log q(z_0) - \sum_k \log\left|\det \partial T_k / \partial z\right|.

    The masks are auxiliary variables drawn alike by ``q`` and the inverse model ``r``, so
    the density is the one given the draw's masks, known only for the distribution's own
    draws: :meth:`log_prob` answers for any tensor this instance returned (every draw is
    remembered, so the layers' per-example draws do not disturb the site's), and refuses
    other values.  Unlike ``TransformedDistribution`` with cached transforms, interleaved draws
    keep their densities.

    :param base: ``q(z_0)`` with event shape ``(dim,)``, reparameterizable.
    :param steps: the coupling steps, applied in order.
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, base, steps: Sequence[MaskedCoupling], validate_args=None):
        if len(base.event_shape) != 1:
            raise ValueError(
                f"MaskedFlow needs a base distribution over vectors, got event shape "
                f"{tuple(base.event_shape)}"
            )
        for step in steps:
            if not isinstance(step, MaskedCoupling) or step.dim != base.event_shape[0]:
                raise ValueError(
                    f"MaskedFlow over {base.event_shape[0]} entries needs MaskedCoupling steps "
                    f"of that size, got {step!r}"
                )
        self.base = base
        self.steps = list(steps)
        self._densities: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None) -> MaskedFlow:
        return MaskedFlow(self.base.expand(torch.Size(batch_shape)), self.steps)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        z_0 = self.base.rsample(sample_shape)
        z, log_det = push_forward(self.steps, z_0)
        self._densities[id(z)] = (z, self.base.log_prob(z_0) - log_det)
        return z

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        known = self._densities.get(id(value))
        if known is None or known[0] is not value:
            raise NotImplementedError(
                "MaskedFlow knows the density of its own draws only (its masks are random)"
            )
        return known[1]
