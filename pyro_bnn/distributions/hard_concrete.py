from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from .util import gauss_legendre

#: Quadrature nodes for the integrals over the continuous part on (0, 1). The
#: integrands are analytic on (gamma, zeta), which contains [0, 1], so Gauss-Legendre
#: converges geometrically at a rate set by how far gamma and zeta lie from [0, 1].
#: Against adaptive quadrature, the mean and the KL are within 1e-10 for stretch
#: limits (-0.1, 1.1) and (-0.01, 1.01); at (-0.001, 1.001) the density is nearly
#: singular at the ends and the KL is off by about 2e-3 nats.
QUADRATURE_NODES = 64


class HardConcrete(TorchDistribution):
    r"""
    The hard concrete gate of L0 regularization (Louizos et al., 2018; thesis Ch. 7).

    A binary concrete variable is stretched to :math:`(\gamma, \zeta)` and clamped to
    :math:`[0, 1]` (thesis Eq. 104-105):

    .. math::
        u \sim \mathcal{U}(0, 1), \quad
        s = \sigma\!\left(\frac{\log u - \log(1 - u) + \log\alpha}{\beta}\right), \quad
        z = \min(1, \max(0, s(\zeta - \gamma) + \gamma)).

    The law of :math:`z` has atoms at 0 and 1 and a density in between (Eq. 165):

    .. math::
        q(z) = Q(0)\,\delta_0(z) + (1 - Q(1))\,\delta_1(z) + q_{\bar s}(z)\,
               \mathbb{1}_{(0, 1)}(z),
        \qquad Q(t) = \sigma\!\left(\beta\log\frac{t - \gamma}{\zeta - t} - \log\alpha\right),

    where :math:`Q` is the CDF of the stretched variable and :math:`q_{\bar s}` its
    density. :meth:`log_prob` is taken with respect to
    :math:`\delta_0 + \delta_1 +` Lebesgue, so it returns the log atom masses at 0 and
    1 and the log density inside. Gradients of :meth:`rsample` flow to
    :math:`\log\alpha` through the continuous part (they vanish on the atoms, as in
    the paper).

    :param torch.Tensor log_alpha: location :math:`\log\alpha`.
    :param torch.Tensor temperature: :math:`\beta > 0`; 2/3 in the thesis.
    :param torch.Tensor stretch_low: :math:`\gamma < 0`; -0.1 in the thesis.
    :param torch.Tensor stretch_high: :math:`\zeta > 1`; 1.1 in the thesis.
    """

    arg_constraints = {
        "log_alpha": constraints.real,
        "temperature": constraints.positive,
        "stretch_low": constraints.less_than(0.0),
        "stretch_high": constraints.greater_than(1.0),
    }
    support = constraints.unit_interval
    has_rsample = True

    def __init__(
        self,
        log_alpha,
        temperature=2.0 / 3.0,
        stretch_low=-0.1,
        stretch_high=1.1,
        validate_args=None,
    ):
        self.log_alpha, self.temperature, self.stretch_low, self.stretch_high = broadcast_all(
            log_alpha, temperature, stretch_low, stretch_high
        )
        super().__init__(self.log_alpha.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HardConcrete, _instance)
        batch_shape = torch.Size(batch_shape)
        for name in ("log_alpha", "temperature", "stretch_low", "stretch_high"):
            setattr(new, name, getattr(self, name).expand(batch_shape))
        super(HardConcrete, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    # The stretched variable s_bar = s (zeta - gamma) + gamma has logit-CDF
    # beta * log((t - gamma) / (zeta - t)) - log_alpha for gamma < t < zeta.
    def _cdf_logit(self, t: torch.Tensor) -> torch.Tensor:
        return (
            self.temperature * ((t - self.stretch_low).log() - (self.stretch_high - t).log())
            - self.log_alpha
        )

    @property
    def log_prob_zero(self) -> torch.Tensor:
        """Log mass of the atom at 0, :math:`\\log Q(0)`."""
        return F.logsigmoid(self._cdf_logit(torch.zeros_like(self.log_alpha)))

    @property
    def log_prob_one(self) -> torch.Tensor:
        """Log mass of the atom at 1, :math:`\\log(1 - Q(1))`."""
        return F.logsigmoid(-self._cdf_logit(torch.ones_like(self.log_alpha)))

    @property
    def prob_nonzero(self) -> torch.Tensor:
        r"""
        :math:`P(z \neq 0) = 1 - Q(0) = \sigma(\log\alpha - \beta\log(-\gamma/\zeta))`,
        the expected L0 norm of one gate (thesis Eq. 106).
        """
        return torch.sigmoid(-self._cdf_logit(torch.zeros_like(self.log_alpha)))

    @property
    def point_estimate(self) -> torch.Tensor:
        r"""
        The deterministic test-time gate of thesis Eq. 107,
        :math:`\hat z = \min(1, \max(0, \sigma(\log\alpha)(\zeta - \gamma) + \gamma))`.
        """
        stretched = torch.sigmoid(self.log_alpha) * (self.stretch_high - self.stretch_low)
        return (stretched + self.stretch_low).clamp(0, 1)

    def _stretched_log_density(self, t: torch.Tensor) -> torch.Tensor:
        # With L = logit of Q(t), the density is beta * sigmoid(L) sigmoid(-L)
        # * (zeta - gamma) / ((t - gamma) (zeta - t)); written in log space for stability.
        low, high = self.stretch_low, self.stretch_high
        logit = self._cdf_logit(t)
        return (
            self.temperature.log()
            + F.logsigmoid(logit)
            + F.logsigmoid(-logit)
            + (high - low).log()
            - (t - low).log()
            - (high - t).log()
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        # Inside (0, 1) the density; the atoms take their log masses. Evaluating the
        # density at every point is safe because [0, 1] is inside (gamma, zeta).
        log_prob = self._stretched_log_density(value)
        log_prob = torch.where(value == 0, self.log_prob_zero, log_prob)
        return torch.where(value == 1, self.log_prob_one, log_prob)

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        inside = torch.sigmoid(self._cdf_logit(value.clamp(0, 1)))
        inside = torch.where(value >= 1, torch.ones_like(inside), inside)
        return torch.where(value < 0, torch.zeros_like(inside), inside)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        # Q(t) = u  <=>  s = sigmoid((logit(u) + log_alpha) / beta), the sampling recipe.
        logit_u = value.log() - torch.log1p(-value)
        s = torch.sigmoid((logit_u + self.log_alpha) / self.temperature)
        return (s * (self.stretch_high - self.stretch_low) + self.stretch_low).clamp(0, 1)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        finfo = torch.finfo(self.log_alpha.dtype)
        u = torch.rand(shape, dtype=self.log_alpha.dtype, device=self.log_alpha.device)
        return self.icdf(u.clamp(finfo.tiny, 1 - finfo.eps))

    def _quadrature(self, batch_ndims: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Gauss-Legendre nodes and weights on (0, 1), shaped ``(num_nodes,)`` followed by
        ``batch_ndims`` (default ``len(batch_shape)``) singleton dims for broadcasting.
        """
        nodes, weights = gauss_legendre(
            QUADRATURE_NODES, self.log_alpha.dtype, self.log_alpha.device
        )
        if batch_ndims is None:
            batch_ndims = len(self.batch_shape)
        view = (-1,) + (1,) * batch_ndims
        return nodes.reshape(view), weights.reshape(view)

    @property
    def mean(self) -> torch.Tensor:
        # E[z] = int_0^1 P(z > t) dt, and P(z > t) = 1 - Q(t) on [0, 1).
        nodes, weights = self._quadrature()
        return (weights * torch.sigmoid(-self._cdf_logit(nodes))).sum(0)

    def entropy(self) -> torch.Tensor:
        r"""
        Entropy with respect to the base measure of :meth:`log_prob`,
        :math:`\delta_0 + \delta_1 +` Lebesgue on :math:`(0, 1)`:

        .. math::
            H = -Q(0)\log Q(0) - P(1)\log P(1) - \int_0^1 q(z)\log q(z)\,dz,

        the integral evaluated with the Gauss-Legendre rule of the KL.
        """
        nodes, weights = self._quadrature()
        log_density = self._stretched_log_density(nodes)
        continuous = -(weights * log_density.exp() * log_density).sum(0)
        log_zero, log_one = self.log_prob_zero, self.log_prob_one
        return continuous - log_zero.exp() * log_zero - log_one.exp() * log_one

    @property
    def variance(self) -> torch.Tensor:
        # The central moment P(0) m^2 + P(1) (1 - m)^2 + int_0^1 (t - m)^2 q(t) dt sums
        # non-negative terms, so it has none of the cancellation of E[z^2] - m^2 when the
        # gate is nearly always 0 or 1.
        nodes, weights = self._quadrature()
        mean = self.mean
        continuous = weights * self._stretched_log_density(nodes).exp() * (nodes - mean).square()
        return (
            self.log_prob_zero.exp() * mean.square()
            + self.log_prob_one.exp() * (1 - mean).square()
            + continuous.sum(0)
        )
