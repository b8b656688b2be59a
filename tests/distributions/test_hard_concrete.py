import math

import pytest
import scipy.stats
import torch
from pyro.distributions.testing.gof import auto_goodness_of_fit

from pyro_bnn.distributions import HardConcrete
from pyro_bnn.distributions.util import gauss_legendre

NUM_SAMPLES = 200_000
LOG_ALPHA = torch.tensor([-4.0, -1.0, 0.0, 1.5, 5.0], dtype=torch.float64)


def _gate(**kwargs):
    return HardConcrete(LOG_ALPHA, **kwargs)


PARAMETERS = [
    {},
    {"temperature": 0.3},
    {"temperature": 1.2, "stretch_low": -0.3, "stretch_high": 1.05},
]


def assert_frequency(count_mask, probability):
    """Sampling frequencies within 4 binomial standard errors of the probabilities."""
    frequency = count_mask.double().mean(0)
    se = (probability * (1 - probability) / NUM_SAMPLES).sqrt()
    assert ((frequency - probability).abs() <= 4 * se + 1e-12).all(), (frequency, probability)


@pytest.mark.parametrize("kwargs", PARAMETERS, ids=str)
def test_atoms_and_continuous_mass_match_sampling_frequencies(kwargs):
    gate = _gate(**kwargs)
    z = gate.sample((NUM_SAMPLES,))
    p0, p1 = gate.log_prob_zero.exp(), gate.log_prob_one.exp()
    assert_frequency(z == 0, p0)
    assert_frequency(z == 1, p1)
    assert_frequency((z > 0) & (z < 1), 1 - p0 - p1)
    assert_frequency(z != 0, gate.prob_nonzero)


def test_expected_l0_closed_form():
    # Thesis Eq. 106 with the default constants: sigmoid(log_alpha - (2/3) log(0.1 / 1.1)).
    gate = _gate()
    expected = torch.sigmoid(LOG_ALPHA - 2 / 3 * math.log(0.1 / 1.1))
    assert torch.allclose(gate.prob_nonzero, expected, rtol=1e-12)
    assert torch.allclose(gate.prob_nonzero, 1 - gate.cdf(torch.zeros(5, dtype=torch.float64)))


@pytest.mark.parametrize("kwargs", PARAMETERS, ids=str)
def test_density_integrates_with_atoms_to_one(kwargs):
    gate = _gate(**kwargs)
    nodes, weights = gauss_legendre(200, torch.float64, "cpu")
    continuous = (weights[:, None] * gate.log_prob(nodes[:, None]).exp()).sum(0)
    total = continuous + gate.log_prob_zero.exp() + gate.log_prob_one.exp()
    assert torch.allclose(total, torch.ones(5, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("kwargs", PARAMETERS, ids=str)
def test_cdf_is_consistent_with_density_icdf_and_samples(kwargs):
    gate = _gate(**kwargs)
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)[:, None]
    h = 1e-6
    numerical_density = (gate.cdf(t + h) - gate.cdf(t - h)) / (2 * h)
    assert torch.allclose(numerical_density, gate.log_prob(t).exp(), rtol=1e-5)
    # icdf inverts cdf on the continuous part.
    assert torch.allclose(gate.icdf(gate.cdf(t)), t.expand(-1, 5), atol=1e-9)
    # Right-continuous with the atoms: F(0) = P(0), F(1^-) = 1 - P(1), F(1) = 1.
    zeros, ones = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    assert torch.allclose(gate.cdf(zeros), gate.log_prob_zero.exp())
    assert torch.allclose(gate.cdf(ones - 1e-12), 1 - gate.log_prob_one.exp(), atol=1e-9)
    assert torch.equal(gate.cdf(ones), ones)
    # Empirical CDF at a few points.
    z = gate.sample((NUM_SAMPLES,))
    for point in (0.0, 0.25, 0.5, 0.9):
        assert_frequency(z <= point, gate.cdf(torch.full((5,), point, dtype=torch.float64)))


def test_goodness_of_fit_of_the_continuous_part():
    # Conditional on 0 < z < 1: Pyro's density test against log_prob, and a
    # Kolmogorov-Smirnov test against the conditional CDF.
    gate = _gate()
    z = gate.sample((100_000,))
    atom0 = gate.log_prob_zero.exp()
    continuous_mass = 1 - atom0 - gate.log_prob_one.exp()
    for i in range(5):
        inside = z[:, i][(z[:, i] > 0) & (z[:, i] < 1)]
        density = gate.log_prob(inside.unsqueeze(-1)).exp()[:, i] / continuous_mass[i]
        assert auto_goodness_of_fit(inside, density) > 1e-3

        def conditional_cdf(t, i=i):
            cdf = gate.cdf(torch.as_tensor(t).unsqueeze(-1))[:, i]
            return ((cdf - atom0[i]) / continuous_mass[i]).numpy()

        assert scipy.stats.kstest(inside.numpy(), conditional_cdf).pvalue > 1e-3


def test_point_estimate_is_thesis_eq_107():
    gate = _gate()
    expected = (torch.sigmoid(LOG_ALPHA) * 1.2 - 0.1).clamp(0, 1)
    assert torch.allclose(gate.point_estimate, expected)
    assert gate.point_estimate[0] == 0 and gate.point_estimate[-1] == 1


def test_rsample_gradient_matches_the_derivative_of_the_mean():
    log_alpha = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    HardConcrete(log_alpha).rsample((NUM_SAMPLES,)).mean(0).sum().backward()
    sampled = log_alpha.grad.clone()
    log_alpha.grad = None
    HardConcrete(log_alpha).mean.sum().backward()
    assert torch.allclose(sampled, log_alpha.grad, atol=5e-3)
    assert (log_alpha.grad > 0).all()


def test_samples_are_exact_zeros_and_ones_in_float32():
    gate = HardConcrete(torch.tensor([-6.0, 6.0]))
    z = gate.sample((1000,))
    assert z.dtype == torch.float32
    assert (z[:, 0] == 0).float().mean() > 0.9 and (z[:, 1] == 1).float().mean() > 0.9


def test_log_prob_outside_the_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="support"):
        HardConcrete(torch.tensor(0.0)).log_prob(torch.tensor(1.5))
