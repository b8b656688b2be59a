"""Random scales drawn per example: their algebra and the layers' moments against weight-space
sampling."""

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import kl_divergence

from pyro_bnn.distributions import ImproperLogUniform
from pyro_bnn.ops import (
    GaussianWeight,
    RandomScale,
    ScaledWeight,
    local_reparameterization,
    per_example,
    scale_groups,
)

DTYPE = torch.float64
NUM_SAMPLES = 40_000


def normal_scale(size, loc=1.0, scale=0.3):
    loc = torch.full((size,), loc, dtype=DTYPE) + 0.1 * torch.arange(size, dtype=DTYPE)
    return per_example(dist.Normal(loc, torch.full((size,), scale, dtype=DTYPE)))


def gaussian(out, inp, *kernel):
    loc = torch.randn(out, inp, *kernel, dtype=DTYPE)
    scale = 0.2 + 0.3 * torch.rand(out, inp, *kernel, dtype=DTYPE)
    return GaussianWeight(loc, scale), loc, scale


def assert_moments(samples, expected, rtol=0.05):
    """Sample mean and variance over dim 0, against those of ``expected`` (also over dim 0)."""
    torch.testing.assert_close(
        samples.mean(0), expected.mean(0), atol=0.05 * expected.std(0).max(), rtol=0
    )
    torch.testing.assert_close(samples.var(0), expected.var(0), rtol=rtol * 2, atol=1e-3)


def test_per_example_sample_is_a_random_scale_and_keeps_registered_kls():
    fn = normal_scale(4)
    assert isinstance(fn, dist.Normal)
    value = fn.rsample()
    assert isinstance(value, RandomScale) and value.shape == (4,)
    kl = kl_divergence(fn, ImproperLogUniform((4,)))
    assert kl.shape == (4,) and torch.isfinite(kl).all()
    assert not isinstance(fn.rsample((2,)), RandomScale)
    with local_reparameterization(False):
        assert not isinstance(fn.rsample(), RandomScale)


def test_other_uses_draw_once_and_reuse():
    scale = normal_scale(3).rsample()
    first = scale + 0
    torch.testing.assert_close(scale * torch.ones(3) + 0, first)  # the product stays random
    torch.testing.assert_close(scale.exp(), first.exp())


def test_gaussian_weight_times_input_scale_matches_weight_space_sampling():
    """Alg. 5 of the thesis: b = (x z) @ mu.T + sqrt((x z)^2 @ var.T) eps, z per example."""
    weight, loc, std = gaussian(3, 4)
    fn = normal_scale(4)
    scale = fn.rsample()
    product = weight * scale
    assert isinstance(product, ScaledWeight)
    assert isinstance(scale * weight, ScaledWeight)
    x = torch.randn(1, 4, dtype=DTYPE).expand(NUM_SAMPLES, 4)
    out = F.linear(x, product)
    # Weight space: one weight and one scale vector per example.
    z = fn._plain_rsample((NUM_SAMPLES,))
    w = loc + std * torch.randn(NUM_SAMPLES, 3, 4, dtype=DTYPE)
    expected = torch.einsum("ni,noi->no", x * z, w)
    assert_moments(out, expected)


def test_every_example_gets_its_own_scale():
    weight = torch.ones(1, 2, dtype=DTYPE)
    scale = per_example(dist.LogNormal(torch.zeros(2, dtype=DTYPE), torch.ones(2, dtype=DTYPE)))
    out = F.linear(torch.ones(5, 2, dtype=DTYPE), scale_groups(weight, scale.rsample(), 1))
    assert out.unique().numel() == 5


