"""Parameters at the ends of their ranges and float32: finite gradients, no cancellation."""

import pytest
import scipy.stats
import torch

from pyro_bnn.distributions import (
    HardConcrete,
    ImproperLogUniform,
    LogUniform,
    ScaleMixtureNormal,
    SpikeAndSlab,
    half_cauchy_decomposition,
)


@pytest.mark.parametrize("probs, value, expected", [(1.0, 0.5, 1.0), (0.0, 0.0, -1.0)])
def test_spike_and_slab_gradient_at_probs_zero_and_one(probs, value, expected):
    probs = torch.tensor(probs, dtype=torch.float64, requires_grad=True)
    SpikeAndSlab(probs, 0.3, 1.0).log_prob(torch.tensor(value, dtype=torch.float64)).backward()
    assert probs.grad.item() == pytest.approx(expected)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_scale_mixture_gradient_at_weight_zero_and_one(weight):
    weight = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
    d = ScaleMixtureNormal(weight, 1.0, 0.1)
    d.log_prob(torch.tensor(0.5, dtype=torch.float64)).backward()
    n1, n2 = scipy.stats.norm(0, 1.0).pdf(0.5), scipy.stats.norm(0, 0.1).pdf(0.5)
    density = weight.item() * n1 + (1 - weight.item()) * n2
    assert weight.grad.item() == pytest.approx((n1 - n2) / density, rel=1e-10)
    far = d.log_prob(torch.tensor(float("inf"), dtype=torch.float64))
    assert far.item() == float("-inf")


def test_hard_concrete_variance_has_no_float32_cancellation():
    log_alpha = torch.linspace(-20, 20, 401)
    variance32 = HardConcrete(log_alpha).variance
    variance64 = HardConcrete(log_alpha.double()).variance
    assert (variance32 >= 0).all()
    assert torch.allclose(variance32.double(), variance64, rtol=1e-3, atol=1e-12)


def test_narrow_log_uniform_variance_in_float32():
    variance = LogUniform(torch.tensor(1.0), torch.tensor(1.001)).variance
    assert variance.dtype == torch.float32
    assert variance.item() == pytest.approx(scipy.stats.loguniform(1.0, 1.001).var(), rel=1e-4)


def test_improper_log_uniform_expand_checks_shapes():
    assert ImproperLogUniform((1, 3)).expand((2, 3)).batch_shape == (2, 3)
    with pytest.raises(ValueError, match="cannot expand"):
        ImproperLogUniform((3,)).expand((4,))


def test_half_cauchy_decomposition_keeps_the_dtype():
    gamma, inverse_gamma = half_cauchy_decomposition(torch.tensor(2.0, dtype=torch.float64))
    assert gamma.rate.dtype == inverse_gamma.rate.dtype == torch.float64
