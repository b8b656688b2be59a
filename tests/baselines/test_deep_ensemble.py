import pytest
import torch
from torch import nn

from pyro_bnn.baselines import (
    EnsembleMember,
    GaussianNoise,
    predict_deterministic,
    predict_ensemble,
    train_deep_ensemble,
)
from pyro_bnn.infer import ClassificationPrediction, RegressionPrediction

from .common import classification_data, classifier, loader, regression_data, regressor


def make_classifier():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def make_regressor():
    return nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))


def test_members_differ_and_the_run_repeats():
    x, y = classification_data()
    data = loader(x, y)
    members = train_deep_ensemble(make_classifier, data, 3, epochs=1, lr=0.01, progress=False)
    assert len(members) == 3 and all(isinstance(m, EnsembleMember) for m in members)
    assert [m.seed for m in members] == [0, 1, 2]
    assert all(m.noise is None and len(m.history) == 1 for m in members)
    weights = [m.net[0].weight for m in members]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    torch.manual_seed(123)
    again = train_deep_ensemble(make_classifier, data, 3, epochs=1, lr=0.01, progress=False)
    for a, b in zip(members, again, strict=True):
        assert a.history == b.history
        assert torch.equal(a.net[0].weight, b.net[0].weight)
    other = train_deep_ensemble(make_classifier, data, 1, epochs=1, lr=0.01, seed=5, progress=False)
    assert other[0].seed == 5 and not torch.equal(other[0].net[0].weight, weights[0])


def test_predict_ensemble_stacks_the_members():
    x, y = classification_data()
    nets = [classifier(seed=k).eval() for k in range(4)]
    nets[1].train()
    prediction = predict_ensemble(nets, x, y=y, batch_size=10)
    assert isinstance(prediction, ClassificationPrediction)
    assert prediction.probs_samples.shape == (4, len(x), 3)
    for k, net in enumerate(nets):
        assert torch.allclose(prediction.probs_samples[k], predict_deterministic(net, x))
    assert nets[1].training and not nets[0].training
    assert torch.allclose(prediction.probs, prediction.probs_samples.mean(0))
    assert prediction.log_likelihood.shape == (4, len(x))
    members = [EnsembleMember(net) for net in nets]
    # The same chunks as above: a matrix product's rounding may depend on the rows it is given.
    stacked = predict_ensemble(members, x, batch_size=10).probs_samples
    assert torch.equal(stacked, prediction.probs_samples)


def test_regression_ensemble_learns_one_noise_per_member():
    x, y = regression_data()
    members = train_deep_ensemble(
        make_regressor,
        loader(x, y),
        2,
        epochs=2,
        lr=0.05,
        weight_decay=1e-4,
        task="regression",
        noise_variance=0.5,
        progress=False,
    )
    noises = [m.noise for m in members]
    assert all(isinstance(noise, GaussianNoise) for noise in noises)
    assert noises[0] is not noises[1]
    assert all(noise.variance.item() != pytest.approx(0.5) for noise in noises)
    assert all("noise_variance" in m.history[-1] for m in members)
    prediction = predict_ensemble(members, x, y=y)
    assert isinstance(prediction, RegressionPrediction)
    assert prediction.mean_samples.shape == prediction.variance_samples.shape == (2, len(x))
    means = torch.stack([predict_deterministic(m.net, x, noise=m.noise)[0] for m in members])
    assert torch.allclose(prediction.mean_samples, means)
    assert torch.allclose(prediction.epistemic_variance, means.var(0, unbiased=False))
    variances = torch.stack([m.noise.variance.detach() for m in members])
    assert torch.allclose(prediction.aleatoric_variance, variances.mean().expand(len(x)))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"size": 0}, ValueError, "size must be a positive integer"),
        ({"size": 2.5}, ValueError, "size must be a positive integer"),
        ({"epochs": -1}, ValueError, "epochs must be"),
        ({"lr": -1.0}, ValueError, "lr must be"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay must be"),
        ({"noise_variance": 0.0}, ValueError, "noise_variance must be"),
        ({"task": "survival"}, ValueError, "task must be"),
        ({"seed": "0"}, ValueError, "seed must be an integer"),
        ({"make_net": classifier()}, TypeError, "make_net must be a function"),
        ({"make_net": lambda: "net"}, TypeError, "must be an nn.Module"),
    ],
)
def test_train_deep_ensemble_rejects_bad_input(kwargs, error, match):
    x, y = classification_data()
    arguments = {"make_net": make_classifier, "size": 2, "epochs": 1, "progress": False}
    arguments.update(kwargs)
    make_net, size = arguments.pop("make_net"), arguments.pop("size")
    with pytest.raises(error, match=match):
        train_deep_ensemble(make_net, loader(x, y), size, **arguments)


def test_train_deep_ensemble_rejects_a_shared_network():
    x, y = classification_data()
    net = classifier()
    with pytest.raises(ValueError, match="returned the same network twice"):
        train_deep_ensemble(lambda: net, loader(x, y), 2, epochs=0, progress=False)


def test_predict_ensemble_rejects_bad_input():
    x, y = classification_data()
    nets = [classifier(seed=0), classifier(seed=1)]
    regression = EnsembleMember(regressor(), GaussianNoise())
    with pytest.raises(ValueError, match="no member"):
        predict_ensemble([], x)
    with pytest.raises(TypeError, match="must be a list"):
        predict_ensemble(nets[0], x)
    with pytest.raises(ValueError, match="mix classifiers and regression"):
        predict_ensemble([nets[0], regression], x)
    with pytest.raises(ValueError, match="outputs differ in shape"):
        predict_ensemble([nets[0], classifier(num_classes=4)], x)
    with pytest.raises(ValueError, match="x contains NaN"):
        predict_ensemble(nets, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="y has 3 rows"):
        predict_ensemble(nets, x, y=y[:3])
    with pytest.raises(ValueError, match="batch_size must be"):
        predict_ensemble(nets, x, batch_size=0)
    with pytest.raises(TypeError, match="must be an nn.Module"):
        predict_ensemble([nets[0], "net"], x)
