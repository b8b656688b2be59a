import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from pyro_bnn.baselines import GaussianNoise, predict_deterministic, train_deterministic
from pyro_bnn.data import digits
from pyro_bnn.infer import ClassificationPrediction, RegressionPrediction

from .common import (
    classification_data,
    classifier,
    loader,
    regression_data,
    regressor,
    same_state,
    state,
)


@pytest.fixture(scope="module")
def digits_data():
    train, test = digits(train=True), digits(train=False)
    return Subset(train, range(512)), test.tensors[0]


def small_net(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def train(net, data, seed=0):
    loader = DataLoader(data, batch_size=64, shuffle=True)
    return train_deterministic(net, loader, epochs=2, lr=1e-2, seed=seed, progress=False)


def test_train_deterministic_lowers_the_loss(digits_data):
    train_set, _ = digits_data
    history = train(small_net(), train_set)
    assert [record["epoch"] for record in history] == [1, 2]
    assert set(history[0]) == {"epoch", "loss", "lr"}
    assert history[0]["lr"] == history[1]["lr"] == 1e-2
    first, second = history[0]["loss"], history[1]["loss"]
    assert second < first
    assert second < 0.8 * math.log(10)  # chance level is log(10)


def test_train_deterministic_is_repeatable(digits_data):
    train_set, _ = digits_data
    train_set = Subset(train_set, range(128))
    net_a, net_b = small_net(), small_net()
    history_a = train(net_a, train_set, seed=3)
    torch.manual_seed(123)  # the seed argument, not the global state, decides the run
    history_b = train(net_b, train_set, seed=3)
    assert history_a == history_b
    for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    history_c = train(small_net(), train_set, seed=4)
    assert history_c != history_a


def test_train_deterministic_steps_the_schedule_per_epoch(digits_data):
    train_set, _ = digits_data
    loader = DataLoader(Subset(train_set, range(64)), batch_size=32)
    history = train_deterministic(
        small_net(),
        loader,
        epochs=3,
        lr=0.3,
        scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5),
        progress=False,
    )
    assert [record["lr"] for record in history] == pytest.approx([0.3, 0.15, 0.075])


def test_train_deterministic_calls_back_after_each_epoch_and_stops_on_its_error(digits_data):
    train_set, _ = digits_data
    loader = DataLoader(Subset(train_set, range(64)), batch_size=32)
    net = small_net()
    seen = []

    def callback(record):
        seen.append((record, state(net)))
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_deterministic(net, loader, epochs=5, callback=callback, progress=False)
    assert [record["epoch"] for record, _ in seen] == [1, 2]
    # Each call sees the epoch's finished parameters, and nothing trains after the error.
    first, second = seen[0][1][0], seen[1][1][0]
    assert not all(torch.equal(first[name], second[name]) for name in first)
    assert same_state(seen[1][1], [net])


@pytest.mark.parametrize("training", [True, False])
def test_predict_deterministic(digits_data, training):
    _, x = digits_data
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.Linear(32, 10))
    net.train(training)
    probs = predict_deterministic(net, x, batch_size=100)
    assert net.training == training
    assert all(module.training == training for module in net.modules())
    assert probs.shape == (len(x), 10)
    assert torch.allclose(probs.sum(-1), torch.ones(len(x)))
    assert (probs >= 0).all() and not probs.requires_grad
    # Evaluation mode: dropout is off, so the predictions are deterministic and do not
    # depend on how the inputs are batched.
    net.eval()
    with torch.no_grad():
        expected = net(x).softmax(-1)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.allclose(predict_deterministic(net, x, batch_size=7), expected, atol=1e-6)


