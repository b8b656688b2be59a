"""Generic checks run on every distribution fixture (shapes, support, scipy, moments, ...)."""

import pickle

import numpy as np
import pytest
import scipy.stats
import torch
from pyro.distributions.testing.gof import auto_goodness_of_fit

from .dist_fixtures import FIXTURES, OURS, examples

TEST_FAILURE_RATE = 1e-3

sampleable = [f for f in OURS if f.sampleable]
with_scipy = [f for f in FIXTURES if f.scipy is not None]


def _values(d, n=5):
    """Points of the support to evaluate at: samples, or arbitrary reals if improper."""
    if d.has_rsample or d.__class__.sample is not torch.distributions.Distribution.sample:
        try:
            return d.sample((n,))
        except NotImplementedError:
            pass
    return torch.randn((n,) + d.batch_shape + d.event_shape, dtype=torch.float64)


@pytest.mark.parametrize("fixture, example", **examples(OURS))
def test_shapes(fixture, example):
    d = fixture.build(example)
    shape = d.batch_shape + d.event_shape
    if fixture.sampleable:
        assert d.sample().shape == shape
        assert d.sample((2, 5)).shape == (2, 5) + shape
        if d.has_rsample:
            assert d.rsample((5,)).shape == (5,) + shape
    else:
        # An improper prior has no samples: a placeholder of the right shape (the mode, 0),
        # which is what Pyro's shape-finding runs of a model need.
        assert torch.equal(d.sample((2,)), torch.zeros((2,) + shape))
    value = _values(d)
    assert d.log_prob(value).shape == (5,) + d.batch_shape


@pytest.mark.parametrize("fixture, example", **examples(OURS))
def test_expand(fixture, example):
    d = fixture.build(example)
    expanded = d.expand((4,) + d.batch_shape)
    assert expanded.batch_shape == (4,) + d.batch_shape
    assert expanded.event_shape == d.event_shape
    assert type(expanded) is type(d)
    value = _values(d, n=4).unsqueeze(1)
    assert torch.equal(expanded.log_prob(value), d.log_prob(value).expand((4, 4) + d.batch_shape))
    if fixture.sampleable:
        assert expanded.sample().shape == expanded.batch_shape + d.event_shape


@pytest.mark.parametrize("fixture, example", **examples(sampleable))
def test_support(fixture, example):
    d = fixture.build(example)
    samples = d.sample((1000,))
    assert d.support.check(samples).all()
    assert torch.isfinite(d.log_prob(samples)).all()


@pytest.mark.parametrize("fixture, example", **examples(with_scipy))
def test_log_prob_matches_scipy(fixture, example):
    d = fixture.build(example)
    reference = fixture.scipy(example)
    value = d.sample((20,))
    expected = reference.logpdf(value.numpy())
    np.testing.assert_allclose(d.log_prob(value).numpy(), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("fixture, example", **examples(sampleable))
def test_sample_moments(fixture, example):
    d = fixture.build(example)
    n = 200_000
    x = d.sample((n,))
    centred = x - x.mean(0)
    sample_var = centred.square().mean(0)
    mean_se = (sample_var / n).sqrt()
    var_se = ((centred.pow(4).mean(0) - sample_var.square()) / n).sqrt()
    assert ((x.mean(0) - d.mean).abs() <= 4 * mean_se + 1e-12).all()
    assert ((sample_var - d.variance).abs() <= 4 * var_se + 1e-12).all()


@pytest.mark.parametrize(
    "fixture, example",
    **examples(
        [
            f
            for f in sampleable
            if f.name in ("LogUniform", "ScaleMixtureNormal") or "Matrix" in f.name
        ]
    ),
)
def test_goodness_of_fit(fixture, example):
    # Distributions with a density w.r.t. Lebesgue measure; the mixed ones
    # (spike-and-slab, hard concrete) have their own tests of atoms and density.
    d = fixture.build(example)
    samples = d.sample((20000,))
    if d.event_shape:
        # Pyro's nearest-neighbour test is badly calibrated beyond two dimensions.
        # For a Gaussian, 2 (log p(mean) - log p(x)) must be chi^2 with k = dim
        # degrees of freedom if sample() and log_prob() agree.
        k = d.event_shape.numel()
        samples = 2 * (d.log_prob(d.mean) - d.log_prob(samples))
        probs = torch.from_numpy(scipy.stats.chi2(k).pdf(samples.numpy()))
    else:
        probs = d.log_prob(samples).exp()
    samples, probs = samples.reshape(len(samples), -1), probs.reshape(len(samples), -1)
    for i in range(probs.shape[1]):
        gof = auto_goodness_of_fit(samples[:, i], probs[:, i])
        assert gof > TEST_FAILURE_RATE, f"batch element {i}: p-value {gof}"


@pytest.mark.parametrize("fixture, example", **examples(OURS))
def test_pickle(fixture, example):
    d = fixture.build(example)
    restored = pickle.loads(pickle.dumps(d))
    assert type(restored) is type(d)
    assert restored.batch_shape == d.batch_shape and restored.event_shape == d.event_shape
    value = _values(d)
    assert torch.equal(restored.log_prob(value), d.log_prob(value))


@pytest.mark.parametrize(
    "fixture, params, name",
    [(f, params, name) for f in FIXTURES for params, name in f.invalid],
    ids=[f"{f.name}-{name}" for f in FIXTURES for _, name in f.invalid],
)
def test_invalid_parameter_is_named(fixture, params, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        fixture.build(params)
