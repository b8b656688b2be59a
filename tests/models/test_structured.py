"""Structured priors on a network's layers: sites, guide families, one SVI step, the pruning
rules' moments against weight-space sampling, and bad input."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.distributions import kl_divergence

from pyro_bnn import predict
from pyro_bnn.compression.rules import layer_posteriors
from pyro_bnn.distributions import sparse_vd_kl
from pyro_bnn.guides import (
    AutoSiteGuide,
    HardConcreteFamily,
    NormalFamily,
    RelaxedBernoulliFamily,
    TruncatedLogNormalFamily,
)
from pyro_bnn.guides.hard_concrete_family import DEFAULT_INIT_LOG_ALPHA
from pyro_bnn.infer import TraceKL_ELBO
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood
from pyro_bnn.models.structured import METHODS, L0Gates, structured_prior
from pyro_bnn.ops import RandomScale, ScaledWeight

NUM_TRAIN = 100

#: method -> (site suffixes under each weight, family of the group variable)
SITES = {
    "group-nj": ({"group_scale", "standardized"}, NormalFamily),
    "group-horseshoe": (
        {"global.gamma", "global.inv_gamma", "group.gamma", "group.inv_gamma", "standardized"},
        NormalFamily,
    ),
    "l0": ({"gate"}, HardConcreteFamily),
    "spike-and-slab": ({"inclusion", "slab"}, RelaxedBernoulliFamily),
    "sbp": ({"noise"}, TruncatedLogNormalFamily),
}


def small_net():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.ReLU(),
        nn.Linear(5, 3),
    )  # fmt: skip


def data(n=8):
    return torch.randn(n, 1, 6, 6), torch.randint(0, 3, (n,))


def build(method, **options):
    model = BayesianNetwork(
        small_net(), CategoricalLikelihood(NUM_TRAIN, 3), prior=structured_prior(method, **options)
    )
    return model, AutoSiteGuide(model)


def step(model, guide, x, y, steps=1):
    elbo = TraceKL_ELBO()
    optimizer = torch.optim.Adam([*guide.parameters(), *model.parameters()], lr=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = elbo.differentiable_loss(model, guide, x, y)
        loss.backward()
        optimizer.step()
    return loss, elbo


@pytest.mark.parametrize("method", sorted(METHODS))
def test_sites_families_and_one_step(method):
    model, guide = build(method)
    x, y = data()
    loss, elbo = step(model, guide, x, y)
    suffixes, family = SITES[method]
    for layer in ("net.0.weight", "net.3.weight", "net.5.weight"):
        names = {n.removeprefix(f"{layer}.") for n in guide._sites if n.startswith(layer + ".")}
        assert names == suffixes
    group_site = next(n for n in guide._sites if n.startswith("net.3.weight."))
    assert isinstance(guide.family(group_site), family)
    assert torch.isfinite(loss)
    for name, parameter in [*guide.named_parameters(), *model.named_parameters()]:
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name
    # The point-estimate weights live on the layer, as <name>_unscaled.
    assert hasattr(model.net[3], "weight_unscaled") == METHODS[method].deterministic_weight


@pytest.mark.parametrize("method", ["group-nj", "group-horseshoe", "spike-and-slab", "sbp"])
def test_group_variables_reach_the_layers_per_example(method):
    model, guide = build(method)
    x, y = data()
    guide(x, y)
    captured = {}

    def hook(module, args):
        captured["weight"] = module.weight

    handle = model.net[3].register_forward_pre_hook(hook)
    with pyro.poutine.replay(trace=pyro.poutine.trace(guide).get_trace(x, y)):
        model(x, y)
    handle.remove()
    weight = captured["weight"]
    assert isinstance(weight, ScaledWeight)
    assert isinstance(weight.input_scale, RandomScale)
    # The same input twice: each example draws its own scales.
    features = torch.ones(2, 48)
    out = torch.nn.functional.linear(features, weight)
    assert not torch.equal(out[0], out[1])


def test_group_normal_jeffreys_kl_is_the_sum_of_its_parts():
    """The ELBO's KL term, against the sparse-VD approximation on each group's log alpha (Eq.
    81, sign fixed) plus the Gaussian KL of Eq. 80, computed independently from the guide's
    parameters."""
    model, guide = build("group-nj")
    x, y = data()
    _, elbo = step(model, guide, x, y, steps=3)
    TraceKL_ELBO.differentiable_loss(elbo, model, guide, x, y)
    expected = 0.0
    with torch.no_grad():
        for layer in ("net.0.weight", "net.3.weight", "net.5.weight"):
            scale = guide.params.get_submodule(f"{layer}.group_scale")
            log_alpha = scale.log_variance - scale.loc.square().log()
            expected += sparse_vd_kl(log_alpha).sum().item()
            weight = guide.params.get_submodule(f"{layer}.standardized")
            q = dist.Normal(weight.loc, weight.log_variance.mul(0.5).exp())
            expected += kl_divergence(q, dist.Normal(0.0, 1.0)).sum().item()
    assert elbo.last_terms["kl"] == pytest.approx(expected, rel=1e-5)


def _trained(method, steps=20, **options):
    model, guide = build(method, **options)
    x, y = data()
    with torch.no_grad():
        # Spread the posterior so that the moments are not trivially the means.
        for name, parameter in guide.named_parameters():
            if name.endswith("log_variance"):
                parameter.uniform_(-4.0, -1.0)
            if name.endswith("loc") and "gamma" in name:
                parameter.uniform_(-0.5, 0.5)
    guide(x, y)
    return model, guide


@pytest.mark.parametrize("method", ["group-nj", "group-horseshoe"])
def test_marginal_weight_moments_match_weight_space_sampling(method):
    """Eq. 93 / 94 and the posterior means of Eq. 82 / 92 against Monte Carlo draws of the
    group scale and the standardized weight."""
    model, guide = _trained(method)
    summary = layer_posteriors(model, guide)["3"]
    num = 200_000
    with torch.no_grad():
        layer = "net.3.weight"
        w = guide.get_posterior(f"{layer}.standardized")
        w = w.loc + w.scale * torch.randn(num, *w.loc.shape)
        if method == "group-nj":
            q = guide.get_posterior(f"{layer}.group_scale")
            z = q.loc + q.scale * torch.randn(num, *q.loc.shape)
        else:
            z = 1.0
            for part in ("global.gamma", "global.inv_gamma", "group.gamma", "group.inv_gamma"):
                q = guide.get_posterior(f"{layer}.{part}")
                draw = (q.loc + q.scale * torch.randn(num, *q.loc.shape)).exp()
                z = z * draw.reshape(num, *(q.loc.shape or (1,))).sqrt()
        weights = w * z[:, None, :]
    torch.testing.assert_close(weights.mean(0), summary.mean, rtol=0.05, atol=0.02)
    torch.testing.assert_close(weights.var(0), summary.variance, rtol=0.1, atol=1e-3)


def test_l0_penalty_charges_open_groups_and_gated_l2():
    model, guide = build("l0", penalty=0.2, weight_decay=0.5)
    x, y = data()
    _, elbo = step(model, guide, x, y)
    TraceKL_ELBO.differentiable_loss(elbo, model, guide, x, y)
    expected = 0.0
    with torch.no_grad():
        for index in ("0", "3", "5"):
            module = model.net.get_submodule(index)
            unscaled = module.weight_unscaled
            dim = 1 if isinstance(module, nn.Linear) else 0
            others = [d for d in range(unscaled.dim()) if d != dim]
            cost = 0.2 * unscaled.numel() / unscaled.shape[dim] + 0.25 * unscaled.square().sum(
                others
            )
            gate = guide.get_posterior(f"net.{index}.weight.gate")
            # P(gate != 0) = sigmoid(log alpha - beta log(-gamma / zeta)), -gamma / zeta = 1/11.
            open_probability = torch.sigmoid(gate.log_alpha + 2 / 3 * torch.log(torch.tensor(11.0)))
            expected += (cost * open_probability).sum().item()
    assert elbo.last_terms["kl"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_prediction_with_pyro_predictive_and_predict(method):
    model, guide = build(method)
    x, y = data()
    step(model, guide, x, y)
    prediction = predict(model, guide, x, num_samples=4)
    assert prediction.probs.shape == (8, 3)
    assert torch.allclose(prediction.probs.sum(-1), torch.ones(8))
    samples = pyro.infer.Predictive(model, guide=guide, num_samples=3)(x)
    assert samples["obs"].shape == (3, 8)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown structured method 'group-lasso'"):
        structured_prior("group-lasso")
    with pytest.raises(ValueError, match="the L0 penalty must be a finite number >= 0"):
        structured_prior("l0", penalty=-1.0)
    with pytest.raises(ValueError, match="takes the options"):
        structured_prior("group-nj", penalty=0.1)
    with pytest.raises(ValueError, match="prior inclusion probability must lie in"):
        structured_prior("spike-and-slab", prior_inclusion=1.0)
    with pytest.raises(ValueError, match="the global scale tau0 must be positive"):
        structured_prior("group-horseshoe", global_scale=0.0)
    with pytest.raises(ValueError, match="has no entry for 'net.5.weight'|has no entry for"):
        BayesianNetwork(
            small_net(), CategoricalLikelihood(NUM_TRAIN, 3),
            prior=structured_prior("l0", penalty={"0": 1.0, "3": 0.1}),
        )  # fmt: skip
    # A layer the method cannot group.
    net = nn.Sequential(nn.Embedding(5, 4), nn.Flatten(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match="Embedding, which a structured prior cannot group"):
        BayesianNetwork(
            net, CategoricalLikelihood(NUM_TRAIN, 3), prior=structured_prior("group-nj"),
            select=["0.weight"],
        )  # fmt: skip
    # Pruning before training, and thresholds out of range, before anything is computed.
    model, guide = build("l0")
    with pytest.raises(RuntimeError, match="has not been trained"):
        layer_posteriors(model, guide)
    x, y = data()
    guide(x, y)
    with pytest.raises(ValueError, match=r"test-time gate in \[0, 1\)"):
        layer_posteriors(model, guide, thresholds=1.5)
    model, guide = build("sbp")
    guide(x, y)
    with pytest.raises(ValueError, match="signal-to-noise ratio >= 0"):
        layer_posteriors(model, guide, thresholds={"0": 1.0, "3": -1.0, "5": 1.0})


def test_per_layer_options():
    model, _ = build("l0", penalty={"0": 1.0, "3": 0.5, "5": 0.1})
    penalties = {site: layer.prior.penalty for site, layer in model.structured.items()}
    assert penalties == {"net.0.weight": 1.0, "net.3.weight": 0.5, "net.5.weight": 0.1}
    assert isinstance(model.structured["net.0.weight"].prior, L0Gates)


def test_l0_gates_start_at_the_reference_codes_dropout_rate():
    # log alpha0 = log(1 - p) - log p: sigmoid(log alpha0) is the keep rate 1 - p.
    model, guide = build("l0", init_drop_rate={"0": 0.5, "3": 0.2, "5": 0.5})
    x, y = data()
    guide(x, y)
    for site, expected in (("0", 0.0), ("3", math.log(4.0)), ("5", 0.0)):
        log_alpha = guide.get_posterior(f"net.{site}.weight.gate").log_alpha
        torch.testing.assert_close(log_alpha, torch.full_like(log_alpha, expected))
        assert torch.sigmoid(log_alpha[0]).item() == pytest.approx(
            1 - (0.2 if site == "3" else 0.5)
        )
    # Without it the guide's default: open gates.
    pyro.clear_param_store()
    model, guide = build("l0")
    guide(x, y)
    log_alpha = guide.get_posterior("net.0.weight.gate").log_alpha
    assert torch.all(log_alpha == DEFAULT_INIT_LOG_ALPHA)
    for bad in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"init_drop_rate is a dropout rate in \(0, 1\)"):
            structured_prior("l0", init_drop_rate=bad)


def test_horseshoe_kls_are_the_thesis_closed_forms_with_the_errata_fixed():
    """Eq. 153-156 with the signs the extraction lost restored and, for s_a ~ G(1/2, tau0^2)
    (scale parameterization), tau0^-2 where the thesis prints tau0^-1 (errata 3)."""
    mu = torch.tensor([-23.0, -1.0, 0.5], dtype=torch.float64)
    var = torch.tensor([0.3, 1e-4, 2.0], dtype=torch.float64)
    q = dist.LogNormal(mu, var.sqrt())
    tau = 1e-5
    half_log_2 = 0.5 * torch.log(torch.tensor(2.0, dtype=torch.float64))
    s_a = -math.log(tau) - tau**-2 * (mu + var / 2).exp() + 0.5 * (mu + var.log() + 1) + half_log_2
    gamma = -(mu + var / 2).exp() + 0.5 * (mu + var.log() + 1) + half_log_2
    inverse_gamma = -(var / 2 - mu).exp() + 0.5 * (-mu + var.log() + 1) + half_log_2
    half = torch.tensor(0.5, dtype=torch.float64)
    torch.testing.assert_close(kl_divergence(q, dist.Gamma(half, tau**-2)), -s_a)
    torch.testing.assert_close(kl_divergence(q, dist.Gamma(half, 1.0)), -gamma)
    torch.testing.assert_close(kl_divergence(q, dist.InverseGamma(half, 1.0)), -inverse_gamma)


def test_group_log_alpha_kl_has_the_sign_of_a_kl():
    """Eq. 81 as printed is -KL (errata 2): the registered KL is non-negative, decreasing in
    log alpha, -> 0 as log alpha grows and ~ k1 - log(alpha) / 2 as it falls (within the
    clamp range of log alpha)."""
    log_alpha = torch.linspace(-9.5, 9.5, 39, dtype=torch.float64)
    kl = sparse_vd_kl(log_alpha)
    assert (kl >= 0).all() and (kl.diff() < 0).all()
    assert kl[-1] < 1e-4
    assert kl[0] == pytest.approx(0.63576 + 4.75, abs=1e-3)
