from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import Normal, constraints
from torch.distributions.utils import broadcast_all


class ScaleMixtureNormal(TorchDistribution):
    r"""
    The two-component scale-mixture prior of Bayes by Backprop (Blundell et al., 2015),

    .. math:: p(w) = \pi\,\mathcal{N}(w \mid 0, \sigma_1^2)
                     + (1 - \pi)\,\mathcal{N}(w \mid 0, \sigma_2^2),

    a broad component that admits large weights mixed with a narrow one that pulls
    most weights towards zero; the paper's MNIST choice is :math:`\pi = 1/2`,
    :math:`\sigma_1 = 1`, :math:`\sigma_2 = e^{-6}`.

    The KL divergence from a Gaussian guide to this prior has no closed form, so none
    is registered: :class:`~pyro.infer.TraceMeanField_ELBO` then falls back to the
    single-sample Monte Carlo term :math:`\log q(w) - \log p(w)`, which is what the
    paper optimizes. Sampling is exact but not reparameterizable (the component is
    discrete).

    :param torch.Tensor weight: mixture weight :math:`\pi` of the first component.
    :param torch.Tensor scale1: standard deviation :math:`\sigma_1 > 0` of the first.
    :param torch.Tensor scale2: standard deviation :math:`\sigma_2 > 0` of the second.
    """

    arg_constraints = {
        "weight": constraints.unit_interval,
        "scale1": constraints.positive,
        "scale2": constraints.positive,
    }
    support = constraints.real
    has_rsample = False

    def __init__(self, weight, scale1, scale2, validate_args=None):
        self.weight, self.scale1, self.scale2 = broadcast_all(weight, scale1, scale2)
        super().__init__(self.weight.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ScaleMixtureNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.weight = self.weight.expand(batch_shape)
        new.scale1 = self.scale1.expand(batch_shape)
        new.scale2 = self.scale2.expand(batch_shape)
        super(ScaleMixtureNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros_like(self.weight)

    @property
    def variance(self) -> torch.Tensor:
        return self.weight * self.scale1.square() + (1 - self.weight) * self.scale2.square()

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            first = torch.bernoulli(self.weight.expand(shape)).bool()
            scale = torch.where(first, self.scale1.expand(shape), self.scale2.expand(shape))
            return scale * torch.randn(shape, dtype=scale.dtype, device=scale.device)

    def _components(self) -> tuple[Normal, Normal]:
        zero = torch.zeros_like(self.weight)
        return (
            Normal(zero, self.scale1, validate_args=False),
            Normal(zero, self.scale2, validate_args=False),
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log1, log2 = (component.log_prob(value) for component in self._components())
        # log(pi w1 + (1 - pi) w2) relative to the larger component; unlike a logsumexp
        # over log(pi), this keeps the gradient in pi finite at pi = 0 and pi = 1.
        top = torch.maximum(log1, log2).clamp(min=torch.finfo(log1.dtype).min)
        mixed = self.weight * (log1 - top).exp() + (1 - self.weight) * (log2 - top).exp()
        return top + mixed.log()

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        first, second = self._components()
        return self.weight * first.cdf(value) + (1 - self.weight) * second.cdf(value)
