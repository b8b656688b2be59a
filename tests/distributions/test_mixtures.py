"""Spike-and-slab, the Bayes-by-Backprop scale mixture and the proper log-uniform."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from pyro.distributions.testing.gof import auto_goodness_of_fit

from pyro_bnn.distributions import LogUniform, ScaleMixtureNormal, SpikeAndSlab

NUM_SAMPLES = 200_000


def test_spike_and_slab_atom_and_slab_match_sampling():
    probs = torch.tensor([0.05, 0.5, 0.9], dtype=torch.float64)
    d = SpikeAndSlab(probs, torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64), 0.5)
    w = d.sample((NUM_SAMPLES,))
    frequency = (w == 0).double().mean(0)
    assert ((frequency - (1 - probs)).abs() <= 4 * (probs * (1 - probs) / NUM_SAMPLES).sqrt()).all()
    for i in range(3):
        slab = w[:, i][w[:, i] != 0]
        # Conditional on w != 0 the density is the slab's: exp(log_prob) / probs.
        assert (
            auto_goodness_of_fit(slab, d.log_prob(slab.unsqueeze(-1)).exp()[:, i] / probs[i]) > 1e-3
        )


def test_spike_and_slab_log_prob_on_the_mixed_measure():
    d = SpikeAndSlab(torch.tensor(0.3, dtype=torch.float64), 1.0, 2.0)
    assert d.log_prob(torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(math.log(0.7))
    x = np.array([-1.0, 0.5, 3.0])
    expected = np.log(0.3) + scipy.stats.norm(1.0, 2.0).logpdf(x)
    np.testing.assert_allclose(d.log_prob(torch.tensor(x)).numpy(), expected, rtol=1e-12)
    cdf = d.cdf(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))
    expected_cdf = 0.3 * scipy.stats.norm(1.0, 2.0).cdf([-1.0, 0.0, 1.0]) + 0.7 * np.array(
        [0.0, 1.0, 1.0]
    )
    np.testing.assert_allclose(cdf.numpy(), expected_cdf, rtol=1e-12)


def test_spike_and_slab_entropy_matches_monte_carlo():
    d = SpikeAndSlab(
        torch.tensor([0.2, 0.7], dtype=torch.float64),
        0.0,
        torch.tensor([0.5, 3.0], dtype=torch.float64),
    )
    w = d.sample((NUM_SAMPLES,))
    neg_log_prob = -d.log_prob(w)
    se = neg_log_prob.std(0) / math.sqrt(NUM_SAMPLES)
    assert ((d.entropy() - neg_log_prob.mean(0)).abs() <= 3 * se).all()


def test_scale_mixture_log_prob_and_cdf_match_scipy():
    d = ScaleMixtureNormal(torch.tensor([0.5, 0.25], dtype=torch.float64), 1.0, math.exp(-6))
    x = np.array([[-2.0, 0.0], [1e-3, 0.5]])

    def mixture(method, w):
        return w * getattr(scipy.stats.norm(0, 1.0), method)(x) + (1 - w) * getattr(
            scipy.stats.norm(0, math.exp(-6)), method
        )(x)

    weights = np.array([0.5, 0.25])
    np.testing.assert_allclose(
        d.log_prob(torch.tensor(x)).numpy(), np.log(mixture("pdf", weights)), rtol=1e-10
    )
    np.testing.assert_allclose(d.cdf(torch.tensor(x)).numpy(), mixture("cdf", weights), rtol=1e-10)


def test_scale_mixture_component_frequencies():
    d = ScaleMixtureNormal(torch.tensor(0.3, dtype=torch.float64), 1.0, 1e-3)
    w = d.sample((NUM_SAMPLES,))
    broad = (w.abs() > 0.05).double().mean()
    # P(|w| > 0.05) = 0.3 * P(|N(0,1)| > 0.05); the narrow component never gets there.
    expected = 0.3 * 2 * scipy.stats.norm.sf(0.05)
    assert abs(broad.item() - expected) <= 4 * math.sqrt(expected * (1 - expected) / NUM_SAMPLES)


def test_log_uniform_matches_scipy():
    low, high = (
        torch.tensor([1e-3, 0.5], dtype=torch.float64),
        torch.tensor([10.0, 0.6], dtype=torch.float64),
    )
    d = LogUniform(low, high)
    reference = scipy.stats.loguniform(low.numpy(), high.numpy())
    x = d.sample((50,))
    np.testing.assert_allclose(d.cdf(x).numpy(), reference.cdf(x.numpy()), rtol=1e-10)
    u = torch.rand(50, 2, dtype=torch.float64)
    np.testing.assert_allclose(d.icdf(u).numpy(), reference.ppf(u.numpy()), rtol=1e-10)
    np.testing.assert_allclose(d.entropy().numpy(), reference.entropy(), rtol=1e-10)
    np.testing.assert_allclose(d.mean.numpy(), reference.mean(), rtol=1e-10)
    np.testing.assert_allclose(d.variance.numpy(), reference.var(), rtol=1e-8)


def test_log_uniform_rejects_values_outside_its_interval():
    with pytest.raises(ValueError, match="support"):
        LogUniform(1.0, 2.0).log_prob(torch.tensor(3.0))
