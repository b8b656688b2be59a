"""L0Prior: the prior whose KL against a hard-concrete gate is the expected-L0 penalty."""

import math

import pyro
import pytest
import scipy.stats
import torch
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence

from pyro_bnn.distributions import HardConcrete, L0Prior
from pyro_bnn.distributions.util import gauss_legendre

NUM_SAMPLES = 200_000
LOG_ALPHA = torch.tensor([-4.0, -1.0, 0.0, 1.5, 5.0], dtype=torch.float64)
PENALTY = torch.tensor([0.0, 0.1, 1.0, 2.5, 10.0], dtype=torch.float64)


def test_kl_is_the_expected_l0_penalty():
    # Thesis Eq. 106 with the default constants: -gamma/zeta = 1/11, beta log(1/11) = -1.5986.
    gate = HardConcrete(LOG_ALPHA)
    kl = kl_divergence(gate, L0Prior(PENALTY))
    expected = PENALTY * torch.sigmoid(LOG_ALPHA - 2 / 3 * math.log(0.1 / 1.1))
    assert torch.allclose(kl, expected, rtol=1e-12, atol=0)
    assert torch.allclose(kl, PENALTY * torch.sigmoid(LOG_ALPHA + 1.5986), rtol=1e-4)


def test_kl_with_the_gate_entropy_adds_the_normalizer_and_the_entropy():
    gate = HardConcrete(LOG_ALPHA, temperature=0.5)
    penalty_only = kl_divergence(gate, L0Prior(PENALTY))
    full = kl_divergence(gate, L0Prior(PENALTY, gate_entropy=True))
    log_normalizer = torch.log1p(2 * torch.exp(-PENALTY))
    assert torch.allclose(full, penalty_only + log_normalizer - gate.entropy(), rtol=1e-12)
    assert (full >= 0).all()


def test_hard_concrete_entropy_matches_monte_carlo():
    for kwargs in ({}, {"temperature": 0.3}, {"stretch_low": -0.3, "stretch_high": 1.05}):
        gate = HardConcrete(LOG_ALPHA, **kwargs)
        log_q = gate.log_prob(gate.sample((NUM_SAMPLES,)))
        mc, se = -log_q.mean(0), log_q.std(0) / math.sqrt(NUM_SAMPLES)
        assert ((gate.entropy() - mc).abs() <= 4 * se + 1e-9).all(), (gate.entropy(), mc)


def test_prior_is_normalized_on_the_hard_concrete_base_measure():
    # delta_0 + delta_1 + Lebesgue on (0, 1), the base measure of HardConcrete.log_prob.
    prior = L0Prior(PENALTY)
    nodes, weights = gauss_legendre(8, torch.float64, "cpu")
    inside = (weights[:, None] * prior.log_prob(nodes[:, None]).exp()).sum(0)
    atoms = (
        prior.log_prob(torch.zeros(5, dtype=torch.float64)).exp()
        + prior.log_prob(torch.ones(5, dtype=torch.float64)).exp()
    )
    assert torch.allclose(inside + atoms, torch.ones(5, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(
        prior.log_prob(torch.zeros(5, dtype=torch.float64)).exp(), prior.prob_zero
    )
    # An open gate costs `penalty` nats more than a closed one, wherever it is open.
    closed = prior.log_prob(torch.zeros(5, dtype=torch.float64))
    for z in (0.3, 1.0):
        assert torch.allclose(
            closed - prior.log_prob(torch.full((5,), z, dtype=torch.float64)), PENALTY
        )


def test_sampling_is_exact():
    prior = L0Prior(PENALTY[:4])
    z = prior.sample((NUM_SAMPLES,))
    assert z.shape == (NUM_SAMPLES, 4) and ((z >= 0) & (z <= 1)).all()
    open_mass = torch.exp(-PENALTY[:4]) / (1 + 2 * torch.exp(-PENALTY[:4]))
    for mask, probability in (
        (z == 0, prior.prob_zero),
        (z == 1, open_mass),
        ((z > 0) & (z < 1), open_mass),
    ):
        frequency = mask.double().mean(0)
        se = (probability * (1 - probability) / NUM_SAMPLES).sqrt()
        assert ((frequency - probability).abs() <= 4 * se).all(), (frequency, probability)
    se_mean = (prior.variance / NUM_SAMPLES).sqrt()
    assert ((z.mean(0) - prior.mean).abs() <= 4 * se_mean).all()
    assert torch.allclose(z.var(0), prior.variance, rtol=2e-2)
    inside = z[:, 0][(z[:, 0] > 0) & (z[:, 0] < 1)]
    assert scipy.stats.kstest(inside.numpy(), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("gate_entropy", [False, True])
def test_gradients_flow_to_log_alpha_and_penalty(gate_entropy):
    log_alpha = LOG_ALPHA.clone().requires_grad_()
    penalty = PENALTY.clone().requires_grad_()
    gate = HardConcrete(log_alpha)
    kl_divergence(gate, L0Prior(penalty, gate_entropy=gate_entropy)).sum().backward()
    assert torch.isfinite(log_alpha.grad).all() and (log_alpha.grad[1:] != 0).all()
    # d/dpenalty [penalty P(z != 0) + log(1 + 2 e^-penalty)].
    expected = gate.prob_nonzero.detach()
    if gate_entropy:
        expected = expected - torch.sigmoid(math.log(2) - PENALTY)
    assert torch.allclose(penalty.grad, expected, rtol=1e-12)


def test_negative_penalty_is_rejected():
    with pytest.raises(ValueError, match="penalty"):
        L0Prior(torch.tensor([0.1, -0.5]), validate_args=True)


def test_log_prob_outside_the_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="support"):
        L0Prior(torch.tensor(1.0), validate_args=True).log_prob(torch.tensor(1.5))


def test_broadcasting_expand_and_independent():
    prior = L0Prior(torch.tensor([0.1, 0.2, 0.3]), gate_entropy=True)
    expanded = prior.expand((2, 3))
    assert expanded.batch_shape == (2, 3) and expanded.gate_entropy
    gate = HardConcrete(torch.zeros(2, 3))
    assert kl_divergence(gate, prior).shape == (2, 3)
    assert torch.allclose(kl_divergence(gate, expanded), kl_divergence(gate, prior))
    # Per-gate penalties broadcast over a batch of gates, and to_event sums them.
    group_kl = kl_divergence(gate.to_event(1), L0Prior(torch.tensor([0.1, 0.2, 0.3])).to_event(1))
    assert torch.allclose(group_kl, (torch.tensor([0.1, 0.2, 0.3]) * gate.prob_nonzero).sum(-1))


def test_trace_mean_field_elbo_charges_the_penalty():
    log_alpha = torch.tensor([-2.0, 0.5, 3.0])
    penalty = torch.tensor([0.5, 1.0, 2.0])

    def model():
        pyro.sample("gate", L0Prior(penalty).to_event(1))

    def guide():
        pyro.sample("gate", HardConcrete(log_alpha).to_event(1))

    loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
    expected = (penalty * HardConcrete(log_alpha).prob_nonzero).sum()
    assert torch.allclose(loss, expected)
