import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from pyro_bnn.baselines import predict_deterministic, train_deterministic
from pyro_bnn.data import digits


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
