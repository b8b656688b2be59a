"""The masked coupling step and the flow of multiplicative normalizing flows."""

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_bnn.distributions import MaskedCoupling, MaskedFlow
from pyro_bnn.distributions.masked_flow import push_forward


def _step(dim=4, seed=0):
    torch.manual_seed(seed)
    step = MaskedCoupling(dim, hidden_dim=7)
    with torch.no_grad():  # move away from the near-identity start
        for p in step.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return step


@pytest.mark.parametrize("mask", [[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1, 1, 1, 1]])
def test_log_determinant_matches_the_autograd_jacobian(mask):
    step = _step()
    mask = torch.tensor(mask, dtype=torch.float)
    z = torch.randn(4, dtype=torch.double)
    step = step.double()
    jacobian = torch.autograd.functional.jacobian(lambda v: step(v, mask.double())[0], z)
    _, log_det = step(z, mask.double())
    assert torch.allclose(log_det, torch.linalg.slogdet(jacobian).logabsdet)


def test_inverse_undoes_the_step():
    step = _step()
    z = torch.randn(5, 4)
    mask = torch.bernoulli(torch.full_like(z, 0.5))
    y, _ = step(z, mask)
    assert torch.allclose(step.inverse(y, mask), z, atol=1e-5)


def test_flow_density_is_the_base_density_minus_the_autograd_log_determinants():
    steps = [_step(3, seed=1).double(), _step(3, seed=2).double()]
    base = dist.Normal(torch.ones(3, dtype=torch.double), 0.3).to_event(1)
    flow = MaskedFlow(base, steps)
    torch.manual_seed(5)
    z = flow.rsample()
    # Replay the same draws: the base sample, then one mask per step.
    torch.manual_seed(5)
    value = base.rsample()
    expected = base.log_prob(value)
    for step in steps:
        mask = torch.bernoulli(torch.full_like(value, 0.5))
        jacobian = torch.autograd.functional.jacobian(lambda v, s=step, m=mask: s(v, m)[0], value)
        expected = expected - torch.linalg.slogdet(jacobian).logabsdet
        value = step(value, mask)[0]
    assert torch.allclose(z, value)
    assert torch.allclose(flow.log_prob(z), expected)


def test_density_given_the_masks_integrates_to_one():
    # For fixed masks the flow is a bijection of the plane; its density, q0(T^-1 y) |det dT^-1|,
    # integrated on a grid by the midpoint rule, is 1.
    step = _step(2, seed=3).double()
    mask = torch.tensor([1.0, 0.0], dtype=torch.double)
    base = dist.Normal(torch.zeros(2, dtype=torch.double), 1.0).to_event(1)
    h = 0.02
    axis = torch.arange(-9, 9, h, dtype=torch.double) + h / 2
    grid = torch.cartesian_prod(axis, axis)
    z = step.inverse(grid, mask)
    _, log_det = step(z, mask)
    mass = (base.log_prob(z) - log_det).exp().sum() * h * h
    assert mass.item() == pytest.approx(1.0, abs=2e-3)


def test_every_draw_keeps_its_density_and_foreign_values_are_refused():
    flow = MaskedFlow(dist.Normal(torch.zeros(3), 1.0).to_event(1), [_step(3)])
    first = flow.rsample()
    first_density = flow.log_prob(first)
    second = flow.rsample((5,))
    assert flow.log_prob(first) is first_density
    assert flow.log_prob(second).shape == (5,)
    with pytest.raises(NotImplementedError, match="its own draws"):
        flow.log_prob(first.clone())


def test_expanded_flow_draws_a_batch():
    flow = MaskedFlow(dist.Normal(torch.zeros(3), 1.0).to_event(1), [_step(3)]).expand((6,))
    z = flow.rsample()
    assert z.shape == (6, 3) and flow.log_prob(z).shape == (6,)


def test_push_forward_without_steps_is_the_identity():
    z = torch.randn(2, 3)
    out, log_det = push_forward([], z)
    assert out is z and torch.equal(log_det, torch.zeros(2))


def test_the_step_starts_near_the_identity():
    step = MaskedCoupling(3)
    z = torch.randn(10, 3)
    out, log_det = step(z, torch.zeros_like(z))
    # sigma = sigmoid(2) for every entry at the start.
    assert torch.allclose(
        log_det, torch.full((10,), 3 * math.log(torch.sigmoid(torch.tensor(2.0))))
    )
    assert (out - z).abs().mean() < (z.abs().mean())


@pytest.mark.parametrize(
    "kwargs, match",
    [({"dim": 0}, "dim must be a positive integer"), ({"dim": 3, "hidden_dim": 1.5}, "hidden_dim")],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskedCoupling(**kwargs)


def test_bad_shapes_are_refused():
    step = MaskedCoupling(3)
    with pytest.raises(ValueError, match="needs z of shape"):
        step(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="MaskedCoupling steps of that size"):
        MaskedFlow(dist.Normal(torch.zeros(4), 1.0).to_event(1), [step])
    with pytest.raises(ValueError, match="over vectors"):
        MaskedFlow(dist.Normal(torch.zeros(4), 1.0), [step])
