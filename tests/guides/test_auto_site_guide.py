"""AutoSiteGuide: its choice of family per site, their initialization, bad input, and training
with hierarchical (group horseshoe), gate (hard concrete) and point-mass (delta) sites."""

import math
import re
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from torch.distributions import kl_divergence
from torch.distributions.transforms import SigmoidTransform

from pyro_bnn.distributions import HardConcrete, SpikeAndSlab
from pyro_bnn.distributions.horseshoe import group_horseshoe
from pyro_bnn.guides import (
    DEFAULT_INIT_LOG_VARIANCE,
    AutoMeanFieldNormal,
    AutoSiteGuide,
    DeltaFamily,
    GuideFamilyWarning,
    HardConcreteFamily,
    LocalReparameterizedNormal,
    NormalFamily,
)
from pyro_bnn.infer import TraceKL_ELBO
from pyro_bnn.ops import GaussianWeight

SITES = ("gate", "prior_scale", "fc.weight", "fc.bias", "noise")


def mixed_model(x, y=None):
    """One site of each kind: a hard-concrete gate, a Gamma scale, a real weight and bias, and
    a half-Cauchy noise scale."""
    in_features = x.shape[-1]
    gate = pyro.sample("gate", HardConcrete(torch.zeros(in_features)).to_event(1))
    prior_scale = pyro.sample("prior_scale", dist.Gamma(2.0, 2.0))
    weight = pyro.sample(
        "fc.weight", dist.Normal(0.0, prior_scale).expand([2, in_features]).to_event(2)
    )
    bias = pyro.sample("fc.bias", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    noise = pyro.sample("noise", dist.HalfCauchy(1.0))
    mean = F.linear(x * gate, weight, bias)
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("obs", dist.Normal(mean, noise).to_event(1), obs=y)


def mixed_data(num_data=8, in_features=3):
    return torch.randn(num_data, in_features), torch.randn(num_data, 2)


def base(fn):
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    return fn


def guide_trace(guide, *args):
    return poutine.trace(guide).get_trace(*args)


def assert_nothing_created(guide):
    assert len(list(guide.parameters())) == 0
    assert not [name for name in pyro.get_param_store() if name.startswith(guide._pyro_name)]


# ------------------------------------------------------------------------------ family selection


def test_default_families():
    guide = AutoSiteGuide(mixed_model)
    x, y = mixed_data()
    trace = guide_trace(guide, x, y)

    assert type(guide.family("gate")) is HardConcreteFamily
    for name in ("prior_scale", "fc.weight", "fc.bias", "noise"):
        assert type(guide.family(name)) is NormalFamily, name
    assert type(base(trace.nodes["gate"]["fn"])) is HardConcrete
    assert trace.nodes["gate"]["fn"].event_shape == (3,)
    for name in ("fc.weight", "fc.bias"):
        assert type(base(trace.nodes[name]["fn"])) is LocalReparameterizedNormal, name
        assert isinstance(trace.nodes[name]["value"], GaussianWeight), name
    # Positive sites (Gamma's support is non-negative, HalfCauchy's positive) get a LogNormal,
    # for which the KL against the Gamma prior is registered.
    for name in ("prior_scale", "noise"):
        assert type(base(trace.nodes[name]["fn"])) is dist.LogNormal, name
    assert torch.isfinite(kl_divergence(trace.nodes["prior_scale"]["fn"], dist.Gamma(2.0, 2.0)))
    # The gate's guide uses the prior's temperature and stretch, so the registered KL applies.
    gate = base(trace.nodes["gate"]["fn"])
    assert torch.isfinite(kl_divergence(gate, HardConcrete(torch.zeros(3)))).all()


def test_select_by_glob():
    guide = AutoSiteGuide(mixed_model, families={"fc.*": "delta"})
    x, y = mixed_data()
    trace = guide_trace(guide, x, y)
    for name in ("fc.weight", "fc.bias"):
        assert type(guide.family(name)) is DeltaFamily, name
        assert type(base(trace.nodes[name]["fn"])) is dist.Delta, name
        # Its sample is the point itself, an ordinary tensor.
        assert type(trace.nodes[name]["value"]) is torch.Tensor, name
        assert torch.equal(trace.nodes[name]["value"], guide.median()[name])
    assert type(guide.family("gate")) is HardConcreteFamily
    assert type(guide.family("noise")) is NormalFamily
    # The glob is on the whole name: "fc.*" does not select "noise" or "gate".
    assert type(base(trace.nodes["noise"]["fn"])) is dist.LogNormal


@pytest.mark.parametrize(
    "prior_type, selected",
    [
        (dist.HalfCauchy, {"noise"}),
        (dist.Gamma, {"prior_scale"}),
        (dist.Normal, {"fc.weight", "fc.bias"}),
        (HardConcrete, {"gate"}),
    ],
)
def test_select_by_prior_type(prior_type, selected):
    # Matched on the prior with its Independent wrapper removed.
    guide = AutoSiteGuide(mixed_model, families={prior_type: "delta"})
    trace = guide_trace(guide, *mixed_data())
    for name in SITES:
        chosen = type(guide.family(name))
        assert (chosen is DeltaFamily) == (name in selected), name
        assert (type(base(trace.nodes[name]["fn"])) is dist.Delta) == (name in selected), name


def test_normal_family_on_a_gate():
    # Asked for explicitly, the Normal family covers the unit interval through a sigmoid.
    guide = AutoSiteGuide(mixed_model, families={HardConcrete: "normal"})
    with pytest.warns(GuideFamilyWarning, match="site 'gate' has a HardConcrete prior"):
        trace = guide_trace(guide, *mixed_data())
    fn = base(trace.nodes["gate"]["fn"])
    assert type(fn) is dist.TransformedDistribution
    assert [type(t) for t in fn.transforms] == [SigmoidTransform]
    value = trace.nodes["gate"]["value"]
    assert ((value > 0) & (value < 1)).all()
    torch.testing.assert_close(guide.median()["gate"], torch.full((3,), 0.5))


def test_select_by_predicate():
    calls = []

    def is_matrix(name, site):
        calls.append((name, site["type"], type(site["fn"])))
        return site["value"].dim() == 2

    guide = AutoSiteGuide(mixed_model, families={is_matrix: "delta"})
    trace = guide_trace(guide, *mixed_data())
    assert type(guide.family("fc.weight")) is DeltaFamily
    assert type(base(trace.nodes["fc.weight"]["fn"])) is dist.Delta
    for name in ("gate", "prior_scale", "fc.bias", "noise"):
        assert type(guide.family(name)) is not DeltaFamily, name
    # It is asked about every latent site (not the observed one) with the model's trace site.
    assert {name for name, _, _ in calls} == set(SITES)
    assert all(kind == "sample" for _, kind, _ in calls)
    assert dict((name, fn) for name, _, fn in calls)["fc.weight"] is dist.Independent


def test_first_matching_entry_wins():
    # Both entries select "fc.weight"; the first wins there, the second takes "fc.bias".
    families = {"fc.weight": "normal", "fc.*": "delta"}
    guide = AutoSiteGuide(mixed_model, families=families)
    trace = guide_trace(guide, *mixed_data())
    assert type(guide.family("fc.weight")) is NormalFamily
    assert type(base(trace.nodes["fc.weight"]["fn"])) is LocalReparameterizedNormal
    assert type(guide.family("fc.bias")) is DeltaFamily
    assert type(base(trace.nodes["fc.bias"]["fn"])) is dist.Delta

    # Mixed selector kinds, in the other order.
    pyro.clear_param_store()
    families = {lambda name, site: name == "fc.bias": "normal", dist.Normal: "delta"}
    guide = AutoSiteGuide(mixed_model, families=families)
    guide(*mixed_data())
    assert type(guide.family("fc.bias")) is NormalFamily
    assert type(guide.family("fc.weight")) is DeltaFamily


def test_a_selector_shadowed_everywhere_is_an_error():
    # "fc.weight" selects a site, but an earlier entry takes it: the entry does nothing, and the
    # error says why instead of claiming that it matches no site.
    guide = AutoSiteGuide(mixed_model, families={"fc.*": "normal", "fc.weight": "delta"})
    with pytest.raises(ValueError, match=r"'fc.weight' \(for 'delta'\) selects no site") as error:
        guide(*mixed_data())
    assert "'fc.weight' by 'fc.*'" in str(error.value)
    assert "'fc.bias'" not in str(error.value)
    assert_nothing_created(guide)


def test_family_instance():
    family = HardConcreteFamily(init_log_alpha=-1.5)
    guide = AutoSiteGuide(mixed_model, families={"gate": family})
    guide(*mixed_data())
    assert guide.family("gate") is family
    assert (guide.params.gate.log_alpha == -1.5).all()


def test_median_per_family():
    guide = AutoSiteGuide(mixed_model, families={"fc.weight": "delta", "noise": "delta"})
    guide(*mixed_data())
    params = guide.params
    log_alpha = torch.tensor([-10.0, 0.0, 10.0])
    params.gate.log_alpha_unconstrained.data.copy_(log_alpha)
    params.prior_scale.loc_unconstrained.data.fill_(math.log(2.5))
    bias = torch.tensor([0.25, -0.75])
    params.fc.bias.loc_unconstrained.data.copy_(bias)
    weight = torch.arange(6.0).reshape(2, 3)
    params.fc.weight.value_unconstrained.data.copy_(weight)
    # The positive point mass is stored unconstrained.
    params.noise.value_unconstrained.data.fill_(math.log(0.3))

    median = guide.median()
    assert set(median) == set(SITES)
    assert all(not value.requires_grad for value in median.values())
    # Hard concrete: the test-time gate min(1, max(0, sigmoid(log alpha) (r - l) + l)).
    expected_gate = (torch.sigmoid(log_alpha) * 1.2 - 0.1).clamp(0, 1)
    torch.testing.assert_close(median["gate"], expected_gate)
    assert median["gate"][0] == 0 and median["gate"][2] == 1
    torch.testing.assert_close(median["gate"][1], torch.tensor(0.5))
    # Normal: the mean pushed through the bijection (the log-normal's median exp(loc)).
    torch.testing.assert_close(median["prior_scale"], torch.tensor(2.5))
    torch.testing.assert_close(median["fc.bias"], bias)
    # Delta: the value.
    torch.testing.assert_close(median["fc.weight"], weight)
    torch.testing.assert_close(median["noise"], torch.tensor(0.3))


# ----------------------------------------------------------------------------- initialization


def test_default_initialization_per_family():
    in_features = 50
    x, y = mixed_data(in_features=in_features)
    bound = 1 / math.sqrt(in_features)

    guide = AutoSiteGuide(mixed_model, families={"fc.bias": "delta", "noise": "delta"})
    guide(x, y)
    params = guide.params
    # Normal: the mean starts at torch's layer initialization U(-1/sqrt(fan_in), ...), with the
    # initial log-variance.
    weight = params.fc.weight.loc.detach()
    assert weight.abs().max() <= bound and weight.abs().max() > 0.8 * bound
    assert (params.fc.weight.log_variance == DEFAULT_INIT_LOG_VARIANCE).all()
    # A positive site starts at the feasible point 1 (log-normal loc 0).
    assert params.prior_scale.loc.item() == 0.0
    assert (params.prior_scale.log_variance == DEFAULT_INIT_LOG_VARIANCE).all()
    # Delta: the point starts at the initial value, the bias from its weight's fan-in.
    bias = params.fc.bias.value.detach()
    assert bias.abs().max() <= bound and bias.std() > 0
    assert params.noise.value.item() == 1.0
    # Hard concrete: open gates.
    gate = guide.get_posterior("gate")
    assert (gate.prob_nonzero > 0.95).all()
    assert (guide.median()["gate"] == 1).all()
    for name, value in guide.named_parameters():
        assert value.requires_grad, name

    pyro.clear_param_store()
    init_log_variance = -4.0
    guide = AutoSiteGuide(
        mixed_model, families={"fc.weight": "delta"}, init_log_variance=init_log_variance
    )
    guide(x, y)
    weight = guide.params.fc.weight.value.detach()
    assert weight.abs().max() <= bound and weight.abs().max() > 0.8 * bound
    assert (guide.params.fc.bias.log_variance == init_log_variance).all()
    assert guide.params.noise.loc.item() == 0.0
    torch.testing.assert_close(guide.median()["noise"], torch.tensor(1.0))


def test_pretrained_initialization_per_family():
    weight, bias = torch.randn(2, 3), torch.randn(2)
    pretrained = {
        "fc.weight": weight,
        "fc.bias": bias,
        "noise": torch.tensor(0.3),
        "gate": torch.zeros(3),
    }
    guide = AutoSiteGuide(mixed_model, families={"fc.weight": "delta"}, pretrained=pretrained)
    guide(*mixed_data())
    params = guide.params
    assert torch.equal(params.fc.weight.value.detach(), weight)
    assert params.fc.weight.value_unconstrained.data_ptr() != weight.data_ptr()
    assert torch.equal(params.fc.bias.loc.detach(), bias)
    torch.testing.assert_close(params.noise.loc.detach(), torch.tensor(math.log(0.3)))
    # Gates start open whatever the initial value.
    assert (guide.get_posterior("gate").prob_nonzero > 0.95).all()
    # Sites pretrained lacks use the default.
    assert params.prior_scale.loc.item() == 0.0


# ---------------------------------------------------------------------------------- bad input


def test_hard_concrete_family_on_a_real_site():
    guide = AutoSiteGuide(mixed_model, families={"fc.weight": "hard_concrete"})
    assert_nothing_created(guide)  # checked when the guide first sees the model
    with pytest.raises(ValueError, match=r"site 'fc.weight' the 'hard_concrete' family.*\[0, 1\]"):
        guide(*mixed_data())
    assert_nothing_created(guide)
    # Calling again gives the same error, not a half-built guide.
    with pytest.raises(ValueError, match="site 'fc.weight' the 'hard_concrete' family"):
        guide(*mixed_data())
    assert_nothing_created(guide)


def test_selector_matching_no_site():
    guide = AutoSiteGuide(mixed_model, families={"fc.wieght": "delta"})
    with pytest.raises(ValueError, match="'fc.wieght'.*matches no latent site") as error:
        guide(*mixed_data())
    for name in SITES:
        assert repr(name) in str(error.value)
    assert "'obs'" not in str(error.value)
    assert_nothing_created(guide)

    guide = AutoSiteGuide(mixed_model, families={dist.Beta: "delta"})
    with pytest.raises(ValueError, match="Beta.*matches no latent site"):
        guide(*mixed_data())
    assert_nothing_created(guide)


def test_unknown_family_name():
    with pytest.raises(ValueError, match=r"unknown guide family 'gaussian'.*'delta'.*'normal'"):
        AutoSiteGuide(mixed_model, families={"fc.weight": "gaussian"})
    with pytest.raises(ValueError, match="unknown guide family"):
        AutoSiteGuide(mixed_model, families={"fc.weight": NormalFamily})  # a class
    assert len(pyro.get_param_store()) == 0


@pytest.mark.parametrize("selector", [3, None, ("fc.weight",), b"fc.weight"])
def test_selector_of_a_wrong_type(selector):
    with pytest.raises(TypeError, match=f"family selector.*got {re.escape(repr(selector))}"):
        AutoSiteGuide(mixed_model, families={selector: "delta"})
    assert len(pyro.get_param_store()) == 0


def test_stale_param_store_entry():
    AutoSiteGuide(mixed_model)(*mixed_data(in_features=3))
    store = pyro.get_param_store()
    stale = {name: value.detach().clone() for name, value in store.items()}

    # Another model with the same site names and a wider layer.
    guide = AutoSiteGuide(mixed_model)
    with pytest.raises(ValueError, match=r"site 'gate' needs \(4,\).*pyro\.clear_param_store\(\)"):
        guide(*mixed_data(in_features=4))
    assert len(list(guide.parameters())) == 0
    # The store is as it was: nothing added, nothing overwritten.
    assert set(store.keys()) == set(stale)
    for name, value in store.items():
        assert torch.equal(value, stale[name]), name

    pyro.clear_param_store()
    guide(*mixed_data(in_features=4))
    assert guide.params.fc.weight.loc.shape == (2, 4)


# -------------------------------------------------------------------------------- horseshoe


class HorseshoeRegression(PyroModule):
    """``y ~ N(x W^T, 0.5^2)`` with a group horseshoe on the input neurons of ``W``."""

    def __init__(self, in_features, centered, decomposed, out_features=1):
        super().__init__()
        self.shape = (out_features, in_features)
        self.centered = centered
        self.decomposed = decomposed
        self.seen = []

    def forward(self, x, y=None):
        weight = group_horseshoe(
            "fc.weight",
            self.shape,
            group_dim=-1,
            global_scale=1.0,
            centered=self.centered,
            decomposed=self.decomposed,
        )
        weight_type = type(weight)
        out = F.linear(x, weight)
        self.seen.append((weight_type, type(out)))
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal(out, 0.5).to_event(1), obs=y)


