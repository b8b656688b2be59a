import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import hessian

from pyro_bnn.baselines import (
    GaussianNoise,
    LastLayerLaplace,
    fit_last_layer_laplace,
    fit_prior_precision,
    predict_last_layer_laplace,
)
from pyro_bnn.infer import ClassificationPrediction, RegressionPrediction

from .common import classification_data, classifier, loader, regression_data, regressor

TAU = 0.7


def features(net, x, bias=True):
    with torch.no_grad():
        a = net[:-1](x).double()
    return torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1) if bias else a


def exact_precision(net, x, y, noise=None, tau=TAU, bias=True):
    """The Hessian of the negative log posterior in vec([W, b]) (row by row), by autograd."""
    a = features(net, x, bias)
    layer = net[-1]
    parts = [layer.weight] if not bias else [layer.weight, layer.bias[:, None]]
    theta = torch.cat(parts, 1).detach().double().reshape(-1)
    outputs = layer.out_features

    def negative_log_posterior(theta):
        logits = a @ theta.reshape(outputs, -1).T
        if noise is None:
            nll = F.cross_entropy(logits, y, reduction="sum")
        else:
            nll = (y.double() - logits[:, 0]).square().sum() / (2 * noise.variance.double())
        return nll + tau / 2 * theta.square().sum()

    return hessian(negative_log_posterior, theta)


def double_classifier(bias=True):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3, bias=bias)).double()


def double_regressor():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 1)).double()


@pytest.mark.parametrize("bias", [True, False])
def test_kfac_is_exact_for_one_example(bias):
    x, y = classification_data()
    x = x.double()
    net = double_classifier(bias)
    laplace = fit_last_layer_laplace(net, [(x[:1], y[:1])], prior_precision=TAU)
    assert laplace.num_parameters == 3 * (7 if bias else 6)
    expected = exact_precision(net, x[:1], y[:1], tau=TAU, bias=bias)
    assert torch.allclose(laplace.precision(), expected, atol=1e-10)


def test_kfac_is_exact_for_gaussian_regression():
    x, y = regression_data()
    x = x.double()
    net = double_regressor()
    noise = GaussianNoise(0.2)
    laplace = fit_last_layer_laplace(
        net, loader(x, y, batch_size=7), task="regression", noise=noise, prior_precision=TAU
    )
    assert laplace.num_data == len(x)
    expected = exact_precision(net, x, y, noise=noise)
    assert torch.allclose(laplace.precision(), expected, rtol=1e-10, atol=1e-8)


def test_kfac_approximates_the_classification_hessian():
    # With many examples the softmax curvature varies between them and the Kronecker product
    # is an approximation (which the test above would otherwise miss): it keeps the mean
    # curvature's scale but not its exact value.
    x, y = classification_data()
    x = x.double()
    net = double_classifier()
    laplace = fit_last_layer_laplace(net, loader(x, y), prior_precision=TAU)
    exact = exact_precision(net, x, y)
    assert not torch.allclose(laplace.precision(), exact, rtol=1e-3)
    relative = (laplace.precision() - exact).norm() / exact.norm()
    assert relative < 0.5


def test_eigen_covariance_is_the_inverse_of_the_precision():
    x, y = classification_data()
    laplace = fit_last_layer_laplace(double_classifier(), [(x.double(), y)], prior_precision=0.3)
    precision = laplace.precision()
    assert torch.allclose(laplace.covariance(), torch.linalg.inv(precision), atol=1e-10)
    laplace.prior_precision = 5.0  # no new decomposition needed
    assert torch.allclose(laplace.covariance(), torch.linalg.inv(laplace.precision()), atol=1e-10)


