"""TraceKL_ELBO: Pyro's mean-field estimator without the log densities it does not use."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from pyro.nn import PyroModule, PyroSample
from torch import nn
from torch.distributions import constraints, kl_divergence

from pyro_bnn.distributions import ImproperLogUniform, ScaleMixtureNormal
from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.infer import TraceKL_ELBO

NUM_SE = 5.0


def f64(value):
    return torch.tensor(value, dtype=torch.float64)


class Regression(PyroModule):
    """A linear regression whose latent sites all have a registered KL divergence."""

    def __init__(self, in_features=3, out_features=2, subsample_size=None):
        super().__init__()
        self.subsample_size = subsample_size
        self.fc = PyroModule[nn.Linear](in_features, out_features)
        self.fc.weight = PyroSample(ImproperLogUniform((out_features, in_features)).to_event(2))
        self.fc.bias = PyroSample(dist.Normal(0.0, 1.0).expand([out_features]).to_event(1))
        self.noise = PyroSample(dist.Gamma(2.0, 2.0))

    def forward(self, x, y):
        mean = self.fc(x)
        noise = self.noise
        with pyro.plate("data", x.shape[0], subsample_size=self.subsample_size) as idx:
            pyro.sample("obs", dist.Normal(mean[idx], noise).to_event(1), obs=y[idx])


@pytest.mark.parametrize("subsample_size", [None, 8])
def test_same_loss_as_trace_mean_field_when_every_kl_is_registered(subsample_size):
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    model = Regression(subsample_size=subsample_size)
    guide = AutoMeanFieldNormal(model, init_log_variance=-2.0)
    guide(x, y)
    for seed in range(3):
        pyro.set_rng_seed(seed)
        expected = TraceMeanField_ELBO().loss(model, guide, x, y)
        pyro.set_rng_seed(seed)
        elbo = TraceKL_ELBO()
        actual = elbo.loss(model, guide, x, y)
        assert actual == expected
        # Both terms, with KL as a positive number: loss = kl - data.
        assert elbo.last_terms["data"] - elbo.last_terms["kl"] == pytest.approx(-actual, rel=1e-6)


def test_same_gradients_as_trace_mean_field():
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    model = Regression()
    guide = AutoMeanFieldNormal(model, init_log_variance=-2.0)
    guide(x, y)
    params = list(guide.parameters())
    grads = []
    for elbo in (TraceMeanField_ELBO(), TraceKL_ELBO()):
        pyro.set_rng_seed(1)
        loss = elbo.differentiable_loss(model, guide, x, y)
        grads.append(torch.autograd.grad(loss, params))
    for expected, actual in zip(*grads, strict=True):
        torch.testing.assert_close(actual, expected)


def test_no_weight_sample_where_a_kl_is_registered():
    # Local reparameterization never needs a weight sample, and neither does the KL term.
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    model = Regression()
    guide = AutoMeanFieldNormal(model, init_log_variance=-2.0)
    guide(x, y)
    seen = {}
    original = TraceKL_ELBO._differentiable_loss_particle

    def spy(self, model_trace, guide_trace):
        result = original(self, model_trace, guide_trace)
        seen["weight"] = guide_trace.nodes["fc.weight"]["value"]
        return result

    elbo = TraceKL_ELBO()
    elbo._differentiable_loss_particle = spy.__get__(elbo)
    elbo.loss(model, guide, x, y)
    assert seen["weight"]._sample is None


# ------------------------------------------------------------------------- Monte Carlo terms


class MixturePriorRegression(PyroModule):
    """Weight with a Normal prior (registered KL), bias with a scale-mixture prior (none)."""

    def __init__(self, prior_weight, noise_scale):
        super().__init__()
        self.noise_scale = noise_scale
        self.fc = PyroModule[nn.Linear](2, 1)
        self.fc.weight = PyroSample(dist.Normal(f64(0.0), 1.0).expand([1, 2]).to_event(2))
        self.fc.bias = PyroSample(prior_weight)

    def forward(self, x, y):
        mean = self.fc(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, self.noise_scale), obs=y)


def expected_log_prob(fn, loc, scale, num_nodes=200):
    """E[fn(loc + scale z)], z ~ N(0, 1), by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    nodes, weights = f64(nodes), f64(weights) / math.sqrt(2 * math.pi)
    return (weights[:, None] * fn(loc + scale * nodes[:, None])).sum(0)


def test_unbiased_where_no_kl_is_registered():
    num_draws = 1000
    noise_scale = 1.0
    prior = ScaleMixtureNormal(f64([0.5]), f64([1.0]), f64([0.3])).to_event(1)
    model = MixturePriorRegression(prior, noise_scale)
    x = torch.randn(10, 2, dtype=torch.float64)
    y = torch.randn(10, dtype=torch.float64)
    # A narrow posterior keeps the data term's noise, and so the standard error, small, and
    # makes the bias's Monte Carlo KL term (about 1 nat) large against it.
    guide = AutoMeanFieldNormal(model, init_log_variance=-4.0)
    guide(x, y)
    with pytest.raises(NotImplementedError):
        kl_divergence(guide.get_posterior("fc.bias"), prior.base_dist)

    elbo = TraceKL_ELBO()
    losses = f64([elbo.loss(model, guide, x, y) for _ in range(num_draws)])

    with torch.no_grad():
        q_weight = guide.get_posterior("fc.weight")
        q_bias = guide.get_posterior("fc.bias")
        kl_weight = kl_divergence(q_weight, dist.Normal(0.0, 1.0)).sum()
        # E_q[log q - log p] for the bias, by quadrature.
        cross_entropy = -expected_log_prob(prior.base_dist.log_prob, q_bias.loc, q_bias.scale)
        kl_bias = (cross_entropy - q_bias.entropy()).sum()
        # The pre-activation is N(m, v) per example; E[log N(y | f, s^2)] in closed form.
        mean = x @ q_weight.loc.T.squeeze(-1) + q_bias.loc
        variance = x.square() @ q_weight.variance.T.squeeze(-1) + q_bias.variance
        data = (
            -0.5 * math.log(2 * math.pi * noise_scale**2)
            - ((y - mean).square() + variance) / (2 * noise_scale**2)
        ).sum()
        exact = (kl_weight + kl_bias - data).item()

    standard_error = losses.std().item() / math.sqrt(num_draws)
    assert abs(losses.mean().item() - exact) < NUM_SE * standard_error