def horseshoe_data(num_data=100, in_features=6):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(num_data, in_features, generator=generator)
    true_weight = torch.zeros(in_features)
    true_weight[:2] = torch.tensor([2.0, -1.5])
    y = x @ true_weight + 0.5 * torch.randn(num_data, generator=generator)
    return x, y.unsqueeze(-1)


@pytest.mark.parametrize(
    "centered, decomposed, elbo",
    [
        (True, False, TraceKL_ELBO),
        (True, True, TraceKL_ELBO),
        (False, False, TraceKL_ELBO),
        (False, True, TraceKL_ELBO),
        (True, False, Trace_ELBO),
    ],
)
def test_group_horseshoe(centered, decomposed, elbo):
    x, y = horseshoe_data()
    model = HorseshoeRegression(x.shape[-1], centered, decomposed)
    guide = AutoSiteGuide(model)
    trace = guide_trace(guide, x, y)

    scale_sites = ("gamma", "inv_gamma") if decomposed else ("scale",)
    scale_names = [f"fc.weight.{level}.{s}" for level in ("global", "group") for s in scale_sites]
    weight_name = "fc.weight" if centered else "fc.weight.standardized"
    assert set(guide.median()) == {weight_name, *scale_names}
    assert type(base(trace.nodes[weight_name]["fn"])) is LocalReparameterizedNormal
    for name in scale_names:
        assert type(base(trace.nodes[name]["fn"])) is dist.LogNormal, name

    # The nested names coexist: the weight's own parameters and its scales' under it.
    parameters = dict(guide.named_parameters())
    assert f"params.{weight_name}.loc_unconstrained" in parameters
    assert f"params.fc.weight.global.{scale_sites[0]}.loc_unconstrained" in parameters
    assert f"params.fc.weight.group.{scale_sites[0]}.log_variance_unconstrained" in parameters
    assert guide.params.get_submodule(weight_name).loc.shape == (1, 6)
    assert guide.params.get_submodule(f"fc.weight.group.{scale_sites[0]}").loc.shape == (6,)
    store = pyro.get_param_store()
    assert f"AutoSiteGuide.params.{weight_name}.loc" in store
    assert f"AutoSiteGuide.params.fc.weight.global.{scale_sites[0]}.loc" in store

    model.seen.clear()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo())
    losses = [svi.step(x, y) for _ in range(200)]
    assert all(math.isfinite(loss) for loss in losses)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first / 3, (first, last)

    # Local reparameterization survived the prior, centred or not: the layer got a Gaussian
    # weight (for the non-centred form, standardized * scale) and gave an ordinary tensor.
    assert len(model.seen) == 200
    for weight_type, out_type in model.seen:
        assert weight_type is GaussianWeight
        assert out_type is torch.Tensor

    # It learned the two relevant inputs.
    median = guide.median()
    if centered:
        weight = median["fc.weight"]
    else:
        weight = (
            median["fc.weight.standardized"]
            * group_scale(median, "group", decomposed)
            * group_scale(median, "global", decomposed)
        )
    torch.testing.assert_close(weight[0, :2], torch.tensor([2.0, -1.5]), atol=0.3, rtol=0)


