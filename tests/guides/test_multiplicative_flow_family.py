"""The multiplicative-normalizing-flow family: the bound, the layers' moments and bad input."""

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyro_bnn.distributions.masked_flow import push_forward
from pyro_bnn.guides import AutoSiteGuide, MultiplicativeFlowFamily, MultiplicativeNormal
from pyro_bnn.infer import TraceKL_ELBO
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood, normal_prior
from pyro_bnn.ops import ScaledWeight

FAMILY = MultiplicativeFlowFamily(
    flow_length=2, hidden_dim=5, auxiliary_flow_length=1, auxiliary_hidden_dim=4
)


def _tiny(num_data=4, seed=0):
    torch.manual_seed(seed)
    pyro.clear_param_store()
    model = BayesianNetwork(nn.Linear(3, 2), CategoricalLikelihood(num_data, 2), normal_prior(1.0))
    guide = AutoSiteGuide(model, families={"net.weight": FAMILY})
    x = torch.randn(num_data, 3)
    y = torch.tensor([0, 1, 1, 0])[:num_data]
    guide(x, y)
    params = guide.params.net.weight
    with torch.no_grad():  # a posterior away from its start, so every term matters
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
        params.log_variance_unconstrained.fill_(-2.0)
        for step in [*params.flow, *params.auxiliary_flow]:  # gates far from the identity
            step.net.layers[-1].bias[3:].fill_(-1.0)
    return model, guide, params, x, y


def _bound_by_hand(model, params, x, y, draws):
    """E[log p(y|x,W) + log p(W) + log r(z|W) - log q(W|z) - log q(z)] (thesis Eq. 52), with W
    drawn in weight space, one z per draw, and every density written out."""
    loc, log_variance = params.loc, params.log_variance
    bias = model.net.bias
    values = []
    for _ in range(draws):
        base = dist.Normal(params.noise_loc, (0.5 * params.noise_log_variance).exp())
        z0 = base.sample()
        z, log_det = push_forward(params.flow, z0)
        log_q_z = base.log_prob(z0).sum() - log_det
        std = (0.5 * log_variance).exp()
        w = z * loc + std * torch.randn_like(loc)  # z over the input units (columns)
        log_q_w = dist.Normal(z * loc, std).log_prob(w).sum()
        log_p_w = dist.Normal(0.0, 1.0).log_prob(w).sum()
        log_lik = dist.Categorical(logits=x @ w.T + bias).log_prob(y).sum()
        summary = torch.tanh(w @ params.auxiliary_c).mean()  # c^T W, W (in, out) in the thesis
        r_loc = params.auxiliary_b_mean * summary
        r_scale = torch.sigmoid(params.auxiliary_b_scale * summary)
        backward, r_log_det = push_forward(params.auxiliary_flow, z)
        log_r = dist.Normal(r_loc, r_scale).log_prob(backward).sum() + r_log_det
        values.append(log_lik + log_p_w + log_r - log_q_w - log_q_z)
    return torch.stack(values)


def test_the_bound_matches_a_monte_carlo_estimate_written_out_by_hand():
    model, guide, params, x, y = _tiny()
    elbo = TraceKL_ELBO()
    with torch.no_grad():
        ours = torch.stack([-elbo.differentiable_loss(model, guide, x, y) for _ in range(1000)])
        by_hand = _bound_by_hand(model, params, x, y, 1000)
    error = (ours.var() / len(ours) + by_hand.var() / len(by_hand)).sqrt()
    assert abs(ours.mean() - by_hand.mean()) < 4 * error, (ours.mean(), by_hand.mean(), error)


def test_pyro_trace_elbo_estimates_the_same_bound():
    model, guide, _, x, y = _tiny()
    with torch.no_grad():
        ours = torch.tensor([TraceKL_ELBO().loss(model, guide, x, y) for _ in range(600)])
        pyros = torch.tensor([pyro.infer.Trace_ELBO().loss(model, guide, x, y) for _ in range(600)])
    error = (ours.var() / len(ours) + pyros.var() / len(pyros)).sqrt()
    assert abs(ours.mean() - pyros.mean()) < 4 * error


def test_linear_layer_draws_z_per_example_and_scales_the_mean_only():
    _, guide, params, _, _ = _tiny()
    fn = FAMILY.conditional(
        guide._sites["net.weight"], params, torch.ones(3), FAMILY.noise_distribution(params)
    )
    weight = fn.rsample()
    assert isinstance(weight, ScaledWeight) and not weight.scale_variance
    # Pre-activation moments against weight-space sampling with a fresh z per example.
    x = torch.randn(1, 3)
    n = 20000
    with torch.no_grad():
        local = F.linear(x.expand(n, -1), weight)
        z = FAMILY.noise_distribution(params).sample((n,))
        w = z[:, None, :] * params.loc + (0.5 * params.log_variance).exp() * torch.randn(n, 2, 3)
        space = w @ x[0]
    assert torch.allclose(local.mean(0), space.mean(0), atol=0.05)
    assert torch.allclose(local.var(0), space.var(0), rtol=0.1, atol=0.01)


def test_convolutions_use_the_site_draw_along_output_channels():
    torch.manual_seed(0)
    loc, log_variance = torch.randn(4, 2, 3, 3), torch.full((4, 2, 3, 3), -3.0)
    noise = torch.tensor([1.0, 0.0, 2.0, -1.0])
    fn = MultiplicativeNormal(loc, log_variance, noise)
    assert torch.equal(fn.loc, loc * noise[:, None, None, None])
    # Sample dimensions of a vectorized plate lead.
    batched = MultiplicativeNormal(loc, log_variance, torch.stack([noise, 2 * noise]))
    assert batched.batch_shape == (2, 4, 2, 3, 3)
    assert torch.equal(batched.loc[1], loc * 2 * noise[:, None, None, None])


def test_point_estimates_are_repeatable_and_shaped_like_the_weight():
    _, guide, _, _, _ = _tiny()
    first, second = guide.median()["net.weight"], guide.median()["net.weight"]
    assert torch.equal(first, second) and first.shape == (2, 3)
    assert guide.log_alpha()["net.weight"].shape == (2, 3)


def test_without_flows_z_is_gaussian():
    pyro.clear_param_store()
    family = MultiplicativeFlowFamily(flow_length=0, auxiliary_flow_length=0)
    model = BayesianNetwork(nn.Linear(3, 2), CategoricalLikelihood(4, 2), normal_prior(1.0))
    guide = AutoSiteGuide(model, families={"net.weight": family})
    guide(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    q = family.noise_distribution(guide.params.net.weight)
    assert isinstance(q, dist.Independent)
    assert TraceKL_ELBO().loss(model, guide, torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(
    "setting, value",
    [
        ("flow_length", -1),
        ("hidden_dim", 0),
        ("auxiliary_flow_length", 1.5),
        ("auxiliary_hidden_dim", True),
        ("init_log_variance", float("inf")),
    ],
)
def test_invalid_flow_settings_are_named(setting, value):
    with pytest.raises(ValueError, match=setting):
        MultiplicativeFlowFamily(**{setting: value})


def test_family_refuses_sites_it_cannot_represent():
    pyro.clear_param_store()
    model = BayesianNetwork(
        nn.Linear(3, 2), CategoricalLikelihood(4, 2), prior=normal_prior(1.0), include_bias=True
    )
    guide = AutoSiteGuide(model, families={"net.bias": "multiplicative_flow"})
    with pytest.raises(ValueError, match="'net.bias'.*multiplicative_flow.*shape \\(2,\\)"):
        guide(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