class Unevaluable(dist.StudentT):
    """A Student's t (no KL registered) whose density must not be evaluated."""

    def log_prob(self, value):
        raise AssertionError("the density of a site masked out was evaluated")


def test_sites_masked_out_on_both_sides_are_not_evaluated():
    x = torch.randn(6, dtype=torch.float64)

    def model(masked):
        loc = pyro.sample("loc", dist.Normal(f64(0.0), 1.0))
        with pyro.poutine.mask(mask=False):
            pyro.sample("graph", masked(3.0, f64(0.0), 1.0).expand([5, 5]).to_event(2))
            pyro.sample("ignored", masked(3.0, loc, 1.0), obs=f64(0.5))
        with pyro.plate("data", 6):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)

    def guide(masked):
        pyro.sample("loc", dist.Normal(pyro.param("q_loc", f64(0.3)), 0.5))
        with pyro.poutine.mask(mask=False):
            pyro.sample("graph", masked(3.0, f64(0.0), 1.0).expand([5, 5]).to_event(2))

    pyro.set_rng_seed(0)
    expected = TraceMeanField_ELBO().loss(model, guide, dist.StudentT)
    pyro.set_rng_seed(0)
    assert TraceKL_ELBO().loss(model, guide, Unevaluable) == pytest.approx(expected, rel=1e-12)


def test_a_site_masked_in_the_model_only_keeps_the_guides_term():
    def model():
        with pyro.poutine.mask(mask=False):
            pyro.sample("z", ScaleMixtureNormal(f64([0.5]), f64([1.0]), f64([0.3])))

    def guide():
        pyro.sample("z", dist.Normal(f64([0.2]), 0.5))

    for seed in range(3):
        pyro.set_rng_seed(seed)
        expected = TraceMeanField_ELBO().loss(model, guide)
        pyro.set_rng_seed(seed)
        assert TraceKL_ELBO().loss(model, guide) == pytest.approx(expected, rel=1e-12)
        assert expected != 0  # log q(z), the guide's term, is kept


# --------------------------------------------------------------------------- term bookkeeping


def scalar_model(y, subsample_size, record):
    loc = pyro.sample("loc", dist.Normal(f64(0.0), 1.0))
    with pyro.plate("data", len(y), subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=y[idx])
    record["loc"], record["idx"] = loc, idx


def scalar_guide(y, subsample_size, record):
    loc = pyro.param("q_loc", f64(0.3))
    scale = pyro.param("q_scale", f64(0.5), constraint=constraints.positive)
    pyro.sample("loc", dist.Normal(loc, scale))


@pytest.mark.parametrize("subsample_size", [5, 20])
def test_data_term_is_scaled_by_the_plate(subsample_size):
    y = torch.randn(20, dtype=torch.float64)
    record = {}
    elbo = TraceKL_ELBO()
    loss = elbo.loss(scalar_model, scalar_guide, y, subsample_size, record)
    scale = len(y) / subsample_size
    data = scale * dist.Normal(record["loc"], 1.0).log_prob(y[record["idx"]]).sum()
    kl = kl_divergence(dist.Normal(f64(0.3), f64(0.5)), dist.Normal(f64(0.0), 1.0))
    assert len(record["idx"]) == subsample_size
    assert elbo.last_terms["data"] == pytest.approx(data.item(), rel=1e-12)
    assert elbo.last_terms["kl"] == pytest.approx(kl.item(), rel=1e-12)
    assert loss == pytest.approx(elbo.last_terms["kl"] - elbo.last_terms["data"], rel=1e-12)


@pytest.mark.parametrize("vectorize_particles", [False, True])
def test_terms_are_averaged_over_particles(vectorize_particles):
    y = torch.randn(20, dtype=torch.float64)
    elbo = TraceKL_ELBO(num_particles=3, vectorize_particles=vectorize_particles)
    loss = elbo.loss(scalar_model, scalar_guide, y, 20, {})
    kl = kl_divergence(dist.Normal(f64(0.3), f64(0.5)), dist.Normal(f64(0.0), 1.0))
    assert elbo.last_terms["kl"] == pytest.approx(kl.item(), rel=1e-12)
    assert elbo.last_terms["data"] - elbo.last_terms["kl"] == pytest.approx(-loss, rel=1e-12)
    # A second call starts from zero again.
    loss = elbo.loss(scalar_model, scalar_guide, y, 20, {})
    assert elbo.last_terms["kl"] == pytest.approx(kl.item(), rel=1e-12)
    assert elbo.last_terms["data"] - elbo.last_terms["kl"] == pytest.approx(-loss, rel=1e-12)