def group_scale(median, level, decomposed):
    if decomposed:
        return (median[f"fc.weight.{level}.gamma"] * median[f"fc.weight.{level}.inv_gamma"]).sqrt()
    return median[f"fc.weight.{level}.scale"]


def test_mean_field_normal_on_centred_horseshoe():
    # The weight's site and its scales' nest under one name ("fc.weight", "fc.weight.global.
    # scale"); this once failed with KeyError: "attribute 'weight' already exists".
    x, y = horseshoe_data(num_data=20)
    model = HorseshoeRegression(x.shape[-1], centered=True, decomposed=False)
    guide = AutoMeanFieldNormal(model)
    guide(x, y)
    parameters = dict(guide.named_parameters())
    assert "params.fc.weight.loc_unconstrained" in parameters
    assert "params.fc.weight.global.scale.loc_unconstrained" in parameters
    assert "params.fc.weight.group.scale.loc_unconstrained" in parameters
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), TraceKL_ELBO())
    assert all(math.isfinite(svi.step(x, y)) for _ in range(5))
    assert model.seen[-1] == (GaussianWeight, torch.Tensor)


# ----------------------------------------------------------------------- gates and point masses


def gated_model(x, y=None):
    in_features = x.shape[-1]
    gate = pyro.sample("gate", HardConcrete(torch.zeros(in_features)).to_event(1))
    weight = pyro.sample("fc.weight", dist.Normal(0.0, 1.0).expand([1, in_features]).to_event(2))
    out = F.linear(x * gate, weight).squeeze(-1)
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("obs", dist.Normal(out, 0.5), obs=y)


