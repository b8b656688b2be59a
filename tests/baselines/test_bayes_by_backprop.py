import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_bnn.baselines import bayes_by_backprop, scale_mixture_prior
from pyro_bnn.distributions import ScaleMixtureNormal
from pyro_bnn.guides import AutoMeanFieldNormal, LocalReparameterizedNormal
from pyro_bnn.infer import (
    ClassificationPrediction,
    RegressionPrediction,
    TraceKL_ELBO,
    fit,
    predict,
)
from pyro_bnn.models import (
    BayesianNetwork,
    CategoricalLikelihood,
    GaussianLikelihood,
    normal_prior,
)

from .common import classification_data, classifier, loader, regression_data, regressor


def test_defaults_are_the_papers():
    x, y = classification_data()
    model, guide = bayes_by_backprop(classifier(), CategoricalLikelihood(len(x), 3))
    assert isinstance(model, BayesianNetwork) and isinstance(guide, AutoMeanFieldNormal)
    # Every weight and bias is random, under the scale mixture of seed 003.
    assert sorted(model.random_sites()) == [
        "net.0.bias",
        "net.0.weight",
        "net.2.bias",
        "net.2.weight",
    ]
    prior = model.priors["net.0.weight"]
    assert isinstance(prior, ScaleMixtureNormal) and prior.batch_shape == (8, 4)
    assert torch.all(prior.weight == 0.5) and torch.all(prior.scale1 == 1.0)
    assert torch.allclose(prior.scale2, torch.tensor(math.exp(-6)))
    # Weight sampling, as in the paper.
    assert guide.local_reparameterization is False


def test_the_kl_to_the_scale_mixture_is_monte_carlo():
    x, y = classification_data()
    for prior, closed_form in [("scale_mixture", False), ("normal", True)]:
        model, guide = bayes_by_backprop(
            classifier(), CategoricalLikelihood(len(x), 3), prior=prior
        )
        guide(x, y)
        q = guide.get_posterior("net.0.weight")
        # A Normal (keeping its log-variance for the KL) whose samples are weights.
        assert isinstance(q, dist.Normal) and not isinstance(q, LocalReparameterizedNormal)
        p = model.priors["net.0.weight"]
        if closed_form:
            assert torch.isfinite(kl_divergence(q, p)).all()
        else:
            with pytest.raises(NotImplementedError):
                kl_divergence(q, p)
    # The ELBO's KL term is then log q(w) - log p(w) at the sampled weights.
    model, guide = bayes_by_backprop(classifier(), CategoricalLikelihood(len(x), 3))
    elbo = TraceKL_ELBO()
    torch.manual_seed(0)
    elbo.loss(model, guide, x, y)
    first = elbo.last_terms["kl"]
    elbo.loss(model, guide, x, y)
    assert math.isfinite(first) and elbo.last_terms["kl"] != first  # a fresh sample each time


@pytest.mark.parametrize("local_reparameterization", [False, True])
def test_fit_trains_it_and_predict_predicts(local_reparameterization):
    x, y = classification_data()
    model, guide = bayes_by_backprop(
        classifier(),
        CategoricalLikelihood(len(x), 3),
        local_reparameterization=local_reparameterization,
        input_shape=(4,),
    )
    guide(x, y)  # creates the guide's parameters
    if local_reparameterization:
        assert isinstance(guide.get_posterior("net.0.weight"), LocalReparameterizedNormal)
    before = {name: value.detach().clone() for name, value in guide.named_parameters()}
    records = fit(model, guide, loader(x, y, batch_size=24), epochs=1, lr=0.01, progress=False)
    assert len(records) == 1 and math.isfinite(records[0].loss) and records[0].kl > 0
    after = dict(guide.named_parameters())
    assert before and all(not torch.equal(before[k], after[k]) for k in before)
    prediction = predict(model, guide, x, num_samples=6)
    assert isinstance(prediction, ClassificationPrediction)
    assert prediction.probs_samples.shape == (6, len(x), 3)


def test_regression_with_a_normal_prior_and_blundell_kl_weights():
    x, y = regression_data()
    model, guide = bayes_by_backprop(
        regressor(), GaussianLikelihood(len(x), scale=0.3), prior=normal_prior(0.5)
    )
    records = fit(
        model,
        guide,
        loader(x, y, batch_size=20),
        epochs=1,
        lr=0.01,
        kl_reweighting="blundell",
        progress=False,
    )
    assert math.isfinite(records[0].loss)
    prediction = predict(model, guide, x, num_samples=4, y=y)
    assert isinstance(prediction, RegressionPrediction)
    assert prediction.mean_samples.shape == prediction.variance_samples.shape == (4, len(x))


def test_scale_mixture_prior_factory():
    prior = scale_mixture_prior(0.25, 2.0, 0.1)("w", torch.zeros(2, 3, dtype=torch.float64))
    assert prior.batch_shape == (2, 3) and prior.weight.dtype == torch.float64
    assert torch.all(prior.weight == 0.25) and torch.all(prior.scale1 == 2.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight": 1.5}, r"mixture weight must lie in \[0, 1\]"),
        ({"weight": -0.1}, r"mixture weight must lie in \[0, 1\]"),
        ({"scale1": 0.0}, "scale1 must be a positive finite"),
        ({"scale2": -1.0}, "scale2 must be a positive finite"),
        ({"scale2": math.inf}, "scale2 must be a positive finite"),
    ],
)
def test_scale_mixture_prior_rejects_bad_constants(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scale_mixture_prior(**kwargs)


def test_bayes_by_backprop_rejects_bad_input():
    likelihood = CategoricalLikelihood(10, 3)
    with pytest.raises(ValueError, match="prior must be 'scale_mixture', 'normal'"):
        bayes_by_backprop(classifier(), likelihood, prior="laplace")
    with pytest.raises(TypeError, match="prior must be a name or a prior factory"):
        bayes_by_backprop(classifier(), likelihood, prior=3)
    with pytest.raises(TypeError, match="the likelihood must be a likelihood module"):
        bayes_by_backprop(classifier(), "categorical")
    with pytest.raises(TypeError, match="must be an nn.Module"):
        bayes_by_backprop(None, likelihood)
    with pytest.raises(ValueError, match="init_log_variance must be finite"):
        bayes_by_backprop(classifier(), likelihood, init_log_variance=math.nan)
