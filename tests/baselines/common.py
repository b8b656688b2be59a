"""Tiny problems shared by the baseline tests."""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def classification_data(num_data=48, in_features=4, num_classes=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_data, in_features, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y.clamp_max(num_classes - 1)


def regression_data(num_data=40, seed=2):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(num_data, 1, generator=generator) * 4 - 2
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(num_data, generator=generator)
    return x, y


def loader(x, y, batch_size=16, shuffle=True):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


def classifier(in_features=4, num_classes=3, hidden=8, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, num_classes))


def regressor(hidden=8, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))


def state(*modules):
    """A copy of the modules' parameters and buffers, to check that nothing changed."""
    return [
        {name: value.detach().clone() for name, value in module.state_dict().items()}
        for module in modules
    ]


def same_state(before, modules):
    after = state(*modules)
    return all(
        a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for a, b in zip(before, after, strict=True)
    )
