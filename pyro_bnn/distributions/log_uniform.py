from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all


class LogUniform(TorchDistribution):
    r"""
    Log-uniform distribution on a positive interval :math:`[a, b]`,

    .. math:: p(\theta) = \frac{1}{\theta\,(\log b - \log a)}, \qquad a \le \theta \le b,

    i.e. :math:`\log\theta \sim \mathrm{Uniform}(\log a, \log b)`. This is the proper,
    truncated version of the scale-invariant prior :class:`ImproperLogUniform`, used
    on the multiplicative noise of structured Bayesian pruning. It matches
    ``scipy.stats.loguniform(a, b)``.

    :param torch.Tensor low: lower end :math:`a > 0`.
    :param torch.Tensor high: upper end :math:`b > a`.
    """

    arg_constraints = {
        "low": constraints.positive,
        "high": constraints.dependent(is_discrete=False, event_dim=0),
    }
    has_rsample = True

    def __init__(self, low, high, validate_args=None):
        self.low, self.high = broadcast_all(low, high)
        super().__init__(self.low.shape, validate_args=validate_args)
        if self._validate_args and not torch.lt(self.low, self.high).all():
            raise ValueError(
                "LogUniform: expected parameter high to be greater than low, got "
                f"low={self.low} and high={self.high}"
            )

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LogUniform, _instance)
        batch_shape = torch.Size(batch_shape)
        new.low = self.low.expand(batch_shape)
        new.high = self.high.expand(batch_shape)
        super(LogUniform, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.low, self.high)

    @property
    def _log_width(self) -> torch.Tensor:
        return self.high.log() - self.low.log()

    @property
    def mean(self) -> torch.Tensor:
        return (self.high - self.low) / self._log_width

    @property
    def variance(self) -> torch.Tensor:
        # E[theta^2] - E[theta]^2 cancels badly for a narrow interval: compute it in
        # double precision.
        low, high = self.low.double(), self.high.double()
        log_width = high.log() - low.log()
        second_moment = (high.square() - low.square()) / (2 * log_width)
        mean = (high - low) / log_width
        return (second_moment - mean.square()).to(self.low.dtype)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.low.dtype, device=self.low.device)
        return (self.low.log() + u * self._log_width).exp()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return -value.log() - self._log_width.log()

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return ((value.log() - self.low.log()) / self._log_width).clamp(0, 1)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        return (self.low.log() + value * self._log_width).exp()

    def entropy(self) -> torch.Tensor:
        # H = E[log theta] + log(log b - log a), and E[log theta] = (log a + log b) / 2.
        return 0.5 * (self.low.log() + self.high.log()) + self._log_width.log()
