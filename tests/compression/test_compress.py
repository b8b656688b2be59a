"""compress(): pruning rule, cascade, bit widths and export of a trained Bayesian network."""

import pyro
import pytest
import torch
from torch import nn

from pyro_bnn.compression import SCENARIOS, compress
from pyro_bnn.guides import AutoMeanFieldNormal, AutoSiteGuide
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood, lenet5_caffe, lenet_300_100
from pyro_bnn.models.structured import structured_prior


def trained(net, method, input_shape, steps=3, classes=10):
    """A model and guide after a few SVI steps on random data."""
    prior = {} if method is None else {"prior": structured_prior(method)}
    likelihood = CategoricalLikelihood(1000, classes)
    model = BayesianNetwork(net, likelihood, input_shape=input_shape, **prior)
    guide = AutoMeanFieldNormal(model) if method is None else AutoSiteGuide(model)
    x, y = torch.randn(8, *input_shape), torch.randint(0, classes, (8,))
    optimizer = torch.optim.Adam([*guide.parameters(), *model.parameters()], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        pyro.infer.TraceMeanField_ELBO().differentiable_loss(model, guide, x, y).backward()
        optimizer.step()
    return model, guide, x


def switch_off(guide, method):
    """Push about half of every layer's groups below the method's threshold."""
    with torch.no_grad():
        for name, parameter in guide.named_parameters():
            if method == "group-nj" and "group_scale.log_variance" in name:
                parameter[::2] = 5.0
            if method == "l0" and "gate.log_alpha" in name:
                parameter[::2] = -10.0


@pytest.mark.parametrize("method", ["group-nj", "l0"])
@pytest.mark.parametrize("arch, input_shape", [(lenet_300_100, (1, 28, 28)),
                                                (lenet5_caffe, (1, 28, 28))])  # fmt: skip
def test_exported_network_equals_the_masked_posterior_mean(arch, input_shape, method):
    model, guide, x = trained(arch(), method, input_shape)
    switch_off(guide, method)
    compressed = compress(model, guide)
    masked = compressed.scenario_network("pruning")
    exported = compressed.export()
    with torch.no_grad():
        torch.testing.assert_close(exported(x), masked(x), rtol=1e-5, atol=1e-5)
    # The masked network is the posterior mean with the pruned groups zeroed.
    for name, post in compressed.posteriors.items():
        removed = ~post.keep
        weight = dict(masked.named_modules())[name].weight
        assert (weight.transpose(0, post.group_dim)[removed] == 0).all()
    # Every layer is physically smaller where its groups went, and the rates say so.
    assert compressed.architecture() != compressed.original_architecture()
    ratios = compressed.ratios
    assert 1 < ratios.pruning < ratios.fast_prediction < ratios.maximum_compression
    for scenario in SCENARIOS:
        with torch.no_grad():
            assert torch.isfinite(compressed.scenario_network(scenario)(x)).all()
            assert torch.isfinite(compressed.export(scenario)(x)).all()


def test_unstructured_sparse_vd_compresses_through_the_same_path():
    model, guide, x = trained(lenet_300_100(), None, (1, 28, 28))
    compressed = compress(model, guide, thresholds=3.0)
    assert compressed.original_architecture() == "784-300-100"
    with torch.no_grad():
        torch.testing.assert_close(
            compressed.export()(x), compressed.scenario_network("pruning")(x)
        )


def test_batch_norm_is_handled():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )
    model, guide, x = trained(net, "l0", (1, 6, 6), classes=3)
    switch_off(guide, "l0")
    compressed = compress(model, guide)
    with torch.no_grad():
        torch.testing.assert_close(
            compressed.export()(x), compressed.scenario_network("pruning")(x)
        )


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)) + x)


def test_skip_connections_are_refused_clearly():
    model, guide, _ = trained(Residual(), "group-nj", (6,), classes=3)
    with pytest.raises(ValueError, match="skip connection"):
        compress(model, guide)


def test_bad_input():
    model = BayesianNetwork(
        lenet_300_100(), CategoricalLikelihood(1000, 10), prior=structured_prior("group-nj"),
        input_shape=(1, 28, 28),
    )  # fmt: skip
    guide = AutoSiteGuide(model)
    with pytest.raises(RuntimeError, match="has not been trained"):
        compress(model, guide)
    # A layer without a prior has no rule.
    model = BayesianNetwork(
        lenet_300_100(), CategoricalLikelihood(1000, 10), prior=structured_prior("l0"),
        select=["fc1.weight", "fc2.weight"],
    )  # fmt: skip
    guide = AutoSiteGuide(model)
    guide(torch.randn(2, 1, 28, 28), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="the layers fc3 have no prior"):
        compress(model, guide, input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="needs the shape of one input"):
        compress(model, guide)


def test_a_guide_family_the_rule_cannot_read_is_a_clear_error():
    model = BayesianNetwork(
        lenet_300_100(), CategoricalLikelihood(1000, 10), prior=structured_prior("group-nj"),
        input_shape=(1, 28, 28),
    )  # fmt: skip
    guide = AutoSiteGuide(model, families={"*.group_scale": "delta"})
    guide(torch.randn(2, 1, 28, 28), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="posterior of 'net.fc1.weight.group_scale' is a Delta; "
                       "its pruning rule reads a Normal"):  # fmt: skip
        compress(model, guide)
