"""posterior_samples, predict's shared draws and log-likelihoods, and Pyro's own Predictive."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive

from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.infer import TraceKL_ELBO, fit, posterior_samples, predict
from pyro_bnn.ops import StochasticWeight

from .common import QuickStart, classification_problem, quick_start_data, regression_problem


class Vectorizable(QuickStart):
    """The same model written with a batched product, as Pyro's parallel Predictive needs."""

    def forward(self, x, y=None):
        mean = (x @ self.linear.weight.mT).squeeze(-1)
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(mean, 0.5), obs=y)
        return mean


def train_svi(model, x, y, steps=300):
    guide = AutoMeanFieldNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), TraceKL_ELBO())
    for _ in range(steps):
        svi.step(x, y)
    return guide


@pytest.fixture(scope="module")
def quick_start():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x, y = quick_start_data()
    model = QuickStart()
    guide = train_svi(model, x, y)
    return model, guide, x, y


def test_posterior_samples_are_plain_tensors_of_every_global_site(quick_start):
    model, guide, x, y = quick_start
    samples = posterior_samples(model, guide, 500, x, y)
    assert set(samples) == {"linear.weight"}
    weight = samples["linear.weight"]
    assert type(weight) is torch.Tensor and weight.shape == (500, 1, 10)
    # The draws follow the guide: mean and spread match its Normal within Monte Carlo error.
    posterior = guide.get_posterior("linear.weight")
    error = (weight.mean(0) - posterior.loc).abs() / (posterior.scale / 500**0.5)
    assert (error < 5).all()
    assert torch.allclose(weight.std(0), posterior.scale, rtol=0.2)


def test_posterior_samples_leaves_out_local_sites():
    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(w * x + z, 1.0), obs=y)

    def guide(x, y=None):
        pyro.sample("w", dist.Normal(0.3, 0.1))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))

    x = torch.randn(5)
    samples = posterior_samples(model, guide, 7, x, torch.randn(5))
    assert set(samples) == {"w"} and samples["w"].shape == (7,)


def test_posterior_samples_before_training_is_refused():
    model, guide, _, x, y = classification_problem()
    with pytest.raises(RuntimeError, match="posterior_samples: the guide has not seen the model"):
        posterior_samples(model, guide, 10, x, y)
    assert list(guide.parameters()) == []
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        posterior_samples(model, guide, 0, x, y)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_predict_draws_each_sample_once_for_all_inputs(batch_size):
    model, guide, _, x, y = classification_problem()
    guide(x[:2], y[:2])
    x = x[:15]
    pyro.set_rng_seed(5)
    whole = predict(model, guide, x, num_samples=20, batch_size=len(x)).probs_samples
    pyro.set_rng_seed(5)
    chunked = predict(model, guide, x, num_samples=20, batch_size=batch_size).probs_samples
    # Sample s is one network for every chunk: the same seed gives the same draws.
    torch.testing.assert_close(chunked, whole)
    assert whole.std(0).max() > 0


def test_predict_log_likelihood_per_observation():
    model, guide, _, x, y = classification_problem()
    guide(x[:2], y[:2])
    p = predict(model, guide, x, num_samples=6, batch_size=40, y=y)
    expected = p.probs_samples.gather(-1, y.expand(6, -1).unsqueeze(-1)).squeeze(-1).log()
    torch.testing.assert_close(p.log_likelihood, expected)

    pyro.clear_param_store()  # the regression guide's names are the classifier's
    model, guide, _, x, y = regression_problem(noise="fixed")
    guide(x[:2], y[:2])
    p = predict(model, guide, x, num_samples=4, y=y)
    expected = dist.Normal(p.mean_samples, p.variance_samples.sqrt()).log_prob(y)
    torch.testing.assert_close(p.log_likelihood, expected)
    with pytest.raises(ValueError, match="y has 3 rows but x has"):
        predict(model, guide, x, num_samples=4, y=y[:3])


def test_predict_passes_extra_model_arguments():
    seen = []

    class WithContext(QuickStart):
        def forward(self, x, context, y=None):
            seen.append(context)
            return super().forward(x + context, y)

    model = WithContext()
    x, y = quick_start_data()
    context = torch.full((10,), 0.5)
    guide = AutoMeanFieldNormal(model)
    guide(x, context, y)
    p = predict(model, guide, x, context, num_samples=3, site="y", batch_size=40)
    assert p.mean_samples.shape == (3, 100)
    assert all(c is context for c in seen)
    weight = guide.median()["linear.weight"]
    mean = predict(model, guide, x, context, num_samples=200, site="y").mean
    assert torch.allclose(mean, ((x + context) @ weight.T).squeeze(-1), atol=0.05)


def test_pyro_predictive_on_the_quick_start_model(quick_start):
    model, guide, x, y = quick_start
    out = Predictive(model, guide=guide, num_samples=50)(x)
    assert out["linear.weight"].shape == (50, 1, 1, 10)
    assert type(out["linear.weight"]) is torch.Tensor
    assert out["y"].shape == (50, 100)
    # The predictive mean follows the posterior mean's fit.
    weight = guide.median()["linear.weight"]
    mean = (x @ weight.T).squeeze(-1)
    assert ((out["y"].mean(0) - mean).abs() < 5 * 0.5 / 50**0.5 + 0.05).all()


def test_pyro_predictive_parallel_on_a_vectorizable_model():
    pyro.clear_param_store()
    x, y = quick_start_data()
    model = Vectorizable()
    guide = train_svi(model, x, y, steps=200)
    out = Predictive(model, guide=guide, num_samples=40, parallel=True)(x)
    assert out["y"].shape == (40, 100)
    weight = guide.median()["linear.weight"]
    assert ((out["y"].mean(0) - (x @ weight.T).squeeze(-1)).abs() < 0.35).all()


def test_pyro_predictive_parallel_on_a_bayesian_network():
    # The guide's Gaussian weights keep their kind through Predictive's reshapes, so the
    # network's F.linear gets weights with a sample dimension and handles them.
    model, guide, loader, x, y = classification_problem()
    fit(model, guide, loader, epochs=20, lr=1e-2, progress=False)
    out = Predictive(model, guide=guide, num_samples=400, parallel=True)(x)
    assert out["obs"].shape == (400, len(x))
    assert out["net.0.weight"].shape == (400, 1, 16, 6)
    frequencies = torch.nn.functional.one_hot(out["obs"], 3).double().mean(0)
    probs = predict(model, guide, x, num_samples=400).probs.double()
    # Two independent 400-sample estimates of the same predictive probabilities.
    assert (frequencies - probs).abs().max() < 0.15
    assert (frequencies.argmax(-1) == probs.argmax(-1)).double().mean() > 0.9


def test_pyro_predictive_on_a_bayesian_network():
    model, guide, loader, x, y = classification_problem()
    guide(x[:2], y[:2])
    out = Predictive(model, guide=guide, num_samples=8)(x[:20])
    assert out["obs"].shape == (8, 20)
    assert out["net.0.weight"].shape[0] == 8
    assert not any(isinstance(v, StochasticWeight) for v in out.values())
    assert ((out["obs"] >= 0) & (out["obs"] < 3)).all()
