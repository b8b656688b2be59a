"""The matrix-normal guide family: local reparameterization, KL, drop-in use and bad input."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import kl_divergence

from pyro_bnn.distributions import MatrixNormal
from pyro_bnn.guides import AutoSiteGuide, LocalReparameterizedMatrixNormal, MatrixNormalFamily
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood, normal_prior
from pyro_bnn.ops import MatrixNormalWeight
from pyro_bnn.ops import local_reparameterization as pyro_bnn_local_reparameterization


def _random_matrix_normal(out=3, rows=(4,), seed=0):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(out, *rows, generator=g)
    row_lv = torch.randn(*rows, generator=g) * 0.5 - 1
    col_lv = torch.randn(out, generator=g) * 0.5 - 1
    return loc, row_lv, col_lv


def test_local_reparameterization_matches_weight_space_sampling():
    # Weight space: W ~ MN(M^T, diag(row_var), diag(col_var)) in the thesis's in x out layout,
    # drawn by Pyro-bnn's MatrixNormal (Eq. 34), then b = x W; the local reparameterization
    # draws b directly.  Both give the same mean and variance per example and output.
    torch.manual_seed(0)
    loc, row_lv, col_lv = _random_matrix_normal()
    x = torch.randn(5, 4)
    fn = LocalReparameterizedMatrixNormal(loc, row_lv, col_lv)
    weight = fn.rsample()
    assert isinstance(weight, MatrixNormalWeight)
    n = 40000
    local = F.linear(x.repeat(n, 1), weight).reshape(n, 5, 3)
    thesis = MatrixNormal(loc.T, row_scale=(0.5 * row_lv).exp(), col_scale=(0.5 * col_lv).exp())
    space = x @ thesis.sample((n,))
    for a, b in ((local.mean(0), space.mean(0)), (local.var(0), space.var(0))):
        assert torch.allclose(a, b, rtol=0.05, atol=0.03)
    expected_var = (x.square() @ row_lv.exp())[:, None] * col_lv.exp()
    assert torch.allclose(local.var(0), expected_var, rtol=0.05)


def test_convolution_moments_match_weight_space_sampling():
    torch.manual_seed(1)
    loc, row_lv, col_lv = _random_matrix_normal(out=2, rows=(3, 2, 2))
    x = torch.randn(1, 3, 4, 4)
    weight = LocalReparameterizedMatrixNormal(loc, row_lv, col_lv).rsample()
    n = 20000
    local = F.conv2d(x.expand(n, -1, -1, -1), weight)
    variance = (col_lv[:, None, None, None] + row_lv).exp()
    draws = loc + variance.sqrt() * torch.randn(n, *loc.shape)
    space = torch.stack([F.conv2d(x, w) for w in draws[:4000]]).squeeze(1)
    assert torch.allclose(local.mean(0), space.mean(0), atol=0.1)
    assert torch.allclose(local.var(0), F.conv2d(x.square(), variance)[0], rtol=0.06)
    assert torch.allclose(space.var(0), F.conv2d(x.square(), variance)[0], rtol=0.12)


def test_kl_against_the_standard_normal_prior_is_the_thesis_eq_35():
    loc, row_lv, col_lv = _random_matrix_normal(out=3, rows=(5,))
    fn = LocalReparameterizedMatrixNormal(loc, row_lv, col_lv)
    prior = dist.Normal(torch.zeros(3, 5), torch.ones(3, 5))
    ours = kl_divergence(fn, prior).sum()
    r, c = 5, 3  # rows are the input units, columns the outputs
    row_var, col_var = row_lv.exp(), col_lv.exp()
    eq35 = 0.5 * (
        row_var.sum() * col_var.sum()
        + loc.square().sum()
        - r * c
        - c * row_lv.sum()
        - r * col_lv.sum()
    )
    assert torch.allclose(ours, eq35, rtol=1e-5)
    # The registered KL of the dense MatrixNormal against an iid Normal prior agrees.
    dense = MatrixNormal(loc.T, row_scale=(0.5 * row_lv).exp(), col_scale=(0.5 * col_lv).exp())
    thesis_prior = dist.Normal(torch.zeros(5, 3), torch.ones(5, 3)).to_event(2)
    assert torch.allclose(kl_divergence(dense, thesis_prior), eq35, rtol=1e-5)


def _model(num_data=32):
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    return BayesianNetwork(net, CategoricalLikelihood(num_data, 4), prior=normal_prior(1.0))


def test_parameters_shapes_and_initial_variance():
    pyro.clear_param_store()
    model = _model()
    guide = AutoSiteGuide(
        model, families={"net.*.weight": "matrix_normal"}, pretrained=model.initial_values
    )
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 4, (8,))
    guide(x, y)
    params = {n.removesuffix("_unconstrained"): p for n, p in guide.named_parameters()}
    fc = "params.net.3.weight"
    assert params[f"{fc}.row_log_variance"].shape == (48,)
    assert params[f"{fc}.col_log_variance"].shape == (4,)
    assert params["params.net.0.weight.row_log_variance"].shape == (1, 3, 3)
    assert params["params.net.0.weight.col_log_variance"].shape == (3,)
    fn = guide.get_posterior("net.3.weight")
    assert torch.allclose(fn.variance, torch.full((4, 48), math.exp(-9.0)))
    assert torch.equal(guide.median()["net.3.weight"], model.initial_values["net.3.weight"])
    assert guide.log_alpha()["net.3.weight"].shape == (4, 48)
    # r c + r + c parameters per layer, instead of the mean field's 2 r c.
    assert sum(p.numel() for n, p in params.items() if n.startswith(fc)) == 4 * 48 + 48 + 4


@pytest.mark.parametrize("cap", [0.1, 3.0])
def test_standard_deviation_cap_bounds_every_entry(cap):
    pyro.clear_param_store()
    model = _model()
    guide = AutoSiteGuide(model, families={"net.*.weight": "matrix_normal"}, max_scale=cap)
    guide(torch.randn(2, 1, 6, 6), torch.zeros(2, dtype=torch.long))
    with torch.no_grad():
        guide.params.net.get_submodule("3.weight").row_log_variance_unconstrained.fill_(3.0)
        guide.params.net.get_submodule("3.weight").col_log_variance_unconstrained.fill_(3.0)
    variance = guide.get_posterior("net.3.weight").variance
    assert variance.max() <= cap**2 * (1 + 1e-5)
    assert variance.max() >= cap**2 * (1 - 1e-5)  # the cap binds where both sides are large


def test_drop_in_training_lowers_the_loss():
    pyro.clear_param_store()
    torch.manual_seed(0)
    model = _model(num_data=64)
    guide = AutoSiteGuide(model, families={"net.*.weight": "matrix_normal"})
    x = torch.randn(64, 1, 6, 6)
    y = (x.mean((1, 2, 3)) > 0).long()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), pyro.infer.Trace_ELBO())
    first = sum(svi.step(x, y) for _ in range(5))
    for _ in range(60):
        svi.step(x, y)
    last = sum(svi.step(x, y) for _ in range(5))
    assert last < first


def test_family_refuses_sites_it_cannot_represent():
    pyro.clear_param_store()
    model = BayesianNetwork(
        nn.Linear(3, 2), CategoricalLikelihood(4, 2), prior=normal_prior(1.0), include_bias=True
    )
    guide = AutoSiteGuide(model, families={"net.bias": "matrix_normal"})
    with pytest.raises(ValueError, match="'net.bias'.*matrix_normal.*shape \\(2,\\)"):
        guide(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(
    "row, col, match",
    [((3,), (3,), "row log-variances of shape \\(4,\\)"), ((4,), (2,), "column log-variances")],
)
def test_distribution_refuses_mismatched_shapes(row, col, match):
    with pytest.raises(ValueError, match=match):
        LocalReparameterizedMatrixNormal(torch.zeros(3, 4), torch.zeros(row), torch.zeros(col))


def test_family_refuses_a_non_finite_initial_variance():
    with pytest.raises(ValueError, match="init_log_variance must be finite"):
        MatrixNormalFamily(float("nan"))


# ------------------------------------------------------------------------------- pseudo-data


def _pseudo(points=2, inputs=5, outputs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(outputs, inputs, generator=g, dtype=torch.double)
    row_var = torch.rand(inputs, generator=g, dtype=torch.double) + 0.2
    col_var = torch.rand(outputs, generator=g, dtype=torch.double) + 0.2
    a = torch.randn(points, inputs, generator=g, dtype=torch.double)
    b = torch.randn(points, outputs, generator=g, dtype=torch.double)
    return loc, row_var, col_var, a, b


def _dense_conditional(x, loc, row_var, col_var, a, b):
    """Mean and variance of x @ w_j for every output j, conditioning each column w_j ~
    N(M_j, c_j diag(r)) on b_j = A w_j + d_j, d_j ~ N(0, jitter c_j I), by dense algebra."""
    from pyro_bnn.ops.conditioned_matrix_normal_weight import RELATIVE_JITTER

    u = torch.diag(row_var)
    kernel = a @ u @ a.T
    jitter = RELATIVE_JITTER * kernel.diagonal().mean()
    means, variances = [], []
    for j in range(loc.shape[0]):
        prior_cov = col_var[j] * u
        gain = (
            prior_cov @ a.T @ torch.linalg.inv(col_var[j] * (kernel + jitter * torch.eye(len(a))))
        )
        mean = loc[j] + gain @ (b[:, j] - a @ loc[j])
        cov = prior_cov - gain @ a @ prior_cov
        means.append(x @ mean)
        variances.append(((x @ cov) * x).sum(-1))
    return torch.stack(means, -1), torch.stack(variances, -1)


def test_pseudo_data_local_reparameterization_is_the_gaussian_conditional():
    from pyro_bnn.ops import conditioned_matrix_normal_linear

    loc, row_var, col_var, a, b = _pseudo()
    x = torch.randn(4, 5, dtype=torch.double)
    mean, variance = _dense_conditional(x, loc, row_var, col_var, a, b)
    zero = conditioned_matrix_normal_linear(x, loc, row_var, col_var, a, b, noise=torch.zeros(4, 3))
    one = conditioned_matrix_normal_linear(x, loc, row_var, col_var, a, b, noise=torch.ones(4, 3))
    assert torch.allclose(zero.double(), mean, atol=1e-8)
    assert torch.allclose((one - zero).square().double(), variance, rtol=1e-6, atol=1e-10)


def test_pseudo_data_weight_draws_follow_the_conditional():
    from pyro_bnn.ops import ConditionedMatrixNormalWeight

    torch.manual_seed(0)
    loc, row_var, col_var, a, b = _pseudo()
    x = torch.randn(2, 5, dtype=torch.double)
    mean, variance = _dense_conditional(x, loc, row_var, col_var, a, b)
    fn = LocalReparameterizedMatrixNormal(loc, row_var.log(), col_var.log(), a, b)
    with pyro_bnn_local_reparameterization(False):
        draws = fn.expand((20000, 3, 5)).rsample()  # Matheron's rule, vectorized
    outputs = draws @ x.T  # (S, out, examples)
    assert torch.allclose(outputs.mean(0).T, mean, atol=0.03)
    assert torch.allclose(outputs.var(0).T, variance, rtol=0.06, atol=1e-3)
    weight = fn.rsample()
    assert isinstance(weight, ConditionedMatrixNormalWeight)
    assert torch.allclose(weight.rsample() @ a.T, b.T, atol=0.05)  # it passes the pseudo-data


def test_noisy_pseudo_data_are_redrawn_for_every_weight_of_a_sample_plate():
    # Tiny column variances make each draw the conditional mean given its perturbed pseudo-data,
    # so the draws' spread is the pseudo-data noise's: one perturbation shared by the whole
    # plate would leave none.  Reference: the conditional means of independently perturbed
    # pseudo-data.
    from pyro_bnn.ops.conditioned_matrix_normal_weight import conditioned_mean

    torch.manual_seed(0)
    loc, row_var, _, a, b = _pseudo()
    col_var = torch.full((3,), 1e-12, dtype=torch.double)
    log_alpha = (torch.full_like(a, math.log(0.04)), torch.full_like(b, math.log(0.04)))
    fn = LocalReparameterizedMatrixNormal(loc, row_var.log(), col_var.log(), a, b, log_alpha)
    with pyro_bnn_local_reparameterization(False):
        draws = fn.expand((20000, 3, 5)).rsample()
    noisy_a = a * (1 + 0.2 * torch.randn(20000, *a.shape, dtype=torch.double))
    noisy_b = b * (1 + 0.2 * torch.randn(20000, *b.shape, dtype=torch.double))
    reference = conditioned_mean(loc, row_var, noisy_a, noisy_b)
    assert torch.allclose(draws.mean(0), reference.mean(0), atol=0.02)
    assert torch.allclose(draws.std(0), reference.std(0), rtol=0.1, atol=1e-3)
    assert draws.std(0).mean() > 0.05  # the noise is visible at this size


def test_pseudo_data_noise_without_pseudo_data_is_refused():
    loc, row_var, col_var, a, _ = _pseudo()
    with pytest.raises(ValueError, match="pseudo_log_alpha perturbs pseudo-data"):
        LocalReparameterizedMatrixNormal(loc, row_var.log(), col_var.log(), pseudo_log_alpha=(a, a))


def test_posterior_samples_of_a_pseudo_data_guide_are_independent_draws():
    # What predict averages over: the draws of one vectorized guide run spread as much as
    # draws of separate guide runs (each perturbing the pseudo-data once).
    from pyro_bnn.infer import posterior_samples
    from pyro_bnn.models import GaussianLikelihood

    pyro.clear_param_store()
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
    model = BayesianNetwork(net, GaussianLikelihood(8), prior=normal_prior(1.0))
    family = MatrixNormalFamily(-30.0, pseudo_data=2, pseudo_dropout_bound=0.2)
    guide = AutoSiteGuide(model, families={"net.*.weight": family})
    guide(x)
    parameters = dict(guide.named_parameters())
    with torch.no_grad():
        for name in ("pseudo_inputs", "pseudo_outputs"):
            value = parameters[f"params.net.0.weight.{name}_unconstrained"]
            value.copy_(torch.randn_like(value))
    plate = posterior_samples(model, guide, 400, x)["net.0.weight"]
    separate = torch.cat(
        [posterior_samples(model, guide, 1, x)["net.0.weight"] for _ in range(400)]
    )
    ratio = plate.std(0).mean() / separate.std(0).mean()
    assert 0.8 < ratio < 1.25, ratio


def test_pseudo_data_family_trains_and_adds_its_kl():
    from pyro_bnn import predict
    from pyro_bnn.models import GaussianLikelihood

    pyro.clear_param_store()
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    y = x[:, 0] + 0.1 * torch.randn(32)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
    model = BayesianNetwork(net, GaussianLikelihood(32), prior=normal_prior(1.0))
    family = MatrixNormalFamily(pseudo_data=2, pseudo_dropout_bound=0.05)
    guide = AutoSiteGuide(model, families={"net.*.weight": family})
    trace = pyro.poutine.trace(guide).get_trace(x, y)
    kl = trace.nodes["net.0.weight.pseudo_data"]["fn"].log_factor  # log q - log p: the KL
    assert kl > 0 and "net.2.weight.pseudo_data" in trace.nodes
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO())
    for _ in range(20):
        svi.step(x, y)
    assert predict(model, guide, x[:3], num_samples=4).mean.shape == (3,)
    assert guide.median()["net.0.weight"].shape == (6, 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pseudo_data": -1}, "pseudo_data must be a non-negative integer"),
        ({"pseudo_data": 2, "pseudo_dropout_bound": 1.0}, "pseudo_dropout_bound"),
    ],
)
def test_bad_pseudo_data_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MatrixNormalFamily(**kwargs)


@pytest.mark.parametrize("points, match", [(2, "linear layers only"), (48, "too many")])
def test_pseudo_data_are_refused_where_they_cannot_condition(points, match):
    pyro.clear_param_store()
    model = _model()
    family = MatrixNormalFamily(pseudo_data=points)
    site = "net.0.weight" if match == "linear layers only" else "net.3.weight"
    guide = AutoSiteGuide(model, families={site: family})
    with pytest.raises(ValueError, match=match):
        guide(torch.randn(2, 1, 6, 6), torch.zeros(2, dtype=torch.long))
