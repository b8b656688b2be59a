import pytest
import torch
from torch import nn

from pyro_bnn.baselines import (
    GaussianNoise,
    mc_dropout_network,
    predict_mc_dropout,
    train_deterministic,
)
from pyro_bnn.baselines.mc_dropout import INPUT_DROPOUT
from pyro_bnn.infer import ClassificationPrediction, RegressionPrediction

from .common import classification_data, classifier, loader, regression_data, regressor


def identity_chain(width=5, depth=2):
    layers = [nn.Linear(width, width) for _ in range(depth)]
    for layer in layers:
        with torch.no_grad():
            layer.weight.copy_(torch.eye(width))
            layer.bias.zero_()
    return nn.Sequential(*layers)


def test_dropout_goes_before_every_weight_layer_but_the_first():
    net = classifier()
    dropout_net = mc_dropout_network(net, 0.3)
    assert not hasattr(net[2], INPUT_DROPOUT)  # the original is untouched
    assert not hasattr(dropout_net[0], INPUT_DROPOUT)
    assert isinstance(dropout_net[2].input_dropout, nn.Dropout)
    assert dropout_net[2].input_dropout.p == 0.3
    # Same parameters under the same names, both ways.
    assert list(dropout_net.state_dict()) == list(net.state_dict())
    dropout_net.load_state_dict(net.state_dict())
    net.load_state_dict(dropout_net.state_dict())
    x, _ = classification_data()
    dropout_net.eval()
    with torch.no_grad():
        assert torch.equal(dropout_net(x), net(x))


@pytest.mark.parametrize("skip, factor", [(None, 2.0), ((), 4.0)])
def test_dropout_drops_the_inputs_of_the_layers(skip, factor):
    # Two identity layers: the output is the input times the masks over 1 - p = 1/2, so its
    # entries are 0 or x / (1 - p) per dropped layer.
    net = mc_dropout_network(identity_chain(), 0.5, skip=skip)
    net.train()
    x = torch.ones(2000, 5)
    with torch.no_grad():
        output = net(x)
    values = set(output.unique().tolist())
    assert values <= {0.0, factor}
    kept = (output > 0).double().mean().item()
    assert kept == pytest.approx(0.5 if skip is None else 0.25, abs=0.02)


def test_convolutions_and_custom_forward():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(self.conv(x).relu().flatten(1))

    net = mc_dropout_network(Net(), 0.5, skip=())
    assert isinstance(net.conv.input_dropout, nn.Dropout)
    assert isinstance(net.fc.input_dropout, nn.Dropout)
    prediction = predict_mc_dropout(net, torch.randn(4, 1, 6, 6), num_samples=7)
    assert prediction.probs_samples.shape == (7, 4, 3)


def test_predict_mc_dropout_keeps_only_dropout_on():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    net = mc_dropout_network(net, 0.5)
    net.train()
    net[1].eval()  # a mixed state, restored as it was
    modes = [module.training for module in net.modules()]
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    x, y = classification_data()
    prediction = predict_mc_dropout(net, x, num_samples=20, y=y, batch_size=7)
    assert [module.training for module in net.modules()] == modes
    for name, value in net.named_buffers():  # BatchNorm ran in evaluation mode
        assert torch.equal(value, buffers[name]), name
    assert isinstance(prediction, ClassificationPrediction)
    assert prediction.probs_samples.shape == (20, len(x), 3)
    assert torch.allclose(prediction.probs_samples.sum(-1), torch.ones(20, len(x)))
    assert prediction.log_likelihood.shape == (20, len(x))
    assert (prediction.mutual_information > 0).all()  # the masks differ between samples


def test_predict_mc_dropout_draws_the_dropout_predictive():
    # y = mask * x / (1 - p) with p = 1/2: mean x, variance x^2 p / (1 - p) = x^2.
    torch.manual_seed(0)
    net = mc_dropout_network(identity_chain(width=1), 0.5)
    x = torch.tensor([[1.0], [2.0], [-3.0]])
    noise = GaussianNoise(0.25)
    prediction = predict_mc_dropout(net, x, num_samples=20000, noise=noise, batch_size=2)
    assert isinstance(prediction, RegressionPrediction)
    assert prediction.mean_samples.shape == prediction.variance_samples.shape == (20000, 3)
    assert torch.allclose(prediction.mean, x[:, 0], rtol=0.05, atol=0.03)
    assert torch.allclose(prediction.epistemic_variance, x[:, 0] ** 2, rtol=0.05)
    assert torch.allclose(prediction.aleatoric_variance, torch.full((3,), 0.25))
    # Independent masks across inputs.
    zeros = prediction.mean_samples == 0
    both = (zeros[:, 0] & zeros[:, 1]).double().mean().item()
    assert both == pytest.approx(0.25, abs=0.02)


def test_mc_dropout_trains_with_weight_decay():
    x, y = regression_data()
    net = mc_dropout_network(regressor(), 0.1)
    noise = GaussianNoise()
    history = train_deterministic(
        net,
        loader(x, y),
        epochs=2,
        lr=0.01,
        weight_decay=1e-3,
        task="regression",
        noise=noise,
        progress=False,
    )
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    prediction = predict_mc_dropout(net, x, num_samples=5, noise=noise, y=y)
    assert prediction.log_likelihood.shape == (5, len(x))


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, "0.5", True])
def test_mc_dropout_network_rejects_bad_rates(p):
    with pytest.raises(ValueError, match=r"dropout rate p must lie in \[0, 1\)"):
        mc_dropout_network(classifier(), p)


def test_mc_dropout_network_rejects_bad_input():
    net = classifier()
    with pytest.raises(ValueError, match="no nn.Linear or convolution layer"):
        mc_dropout_network(nn.Sequential(nn.Tanh()), 0.5)
    with pytest.raises(ValueError, match="skip: no such layer fc9; the layers are 0, 2"):
        mc_dropout_network(net, 0.5, skip=["fc9"])
    with pytest.raises(TypeError, match="not a string"):
        mc_dropout_network(net, 0.5, skip="0")
    with pytest.raises(ValueError, match="already has an input_dropout"):
        mc_dropout_network(mc_dropout_network(net, 0.5), 0.5)
    with pytest.raises(TypeError, match="must be an nn.Module"):
        mc_dropout_network(lambda x: x, 0.5)
    assert not any(hasattr(module, INPUT_DROPOUT) for module in net.modules())


def test_predict_mc_dropout_rejects_bad_input():
    x, y = classification_data()
    net = mc_dropout_network(classifier(), 0.5)
    net.train()
    bad = x.clone()
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match="no dropout layer"):
        predict_mc_dropout(classifier(), x)
    with pytest.raises(ValueError, match="x contains NaN or infinite"):
        predict_mc_dropout(net, bad)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        predict_mc_dropout(net, x, num_samples=0)
    with pytest.raises(ValueError, match="y has 10 rows but the inputs have 48"):
        predict_mc_dropout(net, x, y=y[:10])
    with pytest.raises(ValueError, match="needs noise=GaussianNoise"):
        predict_mc_dropout(net, x, noise="0.1")
    assert net.training and all(module.training for module in net.modules())
