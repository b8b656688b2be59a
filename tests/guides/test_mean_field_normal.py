"""AutoMeanFieldNormal: Pyro's inference on top of it, its initialization and its posterior."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.nn import PyroModule, PyroSample
from torch import nn
from torch.distributions import kl_divergence

from pyro_bnn.distributions import ImproperLogUniform, LogVarianceNormal
from pyro_bnn.guides import (
    AutoMeanFieldNormal,
    LocalReparameterizedNormal,
    local_reparameterization,
    local_reparameterization_enabled,
)
from pyro_bnn.infer import TraceKL_ELBO
from pyro_bnn.ops import GaussianWeight

NUM_SE = 5.0


def f64(value):
    return torch.tensor(value, dtype=torch.float64)


class SparseRegression(PyroModule):
    """``y ~ N(x W^T + b, noise^2)`` with a log-uniform weight prior and a subsampled plate."""

    def __init__(self, in_features=3, out_features=2, weight_prior=None, subsample_size=None):
        super().__init__()
        if weight_prior is None:
            weight_prior = ImproperLogUniform((out_features, in_features)).to_event(2)
        self.subsample_size = subsample_size
        self.fc = PyroModule[nn.Linear](in_features, out_features)
        self.fc.weight = PyroSample(weight_prior)

    def forward(self, x, y=None):
        mean = self.fc(x)
        with pyro.plate("data", x.shape[0], subsample_size=self.subsample_size) as idx:
            return pyro.sample("obs", dist.Normal(mean[idx], 0.5).to_event(1), obs=y[idx])


def standard_normal(*shape):
    return dist.Normal(0.0, 1.0).expand(shape).to_event(len(shape))


class TwoLayers(PyroModule):
    """Two Bayesian layers with Normal priors and a positive noise scale."""

    def __init__(self, in_features=400, hidden=50):
        super().__init__()
        self.fc1 = PyroModule[nn.Linear](in_features, hidden)
        self.fc1.weight = PyroSample(standard_normal(hidden, in_features))
        self.fc1.bias = PyroSample(standard_normal(hidden))
        self.fc2 = PyroModule[nn.Linear](hidden, 1)
        self.fc2.weight = PyroSample(standard_normal(1, hidden))
        self.fc2.bias = PyroSample(standard_normal(1))
        self.noise = PyroSample(dist.Gamma(2.0, 2.0))

    def forward(self, x, y=None):
        mean = self.fc2(F.relu(self.fc1(x))).squeeze(-1)
        noise = self.noise
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal(mean, noise), obs=y)


def regression_data(num_data=100, in_features=3, out_features=2):
    x = torch.randn(num_data, in_features)
    y = x @ torch.randn(in_features, out_features) + 0.5 * torch.randn(num_data, out_features)
    return x, y


# ------------------------------------------------------------------------------------ inference


ELBOS = {
    "Trace_ELBO": lambda: Trace_ELBO(),
    "TraceMeanField_ELBO": lambda: TraceMeanField_ELBO(),
    "TraceKL_ELBO": lambda: TraceKL_ELBO(),
    "RenyiELBO": lambda: RenyiELBO(alpha=0.5, num_particles=2),
}


@pytest.mark.parametrize("subsample_size", [None, 10])
@pytest.mark.parametrize("elbo", list(ELBOS))
def test_svi(elbo, subsample_size):
    weight_prior = None
    if elbo == "RenyiELBO":
        # Renyi's objective needs a normalized prior.
        weight_prior = dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2)
    model = SparseRegression(weight_prior=weight_prior, subsample_size=subsample_size)
    guide = AutoMeanFieldNormal(model, init_log_variance=-4.0)
    x, y = regression_data()

    trace = poutine.trace(guide).get_trace(x, y)
    site = trace.nodes["fc.weight"]
    assert isinstance(site["fn"].base_dist, dist.Normal)
    assert isinstance(site["fn"].base_dist, LocalReparameterizedNormal)
    assert site["fn"].event_shape == (2, 3)
    assert isinstance(site["value"], GaussianWeight)

    initial = {name: value.detach().clone() for name, value in guide.named_parameters()}
    assert set(initial) == {
        "params.fc.weight.loc_unconstrained",
        "params.fc.weight.log_variance_unconstrained",
    }
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), ELBOS[elbo]())
    losses = [svi.step(x, y) for _ in range(5)]
    assert all(math.isfinite(loss) for loss in losses)
    for name, value in guide.named_parameters():
        assert not torch.equal(value, initial[name]), name


def test_positive_site_is_log_normal():
    model = TwoLayers(in_features=4, hidden=3)
    guide = AutoMeanFieldNormal(model)
    x, y = torch.randn(10, 4), torch.randn(10)
    trace = poutine.trace(guide).get_trace(x, y)
    assert isinstance(trace.nodes["noise"]["fn"], dist.LogNormal)
    assert trace.nodes["noise"]["value"] > 0
    # So the registered KL against the Gamma prior applies.
    kl = kl_divergence(trace.nodes["noise"]["fn"], dist.Gamma(2.0, 2.0))
    assert torch.isfinite(kl)
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert isinstance(trace.nodes[name]["fn"].base_dist, dist.Normal)
    # The median of the log-normal is exp(loc): the feasible starting point 1.
    median = guide.median()
    torch.testing.assert_close(median["noise"], torch.tensor(1.0))
    torch.testing.assert_close(median["fc1.weight"], guide.params.fc1.weight.loc.detach())
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), TraceKL_ELBO())
    assert all(math.isfinite(svi.step(x, y)) for _ in range(3))


def test_float64_model():
    # The guide takes its dtype from the prior's parameters.
    model = SparseRegression(weight_prior=dist.Normal(f64(0.0), 1.0).expand([2, 3]).to_event(2))
    model.double()
    x, y = regression_data()
    x, y = x.double(), y.double()
    guide = AutoMeanFieldNormal(model)
    guide(x, y)
    assert all(value.dtype == torch.float64 for value in guide.parameters())
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), TraceKL_ELBO())
    assert math.isfinite(svi.step(x, y))


class BayesianLinearRegression(PyroModule):
    def __init__(self, in_features, prior_scale, noise_scale):
        super().__init__()
        self.noise_scale = noise_scale
        self.fc = PyroModule[nn.Linear](in_features, 1, bias=False)
        self.fc.weight = PyroSample(
            dist.Normal(f64(0.0), prior_scale).expand([1, in_features]).to_event(2)
        )

    def forward(self, x, y=None):
        mean = self.fc(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal(mean, self.noise_scale), obs=y)


def test_conjugate_linear_regression():
    num_data, num_features, prior_scale, noise_scale = 200, 5, 1.0, 1.0
    num_steps, num_averaged = 1500, 300
    # Orthogonal columns with X^T X = N I: the exact posterior covariance is diagonal, so the
    # mean-field family contains it and VI must recover both mean and variances.
    q, _ = torch.linalg.qr(torch.randn(num_data, num_features, dtype=torch.float64))
    x = q * math.sqrt(num_data)
    y = x @ torch.randn(num_features, dtype=torch.float64)
    y = y + noise_scale * torch.randn(num_data, dtype=torch.float64)

    precision = x.T @ x / noise_scale**2 + torch.eye(num_features, dtype=torch.float64) / (
        prior_scale**2
    )
    covariance = torch.linalg.inv(precision)
    mean = covariance @ x.T @ y / noise_scale**2

    model = BayesianLinearRegression(num_features, prior_scale, noise_scale)
    guide = AutoMeanFieldNormal(model, init_log_variance=-4.0)
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.01 ** (1 / num_steps)})
    svi = SVI(model, guide, optim, TraceKL_ELBO())
    locs, log_variances = [], []
    for step in range(num_steps):
        svi.step(x, y)
        if step >= num_steps - num_averaged:
            locs.append(guide.params.fc.weight.loc.detach().clone())
            log_variances.append(guide.params.fc.weight.log_variance.detach().clone())
    loc = torch.stack(locs).mean(0).squeeze(0)
    variance = torch.stack(log_variances).mean(0).exp().squeeze(0)

    assert ((loc - mean).norm() / mean.norm()).item() < 0.02

    x_test = torch.randn(4, num_features, dtype=torch.float64)
    exact_latent = ((x_test @ covariance) * x_test).sum(-1)
    fitted_latent = (x_test.square() * variance).sum(-1)
    exact = exact_latent + noise_scale**2
    fitted = fitted_latent + noise_scale**2
    assert ((fitted - exact).abs() / exact).max().item() < 0.1
    # The latent function's own variance, without the noise that dominates the above.
    assert ((fitted_latent - exact_latent).abs() / exact_latent).max().item() < 0.1


# ----------------------------------------------------------------------------------- set-up


def test_default_init():
    in_features, hidden = 400, 50
    model = TwoLayers(in_features, hidden)
    guide = AutoMeanFieldNormal(model, init_log_variance=-7.0)
    guide(torch.randn(3, in_features), torch.randn(3))

    bound = 1 / math.sqrt(in_features)
    weight = guide.params.fc1.weight.loc.detach()
    bias = guide.params.fc1.bias.loc.detach()
    n = weight.numel()
    assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound
    # U(-b, b): mean 0, variance b^2 / 3, and Var(w^2) = 4 b^4 / 45.
    assert weight.mean().abs() < NUM_SE * bound / math.sqrt(3 * n)
    variance_se = math.sqrt(4 / 45 / n) * bound**2
    assert (weight.square().mean() - bound**2 / 3).abs() < NUM_SE * variance_se
    assert bias.abs().max() <= bound and bias.std() > 0
    # Both layers: the bias uses its weight's fan-in.
    assert guide.params.fc2.weight.loc.detach().abs().max() <= 1 / math.sqrt(hidden)
    assert guide.params.fc2.bias.loc.detach().abs().max() <= 1 / math.sqrt(hidden)

    for name, value in guide.params.named_parameters():
        if name.endswith("log_variance_unconstrained"):
            assert (value == -7.0).all(), name
    for name, value in guide.params.named_parameters():
        assert type(value) is nn.Parameter and value.requires_grad, name
    # The positive site starts at the feasible point 1.
    assert guide.params.noise.loc.item() == 0.0


@pytest.mark.parametrize("as_module", [True, False])
def test_pretrained(as_module):
    class Pretrained(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 3)

    pretrained = Pretrained()
    model = TwoLayers(in_features=4, hidden=3)
    source = pretrained if as_module else pretrained.state_dict()
    guide = AutoMeanFieldNormal(model, pretrained=source)
    guide(torch.randn(2, 4), torch.randn(2))
    assert torch.equal(guide.params.fc1.weight.loc.detach(), pretrained.fc1.weight.detach())
    assert torch.equal(guide.params.fc1.bias.loc.detach(), pretrained.fc1.bias.detach())
    # A copy: training the guide does not write into the pretrained network.
    assert guide.params.fc1.weight.loc.data_ptr() != pretrained.fc1.weight.data_ptr()
    # Sites the pretrained network lacks use the default.
    fc2 = guide.params.fc2.weight.loc.detach()
    assert fc2.abs().max() <= 1 / math.sqrt(3) and fc2.std() > 0


def test_init_loc_fn():
    model = TwoLayers(in_features=4, hidden=3)
    pretrained = {"fc1.weight": torch.ones(3, 4)}
    guide = AutoMeanFieldNormal(
        model, pretrained=pretrained, init_loc_fn=lambda site: torch.full_like(site["value"], 0.25)
    )
    guide(torch.randn(2, 4), torch.randn(2))
    assert (guide.params.fc1.weight.loc == 1).all()
    assert (guide.params.fc1.bias.loc == 0.25).all()
    assert (guide.params.fc2.weight.loc == 0.25).all()
    # Positive sites are stored unconstrained: log(0.25).
    torch.testing.assert_close(guide.params.noise.loc.detach(), torch.tensor(math.log(0.25)))


def test_max_scale():
    x, y = torch.randn(2, 4), torch.randn(2)

    guide = AutoMeanFieldNormal(TwoLayers(4, 3), init_log_variance=0.0, max_scale=0.1)
    guide(x, y)
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "noise"):
        scale = guide.get_posterior(name).scale
        torch.testing.assert_close(scale, torch.full_like(scale, 0.1), msg=name)
    trace = poutine.trace(guide).get_trace(x, y)
    scale = trace.nodes["fc1.weight"]["fn"].base_dist.scale
    torch.testing.assert_close(scale, torch.full_like(scale, 0.1))

    # Per prefix: a module name covers all its sites, a site name only itself.
    pyro.clear_param_store()
    caps = {"fc1": 0.1, "fc2.weight": 0.5}
    guide = AutoMeanFieldNormal(TwoLayers(4, 3), init_log_variance=0.0, max_scale=caps)
    guide(x, y)
    expected = {"fc1.weight": 0.1, "fc1.bias": 0.1, "fc2.weight": 0.5, "fc2.bias": 1.0}
    for name, scale in expected.items():
        torch.testing.assert_close(
            guide.get_posterior(name).scale,
            torch.full_like(guide.params.get_submodule(name).loc, scale),
        )

    # A cap only ever lowers the scale.  (A new guide for the same site names continues from
    # what Pyro's parameter store holds, as Pyro's own autoguides do: start afresh.)
    pyro.clear_param_store()
    guide = AutoMeanFieldNormal(TwoLayers(4, 3), init_log_variance=-9.0, max_scale=0.1)
    guide(x, y)
    torch.testing.assert_close(
        guide.get_posterior("fc1.weight").scale, torch.full((3, 4), math.exp(-4.5))
    )


def test_log_alpha():
    model = TwoLayers(in_features=4, hidden=3)
    guide = AutoMeanFieldNormal(model)
    guide(torch.randn(2, 4), torch.randn(2))
    loc = torch.tensor([[0.0, 1e-3, 0.1, 1.0], [-2.0, 10.0, 1e3, -1e-6], [0.5, -0.5, 3.0, 1e-2]])
    log_variance = torch.tensor([[-4.0, -9.0, -2.0, 0.0], [1.0, -9.0, -3.0, -20.0], [-1.0] * 4])
    guide.params.fc1.weight.loc.data.copy_(loc)
    guide.params.fc1.weight.log_variance.data.copy_(log_variance)

    log_alpha = guide.log_alpha()
    assert set(log_alpha) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    expected = (log_variance - loc.square().log()).clamp(-10.0, 10.0)
    torch.testing.assert_close(log_alpha["fc1.weight"], expected)
    # A zero mean is all noise; a huge mean is all signal.
    assert log_alpha["fc1.weight"][0, 0] == 10.0
    assert log_alpha["fc1.weight"][1, 2] == -10.0
    assert not log_alpha["fc1.weight"].requires_grad


# ------------------------------------------------------------------- local reparameterization


def test_no_leak_into_plain_layers():
    x_plain = torch.randn(5, 3)
    weight, bias = torch.randn(2, 3), torch.randn(2)
    layer = nn.Linear(3, 2)
    before = (F.linear(x_plain, weight, bias), layer(x_plain), F.linear(x_plain, weight))

    model = SparseRegression()
    guide = AutoMeanFieldNormal(model, init_log_variance=-4.0)
    x, y = regression_data()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), TraceKL_ELBO())
    for _ in range(3):
        svi.step(x, y)

    after = (F.linear(x_plain, weight, bias), layer(x_plain), F.linear(x_plain, weight))
    for expected, actual in zip(before, after, strict=True):
        assert type(actual) is torch.Tensor
        assert torch.equal(actual, expected)


def test_local_reparameterization_switch():
    model = SparseRegression()
    guide = AutoMeanFieldNormal(model, init_log_variance=0.0)
    x, y = regression_data()
    x_same = x[:1].expand(6, 3)

    assert local_reparameterization_enabled()
    assert isinstance(guide(x, y)["fc.weight"], GaussianWeight)
    out = poutine.replay(model.fc, trace=poutine.trace(guide).get_trace(x, y))(x_same)
    assert (out[1:] != out[0]).all()

    with local_reparameterization(False):
        assert not local_reparameterization_enabled()
        weight = guide(x, y)["fc.weight"]
        assert type(weight) is torch.Tensor
        assert weight.requires_grad
        # One weight sample for the whole batch: identical rows stay identical.
        out = poutine.replay(model.fc, trace=poutine.trace(guide).get_trace(x, y))(x_same)
        assert (out[1:] == out[0]).all()
        with local_reparameterization(True):
            assert isinstance(guide(x, y)["fc.weight"], GaussianWeight)
        assert not local_reparameterization_enabled()
    assert local_reparameterization_enabled()

    # Restored on error as well.
    with pytest.raises(RuntimeError, match="boom"):
        with local_reparameterization(False):
            raise RuntimeError("boom")
    assert local_reparameterization_enabled()
    assert isinstance(guide(x, y)["fc.weight"], GaussianWeight)


def test_local_reparameterization_off_in_constructor():
    model = SparseRegression()
    guide = AutoMeanFieldNormal(model, local_reparameterization=False)
    x, y = regression_data()
    trace = poutine.trace(guide).get_trace(x, y)
    fn = trace.nodes["fc.weight"]["fn"].base_dist
    # A Normal that keeps its log-variance for the KL, but samples ordinary tensors.
    assert type(fn) is LogVarianceNormal and fn.log_variance is not None
    assert type(trace.nodes["fc.weight"]["value"]) is torch.Tensor


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_init_log_variance(value):
    with pytest.raises(ValueError, match="init_log_variance"):
        AutoMeanFieldNormal(SparseRegression(), init_log_variance=value)


@pytest.mark.parametrize("max_scale", [0.0, -1.0, math.nan, {"fc": 0.0}, {"fc.weight": -0.1}])
def test_non_positive_max_scale(max_scale):
    with pytest.raises(ValueError, match="max_scale"):
        AutoMeanFieldNormal(SparseRegression(), max_scale=max_scale)


def test_posterior_before_the_model_was_seen():
    guide = AutoMeanFieldNormal(SparseRegression())
    with pytest.raises(RuntimeError, match="has not seen the model"):
        guide.median()
    with pytest.raises(RuntimeError, match="has not seen the model"):
        guide.log_alpha()


def test_local_latent_in_subsampled_plate():
    def model(x):
        with pyro.plate("data", 10, subsample_size=5):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    guide = AutoMeanFieldNormal(model)
    with pytest.raises(NotImplementedError, match="local latent variable"):
        guide(torch.randn(10))