def test_output_channel_scale_of_a_convolution_matches_weight_space_sampling():
    """Alg. 6: b = (x * mu) z + sqrt((x^2 * var) z^2) eps with z per example and channel."""
    weight, loc, std = gaussian(2, 1, 2, 2)
    fn = normal_scale(2, loc=0.5)
    x = torch.randn(1, 1, 3, 3, dtype=DTYPE).expand(NUM_SAMPLES, 1, 3, 3)
    out = F.conv2d(x, scale_groups(weight, fn.rsample(), 0))
    z = fn._plain_rsample((NUM_SAMPLES,))
    w = loc + std * torch.randn(NUM_SAMPLES, *loc.shape, dtype=DTYPE)
    # Mean-field local reparameterization is exact per output position.
    expected = torch.einsum("nchw,nochw->no", x[:, :, :2, :2], w) * z
    assert_moments(out[:, :, 0, 0], expected)


def test_horseshoe_product_is_log_normal_and_shares_its_global_factor():
    """Eq. 88-91: z_i = sqrt(a_i b_i) sqrt(s_a s_b) is LN(mu, sigma^2) with the summed moments;
    within an example every group sees the same global draw."""

    def log_normal(loc, scale, size=()):
        return per_example(
            dist.LogNormal(torch.full(size, loc, dtype=DTYPE), torch.full(size, scale, dtype=DTYPE))
        )

    a, b = log_normal(0.2, 0.3, (3,)).rsample(), log_normal(-0.1, 0.4, (3,)).rsample()
    s_a, s_b = log_normal(-1.0, 0.5).rsample(), log_normal(0.3, 0.6).rsample()
    z = (a * b).sqrt() * torch.sqrt(s_a * s_b)
    assert isinstance(z, RandomScale) and z.shape == (3,)
    loc, variance = z.log_moments()
    torch.testing.assert_close(loc, torch.full((3,), 0.5 * (0.1 - 0.7), dtype=DTYPE))
    expected_var = 0.25 * (0.09 + 0.16) + 0.25 * (0.25 + 0.36)
    torch.testing.assert_close(variance, torch.full((3,), expected_var, dtype=DTYPE))
    draws = z.draw((NUM_SAMPLES,)).log()
    torch.testing.assert_close(draws.mean(0), loc, atol=0.02, rtol=0)
    torch.testing.assert_close(draws.var(0), variance, atol=0.02, rtol=0)
    covariance = torch.cov(draws.T)[0, 1]
    expected = torch.tensor(0.25 * 0.61, dtype=DTYPE)  # the global factor's log-variance
    torch.testing.assert_close(covariance, expected, atol=0.02, rtol=0)


def test_deterministic_weight_under_random_input_noise():
    weight = torch.randn(3, 4, dtype=DTYPE)
    scale = normal_scale(4).rsample()
    x = torch.randn(6, 4, dtype=DTYPE)
    bias = torch.randn(3, dtype=DTYPE)
    torch.manual_seed(1)
    out = F.linear(x, scale_groups(weight, scale, 1), bias)
    torch.manual_seed(1)
    z = scale.draw((6,))
    torch.testing.assert_close(out, F.linear(x * z, weight, bias))


def test_scale_groups_with_a_plain_scale_is_the_product():
    weight, loc, std = gaussian(3, 4)
    scale = torch.rand(3, dtype=DTYPE)
    product = scale_groups(weight, scale, 0)
    assert isinstance(product, GaussianWeight)
    torch.testing.assert_close(product.loc, loc * scale[:, None])


def test_bad_input():
    weight, _, _ = gaussian(3, 4)
    with pytest.raises(ValueError, match=r"must have shape \(4,\), got \(3,\)"):
        scale_groups(weight, normal_scale(3).rsample(), 1)
    with pytest.raises(ValueError, match="dim must be 0"):
        scale_groups(weight, normal_scale(4).rsample(), 2)
    with pytest.raises(ValueError, match=r"a random input_scale must have shape \(4,\)"):
        ScaledWeight(weight, input_scale=normal_scale(5).rsample())
    with pytest.raises(ValueError, match="no reparameterized sampler"):
        per_example(dist.Bernoulli(torch.tensor([0.5])))
    with pytest.raises(ValueError, match="at least one random factor"):
        RandomScale(())
