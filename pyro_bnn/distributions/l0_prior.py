from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

_LOG_2 = math.log(2.0)


class L0Prior(TorchDistribution):
    r"""
    A proper prior over a gate :math:`z \in [0, 1]` that charges ``penalty`` nats when the
    gate is open: its KL divergence from a :class:`HardConcrete` posterior is the expected
    L0 penalty of L0 regularization (Louizos et al., 2018; thesis Eq. 97, 106, 110-111),
    registered in :mod:`pyro_bnn.distributions.kl`.

    It is defined on the base measure of :meth:`HardConcrete.log_prob`,
    :math:`\delta_0 + \delta_1 +` Lebesgue on :math:`(0, 1)`, as

    .. math::
        p(z) = \frac{e^{-\lambda\,[z \neq 0]}}{1 + 2e^{-\lambda}}, \qquad
        \log p(z) = -\lambda\,[z \neq 0] - \log(1 + 2e^{-\lambda}),

    i.e. an atom at 0 of mass :math:`1 / (1 + 2e^{-\lambda})`, an atom at 1 of mass
    :math:`e^{-\lambda} / (1 + 2e^{-\lambda})` and a uniform density of the same total mass on
    :math:`(0, 1)`. The atom at 1 is needed because the hard-concrete posterior has one: a
    prior without it (only :math:`\delta_0` + Lebesgue) would make the KL infinite. In the
    code-length view of thesis App. 10.5.1 a closed gate costs :math:`\log(1 + 2e^{-\lambda})`
    nats and an open one :math:`\lambda` more, so

    .. math::
        \mathrm{KL}(q \,\|\, p) = \lambda\,q(z \neq 0) + \log(1 + 2e^{-\lambda}) - H[q],

    with :math:`H[q]` the entropy of :math:`q` with respect to the same base measure
    (:meth:`HardConcrete.entropy`). With ``gate_entropy=False`` (the default, the thesis's
    experiments, Eq. 97) the registered KL keeps only :math:`\lambda\,q(z \neq 0)`: it is then
    the KL up to :math:`-H[q]` and a term constant in :math:`q`, exactly the expected-L0
    objective. With ``gate_entropy=True`` it is the full KL (Eq. 160 keeps the gate entropy).

    ``penalty`` is per gate and broadcasts. For a group gate the caller passes
    :math:`\lambda |g|` (Eq. 110), plus :math:`\tfrac{\lambda_2}{2}\sum_{j \in g}\tilde\theta_j^2`
    for the gated L2 term of Eq. 111; it may require gradients.

    :param torch.Tensor penalty: :math:`\lambda \ge 0`, nats per open gate.
    :param bool gate_entropy: whether the registered KL against a hard-concrete posterior
        includes :math:`\log(1 + 2e^{-\lambda}) - H[q]`.
    """

    arg_constraints = {"penalty": constraints.nonnegative}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, penalty, gate_entropy: bool = False, validate_args=None):
        (self.penalty,) = broadcast_all(penalty)
        self.gate_entropy = bool(gate_entropy)
        super().__init__(self.penalty.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(L0Prior, _instance)
        batch_shape = torch.Size(batch_shape)
        new.penalty = self.penalty.expand(batch_shape)
        new.gate_entropy = self.gate_entropy
        super(L0Prior, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def log_normalizer(self) -> torch.Tensor:
        r""":math:`\log(1 + 2e^{-\lambda})`."""
        return F.softplus(_LOG_2 - self.penalty)

    @property
    def _open_mass(self) -> torch.Tensor:
        # P(z = 1) = P(0 < z < 1) = e^-lambda / (1 + 2 e^-lambda) = sigmoid(log 2 - lambda) / 2.
        return 0.5 * torch.sigmoid(_LOG_2 - self.penalty)

    @property
    def prob_zero(self) -> torch.Tensor:
        r""":math:`p(z = 0) = 1 / (1 + 2e^{-\lambda})`."""
        return torch.sigmoid(self.penalty - _LOG_2)

    @property
    def mean(self) -> torch.Tensor:
        # P(1) + P(0 < z < 1) / 2.
        return 1.5 * self._open_mass

    @property
    def variance(self) -> torch.Tensor:
        # E[z^2] = P(1) + P(0 < z < 1) / 3 = (4/3) m with m the mass of each part, mean 1.5 m.
        m = self._open_mass
        return m * (4.0 / 3.0 - 2.25 * m)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            part = torch.rand(shape, dtype=self.penalty.dtype, device=self.penalty.device)
            inside = torch.rand(shape, dtype=self.penalty.dtype, device=self.penalty.device)
            inside = inside.clamp(min=torch.finfo(inside.dtype).tiny)
            m = self._open_mass.expand(shape)
            z = torch.where(part < 2 * m, inside, torch.zeros_like(inside))
            return torch.where(part < m, torch.ones_like(z), z)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        open_cost = torch.where(value != 0, self.penalty, torch.zeros_like(self.penalty))
        return -open_cost - self.log_normalizer