def test_logit_distribution_matches_weight_samples():
    x, y = classification_data()
    x = x.double()
    net = double_classifier()
    laplace = fit_last_layer_laplace(net, [(x, y)], prior_precision=2.0)
    mean, covariance = laplace.logit_distribution(x[:5])
    assert mean.shape == (5, 3) and covariance.shape == (5, 3, 3)
    assert mean.dtype == torch.float64
    with torch.no_grad():
        assert torch.allclose(mean, net(x[:5]))
    # Exactly (I kron a^T) Sigma (I kron a) ...
    a = features(net, x[:5])
    sigma = laplace.covariance()
    for n in range(5):
        jacobian = torch.kron(torch.eye(3, dtype=torch.float64), a[n][None])
        assert torch.allclose(covariance[n], jacobian @ sigma @ jacobian.T, atol=1e-12)
    # ... and the moments of the logits under sampled weights.
    torch.manual_seed(0)
    weights = torch.distributions.MultivariateNormal(
        laplace.mean().reshape(-1), covariance_matrix=sigma
    ).sample((40000,))
    logits = torch.einsum("nd,scd->snc", a, weights.reshape(-1, 3, a.shape[1]))
    assert torch.allclose(logits.mean(0), mean, atol=0.02)
    centred = logits - logits.mean(0)
    sampled = torch.einsum("snc,snd->ncd", centred, centred) / len(logits)
    assert torch.allclose(sampled, covariance, rtol=0.05, atol=0.01)


def test_classification_predictive():
    x, y = classification_data()
    net = classifier().eval()
    net.train()
    laplace = fit_last_layer_laplace(net, loader(x, y), prior_precision=1.0)
    assert net.training and all(module.training for module in net.modules())
    torch.manual_seed(0)
    prediction = predict_last_layer_laplace(laplace, x, num_samples=3000, y=y, batch_size=20)
    assert isinstance(prediction, ClassificationPrediction)
    assert prediction.probs_samples.shape == (3000, len(x), 3)
    assert prediction.probs_samples.dtype == torch.float32
    assert prediction.log_likelihood.shape == (3000, len(x))
    # Monte Carlo against the logits' Gaussian, sampled independently.
    mean, covariance = laplace.logit_distribution(x)
    logits = torch.distributions.MultivariateNormal(mean.double(), covariance.double()).sample(
        (3000,)
    )
    assert torch.allclose(prediction.probs, logits.softmax(-1).mean(0).float(), atol=0.02)
    # The probit approximation is close to the sampled predictive; a sharp posterior gives the
    # MAP network's probabilities.
    probit = laplace.probit(x)
    assert probit.shape == (len(x), 3) and torch.allclose(probit.sum(-1), torch.ones(len(x)))
    assert torch.allclose(probit, prediction.probs, atol=0.05)
    laplace.prior_precision = 1e9
    with torch.no_grad():
        assert torch.allclose(laplace.probit(x), net(x).softmax(-1), atol=1e-4)


def test_regression_predictive_is_exact():
    x, y = regression_data()
    net = regressor()
    noise = GaussianNoise(0.1)
    laplace = fit_last_layer_laplace(
        net, loader(x, y), task="regression", noise=noise, prior_precision=0.5
    )
    prediction = predict_last_layer_laplace(laplace, x, num_samples=4, y=y)
    assert isinstance(prediction, RegressionPrediction)
    assert prediction.mean_samples.shape == prediction.variance_samples.shape == (4, len(x))
    mean, covariance = laplace.logit_distribution(x)
    assert torch.allclose(prediction.mean, mean[:, 0])
    assert torch.allclose(prediction.epistemic_variance, covariance[:, 0, 0])
    assert torch.allclose(prediction.total_variance, covariance[:, 0, 0] + 0.1)
    assert torch.allclose(prediction.variance_samples, torch.full((4, len(x)), 0.1))


def test_fit_prior_precision_minimizes_the_validation_nll():
    x, y = regression_data()
    net = regressor()
    noise = GaussianNoise(0.05)
    laplace = fit_last_layer_laplace(
        net, [(x[:30], y[:30])], task="regression", noise=noise, prior_precision=1.0
    )
    grid = [0.01, 0.1, 1.0, 10.0, 100.0]
    chosen = fit_prior_precision(laplace, x[30:], y[30:], grid=grid)
    assert chosen in grid and laplace.prior_precision == chosen

    def nll(tau):
        laplace.prior_precision = tau
        prediction = predict_last_layer_laplace(laplace, x[30:], num_samples=1)
        variance = prediction.total_variance
        return (0.5 * (variance.log() + (y[30:] - prediction.mean) ** 2 / variance)).mean()

    assert nll(chosen) == min(nll(tau) for tau in grid)

    x, y = classification_data()
    laplace = fit_last_layer_laplace(classifier(), [(x[:32], y[:32])])
    first = fit_prior_precision(laplace, x[32:], y[32:], num_samples=50)
    laplace.prior_precision = 3.0
    assert fit_prior_precision(laplace, x[32:], y[32:], num_samples=50) == first