def test_hard_concrete_gate_trains():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(100, 4, generator=generator)
    y = 2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * torch.randn(100, generator=generator)
    guide = AutoSiteGuide(gated_model)

    guide_tr = guide_trace(guide, x, y)
    model_tr = poutine.trace(poutine.replay(gated_model, trace=guide_tr)).get_trace(x, y)
    q, p = guide_tr.nodes["gate"]["fn"], model_tr.nodes["gate"]["fn"]
    assert type(base(q)) is HardConcrete and type(base(p)) is HardConcrete
    kl_gate = kl_divergence(q, p)
    assert kl_gate.shape == () and torch.isfinite(kl_gate) and kl_gate > 0
    kl_weight = kl_divergence(guide_tr.nodes["fc.weight"]["fn"], model_tr.nodes["fc.weight"]["fn"])

    # TraceKL_ELBO takes the registered KLs: its KL term is exact, the same on every call.
    elbo = TraceKL_ELBO()
    kls = []
    for _ in range(2):
        assert math.isfinite(elbo.loss(gated_model, guide, x, y))
        kls.append(elbo.last_terms["kl"])
    assert kls[0] == kls[1]
    assert kls[0] == pytest.approx((kl_gate + kl_weight).item(), rel=1e-5)

    initial_log_alpha = guide.params.gate.log_alpha.detach().clone()
    svi = SVI(gated_model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    losses = [svi.step(x, y) for _ in range(200)]
    assert all(math.isfinite(loss) for loss in losses)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first / 3, (first, last)
    assert not torch.equal(guide.params.gate.log_alpha.detach(), initial_log_alpha)
    # The relevant inputs keep open gates.
    assert (guide.median()["gate"][:2] > 0.5).all()


def test_delta_family_is_map():
    num_data = 20
    y = 0.7 + torch.randn(num_data, dtype=torch.float64)

    def model(y):
        w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("obs", dist.Normal(w, 1.0), obs=y)

    guide = AutoSiteGuide(model, families={"w": "delta"})
    guide(y)
    assert guide.params.w.value.item() == 0.0  # a real site with no layer starts at zero
    optim = pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.01 ** (1 / 500)})
    svi = SVI(model, guide, optim, TraceKL_ELBO())
    for _ in range(500):
        svi.step(y)
    mode = y.sum() / (num_data + 1)
    assert abs(guide.params.w.value.item() - mode.item()) < 1e-3
    assert abs(guide.median()["w"].item() - mode.item()) < 1e-3


def test_a_family_without_point_masses_for_a_prior_with_them_warns():
    # The mean-field guide gives the gate a logit-normal: it trains, but no gate can close.
    with pytest.warns(GuideFamilyWarning, match="'normal' family, which has none"):
        AutoMeanFieldNormal(mixed_model)(*mixed_data())

    def spike_and_slab_model(x, y=None):
        probs, zeros = torch.full((2, 3), 0.5), torch.zeros(2, 3)
        weight = pyro.sample("w", SpikeAndSlab(probs, zeros, torch.ones(2, 3)).to_event(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(x @ weight.T, 1.0).to_event(1), obs=y)

    with pytest.warns(GuideFamilyWarning, match="site 'w' has a SpikeAndSlab prior"):
        AutoSiteGuide(spike_and_slab_model, families={"w": "normal"})(*mixed_data())
    # A point mass represents it, and the default families of a spike-and-slab weight and of
    # a gate have point masses.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AutoSiteGuide(spike_and_slab_model, families={"w": "delta"})(*mixed_data())
        pyro.clear_param_store()
        AutoSiteGuide(spike_and_slab_model)(*mixed_data())
        pyro.clear_param_store()
        AutoSiteGuide(mixed_model)(*mixed_data())
