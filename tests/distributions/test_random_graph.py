"""Random graphs of the functional neural process: ordering, kernel, relaxation, density."""

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_bnn.distributions import RandomGraph, dag_order, rbf_edge_logits


def _dag(u, log_length_scale=0.0, temperature=None):
    order = dag_order(u)
    allowed = order.unsqueeze(-1) > order.unsqueeze(-2)
    logits = rbf_edge_logits(u, u, torch.tensor(log_length_scale))
    return RandomGraph(logits, allowed, temperature, event_dim=2), order


@pytest.mark.parametrize("seed", range(5))
def test_a_dag_from_any_embedding_is_acyclic_and_follows_the_ordering(seed):
    generator = torch.Generator().manual_seed(seed)
    u = 2 * torch.randn(40, 3, generator=generator)
    graph, order = _dag(u, log_length_scale=2.0)  # a wide kernel: many edges
    for adjacency in (graph.sample(), _dag(u, 2.0, temperature=0.3)[0].rsample()):
        child, parent = adjacency.nonzero(as_tuple=True)
        assert len(child) > 0
        assert (order[parent] < order[child]).all()
        # A graph is acyclic iff its adjacency matrix is nilpotent.
        assert torch.linalg.matrix_power((adjacency > 0).double(), len(u)).abs().max() == 0


def test_dag_order_is_the_sum_of_standard_normal_log_cdfs():
    u = torch.tensor([[0.3, -1.2], [2.0, 0.1]])
    expected = torch.distributions.Normal(0.0, 1.0).cdf(u).log().sum(-1)
    torch.testing.assert_close(dag_order(u), expected)


def test_edge_probabilities_follow_the_rbf_kernel():
    generator = torch.Generator().manual_seed(0)
    children, parents = (
        torch.randn(6, 2, generator=generator),
        torch.randn(5, 2, generator=generator),
    )
    log_length_scale = torch.tensor(0.4)
    logits = rbf_edge_logits(children, parents, log_length_scale)
    squared = torch.cdist(children.double(), parents.double()).square()
    kernel = torch.exp(-0.5 * squared / math.exp(0.4))
    torch.testing.assert_close(torch.sigmoid(logits).double(), kernel, rtol=1e-5, atol=1e-6)
    # Hard edges are drawn with those probabilities.
    graph = RandomGraph(logits, event_dim=1)
    frequency = graph.sample(torch.Size([20_000])).double().mean(0)
    assert (frequency - kernel).abs().max() < 0.015


def test_equal_embeddings_get_a_capped_logit():
    u = torch.zeros(2, 3)
    logits = rbf_edge_logits(u, u, torch.tensor(0.0))
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, torch.full((2, 2), 30.0))


def test_relaxed_edges_exceed_one_half_with_the_edge_probability():
    # a > 1/2 exactly when logit + logistic noise > 0, which has probability sigmoid(logit).
    logits = torch.tensor([[-2.0, 0.0, 1.5]])
    graph = RandomGraph(logits.expand(50_000, 3), temperature=0.3, event_dim=1)
    above = (graph.rsample() > 0.5).double().mean(0)
    torch.testing.assert_close(above, torch.sigmoid(logits[0]).double(), atol=0.01, rtol=0)


def test_relaxed_density_matches_pyros_relaxed_bernoulli_where_allowed():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.3]])
    allowed = torch.tensor([[True, False], [True, True]])
    graph = RandomGraph(logits, allowed, temperature=0.3, event_dim=2)
    value = torch.tensor([[0.7, 0.0], [0.2, 0.9]])
    reference = dist.RelaxedBernoulli(torch.tensor(0.3), logits=logits).log_prob(value)
    torch.testing.assert_close(
        graph.log_prob(value), reference[allowed].sum(), rtol=1e-4, atol=1e-4
    )
    hard = RandomGraph(logits, allowed, event_dim=2)
    edges = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = dist.Bernoulli(logits=logits).log_prob(edges)[allowed].sum()
    torch.testing.assert_close(hard.log_prob(edges), expected)


def test_relaxed_density_integrates_to_one():
    # The binary concrete density of one edge on (0, 1), by the trapezoidal rule in the logit
    # s of the value (da = a (1 - a) ds), in float64 where a = sigmoid(s) stays below 1.
    graph = RandomGraph(torch.tensor([0.7], dtype=torch.float64), temperature=0.3, event_dim=1)
    s = torch.linspace(-36, 36, 200_001, dtype=torch.float64)
    a = torch.sigmoid(s)
    density = graph.log_prob(a.unsqueeze(-1)).exp()
    mass = torch.trapezoid(density * a * (1 - a), s)
    assert mass.item() == pytest.approx(1.0, abs=1e-3)


def test_shapes_and_bad_arguments():
    graph = RandomGraph(torch.zeros(4, 7), temperature=0.3, event_dim=1)
    assert graph.batch_shape == (4,) and graph.event_shape == (7,)
    assert graph.rsample(torch.Size([2])).shape == (2, 4, 7)
    assert graph.expand(torch.Size([3, 4])).batch_shape == (3, 4)
    with pytest.raises(ValueError, match="event_dim"):
        RandomGraph(torch.zeros(3), event_dim=2)
    with pytest.raises(ValueError, match="temperature"):
        RandomGraph(torch.zeros(3, 3), temperature=0.0)
    with pytest.raises(NotImplementedError, match="hard edges"):
        RandomGraph(torch.zeros(3, 3)).rsample()
