"""Small models shared by the inference tests."""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from torch.utils.data import DataLoader, TensorDataset

from pyro_bnn.distributions import ImproperLogUniform
from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood, GaussianLikelihood


def classification_problem(num_data=96, in_features=6, num_classes=3, batch_size=32):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(num_data, in_features, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    net = torch.nn.Sequential(
        torch.nn.Linear(in_features, 16), torch.nn.ReLU(), torch.nn.Linear(16, num_classes)
    )
    model = BayesianNetwork(
        net, CategoricalLikelihood(num_data, num_classes), input_shape=(in_features,)
    )
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    return model, guide, loader, x, y


def regression_problem(num_data=64, noise="learned", batch_size=32):
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(num_data, 1, generator=generator) * 4 - 2
    y = x[:, 0] ** 3 / 4 + 0.1 * torch.randn(num_data, generator=generator)
    net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    likelihood = GaussianLikelihood(num_data, noise=noise, scale=0.5)
    if noise == "heteroscedastic":
        net[-1] = torch.nn.Linear(16, 2)
    model = BayesianNetwork(net, likelihood, input_shape=(1,))
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    return model, guide, loader, x, y


def parameters(*modules):
    return {
        f"{i}.{name}": value.detach().clone()
        for i, module in enumerate(modules)
        for name, value in module.state_dict().items()
    }


class QuickStart(PyroModule):
    """The README's quick-start model: sparse linear regression with the log-uniform prior."""

    def __init__(self, in_features=10):
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](in_features, 1, bias=False)
        self.linear.weight = PyroSample(ImproperLogUniform((1, in_features)).to_event(2))

    def forward(self, x, y=None):
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(mean, 0.5), obs=y)
        return mean


def quick_start_data():
    """The README's data: only the first two of ten features matter."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(100, 10, generator=generator)
    y = 2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * torch.randn(100, generator=generator)
    return x, y
