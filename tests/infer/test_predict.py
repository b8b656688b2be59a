import pytest
import torch
import torch.nn.functional as F

from pyro_bnn.compression import PointGuide
from pyro_bnn.guides import AutoMeanFieldNormal, local_reparameterization_enabled
from pyro_bnn.infer import ClassificationPrediction, RegressionPrediction, fit, predict
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood

from .common import classification_problem, regression_problem


@pytest.fixture(scope="module")
def trained_classifier():
    torch.manual_seed(0)
    model, guide, loader, x, y = classification_problem()
    fit(model, guide, loader, epochs=3, lr=1e-2, progress=False)
    return model, guide, x, y


def test_classification_outputs_and_entropy_split(trained_classifier):
    model, guide, x, _ = trained_classifier
    p = predict(model, guide, x, num_samples=50, batch_size=40)
    assert isinstance(p, ClassificationPrediction)
    assert p.probs_samples.shape == (50, len(x), 3)
    assert p.probs.shape == (len(x), 3)
    assert torch.allclose(p.probs.sum(-1), torch.ones(len(x)))
    assert torch.allclose(p.entropy, p.expected_entropy + p.mutual_information, atol=1e-6)
    assert (p.mutual_information >= 0).all()
    # Posterior samples differ from each other: the weights are sampled.
    assert p.probs_samples.std(0).max() > 0
    assert torch.equal(p.predicted_class, p.probs.argmax(-1))


def test_vectorized_predictive_matches_independent_samples(trained_classifier):
    model, guide, x, _ = trained_classifier
    x = x[:8]
    vectorized = predict(model, guide, x, num_samples=2000).probs_samples
    looped = torch.cat([predict(model, guide, x, num_samples=1).probs_samples for _ in range(400)])
    difference = vectorized.mean(0) - looped.mean(0)
    standard_error = (vectorized.var(0) / 2000 + looped.var(0) / 400).sqrt()
    assert (difference.abs() <= 5 * standard_error + 1e-6).all()


def test_point_guide_gives_the_deterministic_network(trained_classifier):
    model, guide, x, _ = trained_classifier
    values = guide.median()
    p = predict(model, PointGuide(values), x, num_samples=1, batch_size=7)
    net = model.net
    w1, w2 = values["net.0.weight"], values["net.2.weight"]
    logits = F.linear(F.relu(F.linear(x, w1, net[0].bias)), w2, net[2].bias)
    assert torch.allclose(p.probs[:, :], logits.softmax(-1), atol=1e-6)
    assert torch.allclose(p.mutual_information, torch.zeros(len(x)), atol=1e-6)


@pytest.mark.parametrize("noise", ["fixed", "learned", "heteroscedastic"])
def test_regression_variance_split(noise):
    model, guide, loader, x, y = regression_problem(noise=noise)
    fit(model, guide, loader, epochs=2, lr=1e-2, progress=False)
    p = predict(model, guide, x, num_samples=30)
    assert isinstance(p, RegressionPrediction)
    assert p.mean_samples.shape == (30, len(x))
    assert torch.allclose(p.total_variance, p.epistemic_variance + p.aleatoric_variance)
    assert torch.allclose(p.epistemic_variance, p.mean_samples.var(0, unbiased=False))
    if noise == "fixed":
        assert torch.allclose(p.aleatoric_variance, torch.full((len(x),), 0.25))
    if noise == "learned":
        scale = model.likelihood.scale.detach()
        assert torch.allclose(p.aleatoric_variance, scale.square().expand(len(x)), rtol=1e-5)


def test_local_reparameterization_never_leaks(trained_classifier):
    model, guide, x, _ = trained_classifier
    linear = torch.nn.Linear(6, 4)
    inputs = torch.randn(5, 6)
    functional_before = F.linear(inputs, linear.weight, linear.bias)
    module_before = linear(inputs)
    predict(model, guide, x, num_samples=5)
    fit(model, guide, [(x[:32], trained_classifier[3][:32])], epochs=1, lr=0.0, progress=False)
    assert F.linear is torch._C._nn.linear
    assert local_reparameterization_enabled()
    assert torch.equal(F.linear(inputs, linear.weight, linear.bias), functional_before)
    assert torch.equal(linear(inputs), module_before)
    assert type(linear(inputs)) is torch.Tensor


def test_model_mode_is_restored_and_batchnorm_uses_running_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(), torch.nn.Linear(5, 2)
    )
    model = BayesianNetwork(net, CategoricalLikelihood(40, 2), input_shape=(3,))
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    fit(model, guide, [(x[:20], y[:20]), (x[20:], y[20:])], epochs=2, progress=False)
    assert model.training
    values = guide.median()
    p = predict(model, PointGuide(values), x, num_samples=1)
    assert model.training
    plain = model.net
    bn = plain[1]
    hidden = F.linear(x, values["net.0.weight"], plain[0].bias)
    hidden = (hidden - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.weight + bn.bias
    logits = F.linear(F.relu(hidden), values["net.3.weight"], plain[3].bias)
    assert torch.allclose(p.probs, logits.softmax(-1), atol=1e-5)


def test_bad_input(trained_classifier):
    model, guide, x, _ = trained_classifier
    with pytest.raises(ValueError, match="NaN or infinite"):
        predict(model, guide, x.index_fill(0, torch.tensor([1]), float("inf")))
    with pytest.raises(ValueError, match=r"each input must have shape \(6,\)"):
        predict(model, guide, x[:, :4])
    with pytest.raises(ValueError, match="num_samples"):
        predict(model, guide, x, num_samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, guide, x, batch_size=0)
    with pytest.raises(ValueError, match="no sample site 'likelihood'"):
        predict(model, guide, x, site="likelihood")
    assert model.training


def test_guide_must_have_seen_the_model():
    model, guide, _, x, _ = classification_problem()
    with pytest.raises(RuntimeError, match="has not seen the model"):
        predict(model, guide, x)