def test_train_deterministic_raises_on_divergence():
    x = torch.full((8, 4), 1e30)
    y = torch.zeros(8, dtype=torch.long)
    net = nn.Sequential(nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.fill_(1e30)
    with pytest.raises(FloatingPointError, match="the loss became"):
        train_deterministic(net, [(x, y)], epochs=1, progress=False)


def test_weight_decay_is_an_l2_penalty_in_the_loss():
    # One Adam step with weight_decay=lambda is one Adam step on loss + lambda/2 ||theta||^2,
    # the MAP objective with a Gaussian prior (not AdamW's decoupled decay).
    x, y = classification_data()
    decay = 0.3
    net = classifier()
    reference = classifier()
    train_deterministic(net, [(x, y)], epochs=1, lr=0.1, weight_decay=decay, progress=False)
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.1)
    penalty = sum(p.square().sum() for p in reference.parameters())
    (F.cross_entropy(reference(x), y) + decay / 2 * penalty).backward()
    optimizer.step()
    for a, b in zip(net.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # The decoupled variant takes a different step.
    decoupled = classifier()
    optimizer = torch.optim.AdamW(decoupled.parameters(), lr=0.1, weight_decay=decay)
    F.cross_entropy(decoupled(x), y).backward()
    optimizer.step()
    assert not torch.allclose(net[0].weight, decoupled[0].weight, atol=1e-4)


def test_regression_learns_the_maximum_likelihood_noise_variance():
    # With the network frozen, the only parameter is the noise variance, whose maximum
    # likelihood value is the mean squared residual.
    x, y = regression_data()
    net = regressor()
    net.requires_grad_(False)
    noise = GaussianNoise(variance=1.0)
    history = train_deterministic(
        net, [(x, y)], epochs=400, lr=0.05, task="regression", noise=noise, progress=False
    )
    with torch.no_grad():
        residual = (net(x).squeeze(-1) - y).square().mean()
    assert noise.variance.item() == pytest.approx(residual.item(), rel=1e-3)
    assert set(history[-1]) == {"epoch", "loss", "lr", "noise_variance"}
    assert history[-1]["noise_variance"] == pytest.approx(noise.variance.item())
    expected = 0.5 * (math.log(2 * math.pi) + noise.variance.log() + 1).item()
    assert history[-1]["loss"] == pytest.approx(expected, rel=1e-3)


def test_regression_trains_the_network_and_keeps_a_fixed_noise():
    x, y = regression_data()
    net = regressor()
    noise = GaussianNoise(variance=0.5, learn=False)
    history = train_deterministic(
        net, loader(x, y), epochs=3, lr=0.05, task="regression", noise=noise, progress=False
    )
    assert history[-1]["loss"] < history[0]["loss"]
    assert noise.variance.item() == pytest.approx(0.5)
    assert [p for p in noise.parameters()] == []


def test_predict_deterministic_regression_and_the_common_layout():
    x, y = regression_data()
    net = regressor()
    noise = GaussianNoise(0.3)
    mean, variance = predict_deterministic(net, x, noise=noise)
    with torch.no_grad():
        expected = net(x).squeeze(-1)
    assert torch.allclose(mean, expected)
    assert variance.shape == (len(x),) and torch.allclose(variance, torch.full_like(mean, 0.3))
    prediction = predict_deterministic(net, x, noise=noise, per_sample=True, y=y)
    assert isinstance(prediction, RegressionPrediction)
    assert prediction.mean_samples.shape == prediction.variance_samples.shape == (1, len(x))
    assert torch.allclose(prediction.mean, expected)
    assert torch.equal(prediction.epistemic_variance, torch.zeros(len(x)))
    log_lik = torch.distributions.Normal(expected, math.sqrt(0.3)).log_prob(y)
    assert torch.allclose(prediction.log_likelihood[0], log_lik, atol=1e-5)

    x, y = classification_data()
    net = classifier()
    prediction = predict_deterministic(net, x, per_sample=True, y=y)
    assert isinstance(prediction, ClassificationPrediction)
    assert prediction.probs_samples.shape == (1, len(x), 3)
    assert torch.allclose(prediction.probs, predict_deterministic(net, x))
    assert torch.allclose(prediction.mutual_information, torch.zeros(len(x)), atol=1e-6)
    picked = prediction.probs.gather(1, y[:, None]).squeeze(1).log()
    assert torch.allclose(prediction.log_likelihood[0], picked)


def _nan(tensor):
    tensor = tensor.clone()
    tensor.view(-1)[0] = float("nan")
    return tensor


CLASSIFICATION = classification_data()
REGRESSION = regression_data()


@pytest.mark.parametrize(
    "batch, kwargs, match",
    [
        ((_nan(CLASSIFICATION[0]), CLASSIFICATION[1]), {}, "the inputs contains NaN"),
        ((CLASSIFICATION[0], CLASSIFICATION[1].float()), {}, "must be an integer tensor"),
        ((CLASSIFICATION[0], CLASSIFICATION[1] + 3), {}, "label 5 is out of range"),
        ((CLASSIFICATION[0], -CLASSIFICATION[1] - 1), {}, "must be non-negative"),
        ((CLASSIFICATION[0], CLASSIFICATION[1][:-1]), {}, "has 47 rows but the inputs have 48"),
        ((CLASSIFICATION[0], CLASSIFICATION[1][:, None]), {}, r"must have shape \(N,\)"),
        ((CLASSIFICATION[0],), {}, "needs batches of"),
        ((CLASSIFICATION[0], CLASSIFICATION[1]), {"epochs": -1}, "epochs must be"),
        ((CLASSIFICATION[0], CLASSIFICATION[1]), {"lr": 0.0}, "lr must be"),
        ((CLASSIFICATION[0], CLASSIFICATION[1]), {"weight_decay": -1.0}, "weight_decay must be"),
        ((CLASSIFICATION[0], CLASSIFICATION[1]), {"weight_decay": math.nan}, "weight_decay"),
        ((CLASSIFICATION[0], CLASSIFICATION[1]), {"task": "ranking"}, "task must be"),
        ((REGRESSION[0], REGRESSION[1]), {"task": "regression"}, "needs noise=GaussianNoise"),
        (
            (CLASSIFICATION[0], CLASSIFICATION[1]),
            {"noise": GaussianNoise()},
            "noise= is for task='regression'",
        ),
    ],
)
def test_train_deterministic_rejects_bad_input_before_changing_anything(batch, kwargs, match):
    net = classifier() if kwargs.get("task") != "regression" else regressor()
    before = state(net)
    kwargs = {"epochs": 1, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        train_deterministic(net, [batch], **kwargs)
    assert same_state(before, [net])


@pytest.mark.parametrize(
    "x, y, make_net, match",
    [
        (_nan(REGRESSION[0]), REGRESSION[1], regressor, "the inputs contains NaN"),
        (REGRESSION[0], _nan(REGRESSION[1]), regressor, "the targets contains NaN"),
        (REGRESSION[0], REGRESSION[1].long(), regressor, "must be floating point"),
        (
            REGRESSION[0],
            REGRESSION[1],
            lambda: nn.Linear(1, 2),
            r"one mean per example, shape \(N, 1\) or \(N,\), got \(40, 2\)",
        ),
    ],
)
def test_train_deterministic_rejects_bad_regression_batches(x, y, make_net, match):
    net, noise = make_net(), GaussianNoise()
    before = state(net, noise)
    with pytest.raises(ValueError, match=match):
        train_deterministic(net, [(x, y)], epochs=1, task="regression", noise=noise, progress=False)
    assert same_state(before, [net, noise])


def test_train_deterministic_rejects_a_non_module():
    with pytest.raises(TypeError, match="must be an nn.Module"):
        train_deterministic(lambda x: x, [], epochs=1, progress=False)


def test_predict_deterministic_rejects_bad_input():
    x, y = classification_data()
    net = classifier()
    with pytest.raises(ValueError, match="x contains NaN"):
        predict_deterministic(net, _nan(x))
    with pytest.raises(ValueError, match="non-empty tensor"):
        predict_deterministic(net, x[:0])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predict_deterministic(net, x, batch_size=0)
    with pytest.raises(ValueError, match="pass per_sample=True"):
        predict_deterministic(net, x, y=y)
    with pytest.raises(ValueError, match="y has 47 rows"):
        predict_deterministic(net, x, y=y[:-1], per_sample=True)
    with pytest.raises(ValueError, match="label 3 is out of range for 3 classes"):
        predict_deterministic(net, x, y=torch.full_like(y, 3), per_sample=True)
    with pytest.raises(ValueError, match=r"must output \(N, C\) logits"):
        predict_deterministic(nn.Linear(4, 1), x)
    with pytest.raises(ValueError, match="one mean per example"):
        predict_deterministic(net, x, noise=GaussianNoise())
    with pytest.raises(TypeError, match="must be a tensor"):
        predict_deterministic(net, x.tolist())


def test_gaussian_noise():
    noise = GaussianNoise(2.0)
    assert noise.variance.item() == pytest.approx(2.0)
    mean, target = torch.zeros(3), torch.tensor([0.0, 1.0, -2.0])
    expected = -torch.distributions.Normal(0.0, math.sqrt(2.0)).log_prob(target)
    assert torch.allclose(noise.negative_log_likelihood(mean, target), expected)
    assert "variance=2" in repr(noise)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="noise variance must be a positive finite"):
            GaussianNoise(bad)
    with pytest.raises(ValueError, match="the means have shape"):
        noise.negative_log_likelihood(mean, target[:2])


def test_a_noise_inside_the_network_is_one_parameter_of_the_optimizer():
    class WithNoise(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.noise = regressor(), GaussianNoise(1.0)

        def forward(self, x):
            return self.body(x)

    x, y = regression_data()
    net = WithNoise()
    history = train_deterministic(
        net,
        [(x, y)],
        epochs=2,
        lr=0.1,
        weight_decay=10.0,
        task="regression",
        noise=net.noise,
        progress=False,
    )
    assert len(history) == 2 and net.noise.variance.item() != pytest.approx(1.0)


def test_predict_deterministic_rejects_one_dimensional_logits():
    x, _ = classification_data()
    net = nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))
    with pytest.raises(ValueError, match=r"must output \(N, C\) logits with C >= 2 classes"):
        predict_deterministic(net, x)


def test_public_names():
    import pyro_bnn.baselines as baselines

    assert sorted(baselines.__all__) == baselines.__all__
    for name in baselines.__all__:
        assert hasattr(baselines, name), name
