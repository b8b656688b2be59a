"""Weight sharing: K-means codebooks and Deep Compression's centre training."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyro_bnn.baselines import train_deterministic
from pyro_bnn.compression import Codebook, compress, kmeans_share, train_codebooks
from pyro_bnn.models import lenet_300_100
from tests.compression.test_compress import switch_off, trained


def test_kmeans_with_more_clusters_than_values_changes_nothing():
    weights = torch.tensor([[0.5, -0.25], [0.5, 0.125]])
    shared, codebook = kmeans_share(weights, num_clusters=32)
    assert torch.equal(shared, weights)
    assert torch.equal(codebook, torch.tensor([-0.25, 0.125, 0.5]))


def test_kmeans_with_fewer_clusters_than_values():
    generator = torch.Generator().manual_seed(0)
    left = -1.0 + 0.01 * torch.randn(50, generator=generator)
    right = 2.0 + 0.01 * torch.randn(30, generator=generator)
    weights = torch.cat([left, right]).reshape(8, 10)
    shared, codebook = kmeans_share(weights, num_clusters=2)
    torch.testing.assert_close(codebook, torch.stack([left.mean(), right.mean()]))
    assert torch.equal(shared.flatten()[:50], codebook[0].expand(50))
    assert torch.equal(shared.flatten()[50:], codebook[1].expand(30))
    # Fixed initialization and random state: the same answer every time.
    again, _ = kmeans_share(weights, num_clusters=2)
    assert torch.equal(again, shared)


def test_kmeans_shares_at_most_k_values_and_keeps_masked_weights_zero():
    weights = torch.randn(20, 30, generator=torch.Generator().manual_seed(1))
    mask = weights.abs() > 0.5
    shared, codebook = kmeans_share(weights, num_clusters=8, mask=mask)
    assert codebook.shape == (8,) and torch.all(codebook[1:] > codebook[:-1])
    assert torch.all(shared[~mask] == 0)
    assert set(shared[mask].tolist()) <= set(codebook.tolist())
    # Each weight takes its nearest centre.
    nearest = codebook[(weights[mask, None] - codebook).abs().argmin(dim=1)]
    assert torch.equal(shared[mask], nearest)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_clusters": 0}, "positive integer"),
        ({"mask": torch.ones(3, dtype=torch.bool)}, "bool tensor of the weights' shape"),
        ({"mask": torch.zeros(2, 2, dtype=torch.bool)}, "selects no weight"),
    ],
)
def test_kmeans_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kmeans_share(torch.ones(2, 2), **kwargs)


def test_codebook_weight_is_the_centre_of_each_assignment():
    weights = torch.tensor([[0.9, -1.1, 0.0], [1.1, 0.3, -0.9]])
    mask = weights != 0
    codebook = Codebook.kmeans(weights, num_clusters=3, mask=mask)
    assert codebook.assignment.dtype == torch.long and codebook.assignment.shape == (2, 3)
    shared = codebook.weight()
    assert shared[0, 2] == 0
    torch.testing.assert_close(shared[mask], codebook.centres[codebook.assignment[mask]])
    # New centres move every weight that shares them.
    moved = codebook.weight(codebook.centres + 1.0)
    torch.testing.assert_close(moved[mask], shared[mask] + 1.0)
    assert moved[0, 2] == 0


def _layer_and_data(seed=0, n=256):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x @ torch.randn(6, 3, generator=generator)).argmax(1)
    return nn.Sequential(nn.Linear(6, 3)), x, y


def test_a_centre_moves_against_the_summed_gradient_of_its_weights():
    """One Adam step moves each centre by lr against the sign of its gradient, and the gradient
    of a centre is the sum of the gradients of the weights that share it (Han et al., Eq. 3),
    here summed by hand from the weight gradient of the shared network."""
    net, x, y = _layer_and_data()
    codebook = Codebook.kmeans(net[0].weight.detach(), num_clusters=4)
    shared = nn.Sequential(nn.Linear(6, 3))
    shared.load_state_dict(net.state_dict())
    with torch.no_grad():
        shared[0].weight.copy_(codebook.weight())
    F.cross_entropy(shared(x), y).backward()
    summed = torch.zeros(4).index_add_(
        0, codebook.assignment.flatten(), shared[0].weight.grad.flatten()
    )
    assert (summed.abs() > 1e-6).all()
    lr = 1e-3
    result, history = train_codebooks(
        net, {"0": codebook}, [(x, y)], epochs=1, lr=lr, progress=False
    )
    step = result["0"].centres - codebook.centres
    torch.testing.assert_close(step, -lr * summed.sign(), rtol=1e-3, atol=1e-7)
    assert torch.equal(result["0"].assignment, codebook.assignment)
    assert len(history) == 1 and history[0]["epoch"] == 1


def test_centre_training_reaches_the_best_centres_for_the_assignments():
    """With the assignments fixed, the training loss is convex in the centres; its minimum,
    found by L-BFGS on the full batch, is where centre training must end up."""
    net, x, y = _layer_and_data(seed=1, n=512)
    data = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)]
    train_deterministic(net, data, epochs=30, lr=5e-2, seed=0, progress=False)
    before = {name: p.clone() for name, p in net.state_dict().items()}
    codebook = Codebook.kmeans(net[0].weight.detach(), num_clusters=2)

    def loss(weight):
        return F.cross_entropy(F.linear(x, weight, net[0].bias.detach()), y)

    centres = codebook.centres.clone().requires_grad_(True)
    lbfgs = torch.optim.LBFGS([centres], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        value = loss(codebook.weight(centres))
        value.backward()
        return value

    lbfgs.step(closure)
    best = loss(codebook.weight(centres)).item()
    rounded = loss(codebook.weight()).item()
    assert best < rounded - 0.1
    result = train_codebooks(net, {"0": codebook}, data, epochs=40, lr=2e-2, progress=False)
    assert loss(result[0]["0"].weight()).item() == pytest.approx(best, abs=5e-3)
    # The network handed in is left as it was.
    for name, parameter in net.state_dict().items():
        assert torch.equal(parameter, before[name])


def test_compressed_network_trains_its_codebooks_in_place():
    model, guide, x = trained(lenet_300_100(), "l0", (1, 28, 28))
    switch_off(guide, "l0")
    compressed = compress(model, guide, num_clusters=4)
    kmeans = compressed.scenario_weights("maximum_compression")
    ratios = compressed.ratios
    y = torch.randint(0, 10, (len(x),))
    history = compressed.train_codebooks([(x, y)], epochs=2, lr=1e-2, progress=False)
    assert len(history) == 2 and compressed.codebook_epochs == 2
    assert compressed.as_dict()["codebook_epochs"] == 2
    assert compressed.ratios is ratios
    shared = compressed.scenario_weights("maximum_compression")
    for name, weight in shared.items():
        assert not torch.equal(weight, kmeans[name])
        # Same zeros, at most 4 distinct values a layer.
        assert torch.equal(weight == 0, kmeans[name] == 0)
        assert torch.unique(weight[weight != 0]).numel() <= 4
    with torch.no_grad():
        torch.testing.assert_close(
            compressed.export("maximum_compression")(x),
            compressed.scenario_network("maximum_compression")(x),
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.parametrize(
    "codebooks, options, error, message",
    [
        ({}, {}, ValueError, "non-empty mapping"),
        ({"0": "centres"}, {}, TypeError, "must be a Codebook"),
        ({"fc": Codebook.kmeans(torch.randn(3, 6))}, {}, ValueError, "no layer .fc."),
        ({"0": Codebook.kmeans(torch.randn(4, 6))}, {}, ValueError, r"shape \(4, 6\)"),
        (None, {"epochs": 0}, ValueError, "epochs must be a positive integer"),
        (None, {"lr": -1.0}, ValueError, "lr must be a positive"),
    ],
)
def test_train_codebooks_refuses_bad_arguments(codebooks, options, error, message):
    net, x, y = _layer_and_data()
    if codebooks is None:
        codebooks = {"0": Codebook.kmeans(net[0].weight.detach(), num_clusters=2)}
    with pytest.raises(error, match=message):
        train_codebooks(net, codebooks, [(x, y)], progress=False, **options)


def test_train_codebooks_refuses_bad_data_before_changing_a_centre():
    net, x, y = _layer_and_data()
    codebook = Codebook.kmeans(net[0].weight.detach(), num_clusters=2)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_codebooks(net, {"0": codebook}, [(bad, y)], progress=False)
    with pytest.raises(ValueError, match="out of range"):
        train_codebooks(net, {"0": codebook}, [(x, y + 3)], progress=False)
