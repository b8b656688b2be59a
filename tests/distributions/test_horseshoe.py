import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence

from pyro_bnn.distributions import group_horseshoe, half_cauchy_decomposition

NUM_DRAWS = 40_000


@pytest.mark.parametrize("scale", [1e-5, 1.0, 3.0])
def test_gamma_inverse_gamma_product_is_half_cauchy(scale):
    gamma, inverse_gamma = half_cauchy_decomposition(scale)
    z = (gamma.sample((NUM_DRAWS,)) * inverse_gamma.sample((NUM_DRAWS,))).sqrt()
    assert (
        scipy.stats.kstest(z.double().numpy(), scipy.stats.halfcauchy(scale=scale).cdf).pvalue
        > 1e-3
    )


def test_decomposition_uses_rate_one_over_scale_squared():
    gamma, inverse_gamma = half_cauchy_decomposition(1e-5)
    assert gamma.concentration.item() == 0.5 and gamma.rate.item() == pytest.approx(1e10)
    assert inverse_gamma.concentration.item() == 0.5 and inverse_gamma.rate.item() == 1.0


SITES = {
    (False, True): {"w.global.scale": (), "w.group.scale": (4,), "w": (3, 4)},
    (True, True): {
        "w.global.gamma": (),
        "w.global.inv_gamma": (),
        "w.group.gamma": (4,),
        "w.group.inv_gamma": (4,),
        "w": (3, 4),
    },
    (False, False): {"w.global.scale": (), "w.group.scale": (4,), "w.standardized": (3, 4)},
}


@pytest.mark.parametrize("decomposed, centered", list(SITES), ids=str)
def test_sample_sites_of_a_linear_layer(decomposed, centered):
    trace = poutine.trace(group_horseshoe).get_trace(
        "w", (3, 4), group_dim=-1, global_scale=1.0, decomposed=decomposed, centered=centered
    )
    sites = {
        name: site["fn"].event_shape
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["infer"].get("_deterministic")
    }
    assert sites == {k: torch.Size(v) for k, v in SITES[decomposed, centered].items()}
    assert trace.nodes["w"]["value"].shape == (3, 4)


def test_groups_of_a_convolution_are_output_channels():
    trace = poutine.trace(group_horseshoe).get_trace(
        "conv", (5, 2, 3, 3), group_dim=0, global_scale=1.0
    )
    scale = trace.nodes["conv"]["fn"].base_dist.scale
    group = trace.nodes["conv.group.scale"]["value"] * trace.nodes["conv.global.scale"]["value"]
    assert torch.allclose(scale, group.reshape(5, 1, 1, 1).expand(5, 2, 3, 3))


def _weight_draws(**kwargs):
    with pyro.plate("draws", NUM_DRAWS):
        return group_horseshoe("w", (2, 3), group_dim=-1, global_scale=0.5, **kwargs)


def test_all_parameterizations_give_the_same_weight_distribution():
    # Vectorized over a plate; compare log|w| (heavy tails) by two-sample KS.
    reference = _weight_draws().abs().log()
    assert reference.shape == (NUM_DRAWS, 2, 3)
    for kwargs in (
        {"decomposed": True},
        {"centered": False},
        {"decomposed": True, "centered": False},
    ):
        other = _weight_draws(**kwargs).abs().log()
        for index in [(0, 0), (1, 2)]:
            result = scipy.stats.ks_2samp(
                reference[(slice(None),) + index].numpy(), other[(slice(None),) + index].numpy()
            )
            assert result.pvalue > 1e-3, (kwargs, index)


def test_weights_of_one_group_share_their_scale():
    # Two weights of one group (input neuron 1) carry the same scale z_1 s, so their
    # ratio is a ratio of two standard normals: standard Cauchy, whatever the scales.
    draws = _weight_draws(centered=False)
    ratio = (draws[:, 0, 1] / draws[:, 1, 1]).double().numpy()
    assert scipy.stats.kstest(ratio, scipy.stats.cauchy().cdf).pvalue > 1e-3


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"group_dim": 2}, "group_dim"),
        ({"group_dim": -1, "global_scale": 0.0}, "global_scale"),
        ({"group_dim": -1, "global_scale": -1.0, "decomposed": True}, "global_scale"),
    ],
)
def test_invalid_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        group_horseshoe("w", (3, 4), **kwargs)


def test_half_cauchy_decomposition_rejects_a_non_positive_scale():
    with pytest.raises(ValueError, match="scale"):
        half_cauchy_decomposition(0.0)


def test_decomposed_hierarchy_has_analytic_kls_for_log_normal_guides():
    # With log-normal guides on the Gamma / inverse-Gamma scales and a Normal guide on
    # the standardized weights, every site has a closed-form KL, so the prior-only
    # TraceMeanField_ELBO loss is exact: the same for any random seed.
    def model():
        group_horseshoe("w", (3, 4), group_dim=-1, decomposed=True, centered=False)

    def guide():
        for name, shape in [("global.gamma", ()), ("global.inv_gamma", ()), ("group.gamma", (4,))]:
            fn = dist.LogNormal(torch.full(shape, -1.0), torch.full(shape, 0.5))
            pyro.sample(f"w.{name}", fn.to_event(len(shape)))
        pyro.sample("w.group.inv_gamma", dist.LogNormal(torch.zeros(4), 0.3).to_event(1))
        pyro.sample("w.standardized", dist.Normal(torch.zeros(3, 4), 0.1).to_event(2))

    losses = []
    for seed in (0, 1):
        pyro.set_rng_seed(seed)
        losses.append(TraceMeanField_ELBO().loss(model, guide))
    assert losses[0] == losses[1]
    expected = (
        kl_divergence(dist.LogNormal(torch.tensor(-1.0), 0.5), dist.Gamma(0.5, 1e10))
        + kl_divergence(dist.LogNormal(torch.tensor(-1.0), 0.5), dist.InverseGamma(0.5, 1.0))
        + 4 * kl_divergence(dist.LogNormal(torch.tensor(-1.0), 0.5), dist.Gamma(0.5, 1.0))
        + 4 * kl_divergence(dist.LogNormal(torch.tensor(0.0), 0.3), dist.InverseGamma(0.5, 1.0))
        + 12 * kl_divergence(dist.Normal(0.0, 0.1), dist.Normal(0.0, 1.0))
    )
    assert losses[0] == pytest.approx(expected.item(), rel=1e-5)