def test_fit_last_layer_laplace_rejects_bad_input():
    x, y = classification_data()
    data = [(x, y)]
    with pytest.raises(ValueError, match="has no nn.Linear"):
        fit_last_layer_laplace(nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten()), data)
    with pytest.raises(ValueError, match="is not the output of its last nn.Linear '0'"):
        fit_last_layer_laplace(nn.Sequential(nn.Linear(4, 3), nn.Softmax(-1)), data)
    with pytest.raises(ValueError, match="one feature vector per example"):
        fit_last_layer_laplace(nn.Linear(4, 3), [(x[:, None, :], y)])

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(4, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.body(x)

    with pytest.raises(ValueError, match="never called its last nn.Linear 'head'"):
        fit_last_layer_laplace(Unused(), data)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="the prior precision must be a positive"):
            fit_last_layer_laplace(classifier(), data, prior_precision=bad)
    with pytest.raises(ValueError, match="needs noise=GaussianNoise"):
        fit_last_layer_laplace(regressor(), data, task="regression")
    with pytest.raises(ValueError, match="must have one output"):
        fit_last_layer_laplace(classifier(), data, task="regression", noise=GaussianNoise())
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_last_layer_laplace(regressor(), [(x[:, :1], y)])
    with pytest.raises(ValueError, match="the inputs contains NaN"):
        fit_last_layer_laplace(classifier(), [(torch.full_like(x, math.nan), y)])
    with pytest.raises(ValueError, match="yielded no batch"):
        fit_last_layer_laplace(classifier(), [])
    with pytest.raises(TypeError, match="must be an nn.Module"):
        fit_last_layer_laplace("net", data)


def test_laplace_prediction_rejects_bad_input():
    x, y = classification_data()
    laplace = fit_last_layer_laplace(classifier(), [(x, y)], prior_precision=2.0)
    with pytest.raises(TypeError, match="expected a LastLayerLaplace"):
        predict_last_layer_laplace(classifier(), x)
    with pytest.raises(ValueError, match="x contains NaN"):
        predict_last_layer_laplace(laplace, torch.full_like(x, math.nan))
    with pytest.raises(ValueError, match="num_samples must be"):
        predict_last_layer_laplace(laplace, x, num_samples=0)
    with pytest.raises(ValueError, match="y has 4 rows"):
        predict_last_layer_laplace(laplace, x, y=y[:4])
    with pytest.raises(ValueError, match="the prior precision must be a positive"):
        laplace.prior_precision = -1.0
    xr, yr = regression_data()
    regression = fit_last_layer_laplace(
        regressor(), [(xr, yr)], task="regression", noise=GaussianNoise()
    )
    with pytest.raises(ValueError, match="probit approximation is for classification"):
        regression.probit(xr)
    for kwargs, match in [
        ({"grid": []}, "grid of prior precisions is empty"),
        ({"grid": [1.0, 0.0]}, "every prior precision of the grid must be a positive"),
        ({"seed": 0.5}, "seed must be an integer"),
        ({"num_samples": -2}, "num_samples must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            fit_prior_precision(laplace, x, y, **kwargs)
    with pytest.raises(ValueError, match="label 3 is out of range for 3 classes"):
        fit_prior_precision(laplace, x, torch.full_like(y, 3))
    with pytest.raises(ValueError, match="must be an integer tensor"):
        fit_prior_precision(laplace, x, y.float())
    assert laplace.prior_precision == 2.0
    assert isinstance(laplace, LastLayerLaplace)
