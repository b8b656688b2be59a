"""GaussianWeight: layers see the distribution, every other operation one cached sample."""

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyro_bnn.ops import GaussianWeight, sampled_conv2d, sampled_linear


def gaussian(*shape, requires_grad=True):
    loc = torch.randn(shape, dtype=torch.float64, requires_grad=requires_grad)
    scale = torch.empty(shape, dtype=torch.float64).uniform_(0.2, 1.0).requires_grad_(requires_grad)
    return GaussianWeight(loc, scale), loc, scale


def set_weight(module, name, value):
    delattr(module, name)
    setattr(module, name, value)


# ------------------------------------------------------------------------------------- layers


@pytest.mark.parametrize("gaussian_bias", [False, True])
def test_linear_layer_is_locally_reparameterized(gaussian_bias):
    layer = nn.Linear(4, 3).double()
    weight, weight_loc, weight_scale = gaussian(3, 4)
    set_weight(layer, "weight", weight)
    bias_mean, bias_var = layer.bias.detach(), None
    if gaussian_bias:
        bias, bias_loc, bias_scale = gaussian(3)
        set_weight(layer, "bias", bias)
        bias_mean, bias_var = bias_loc, bias_scale.square()
    x = torch.randn(1, 4, dtype=torch.float64).expand(5, 4)

    pyro.set_rng_seed(1)
    out = layer(x)
    pyro.set_rng_seed(1)
    expected = sampled_linear(x, weight_loc, weight_scale.square(), bias_mean, bias_var)

    assert type(out) is torch.Tensor
    torch.testing.assert_close(out, expected)
    # Identical input rows, different pre-activations: the noise is per example.
    assert (out[1:] != out[0]).all()
    # No weight sample was needed.
    assert weight._sample is None

    out.square().sum().backward()
    for grad in (weight_loc.grad, weight_scale.grad):
        assert grad is not None and (grad != 0).all()


@pytest.mark.parametrize("gaussian_bias", [False, True])
def test_conv2d_layer_is_locally_reparameterized(gaussian_bias):
    layer = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    weight, weight_loc, weight_scale = gaussian(3, 2, 3, 3)
    set_weight(layer, "weight", weight)
    bias_mean, bias_var = layer.bias.detach(), None
    if gaussian_bias:
        bias, bias_loc, bias_scale = gaussian(3)
        set_weight(layer, "bias", bias)
        bias_mean, bias_var = bias_loc, bias_scale.square()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64).expand(4, 2, 5, 5)

    pyro.set_rng_seed(1)
    out = layer(x)
    pyro.set_rng_seed(1)
    expected = sampled_conv2d(
        x, weight_loc, weight_scale.square(), bias_mean, bias_var, stride=2, padding=1
    )

    assert type(out) is torch.Tensor
    torch.testing.assert_close(out, expected)
    assert (out[1:] != out[0]).all()
    assert weight._sample is None

    out.square().sum().backward()
    for grad in (weight_loc.grad, weight_scale.grad):
        assert grad is not None and (grad != 0).any()


def test_gaussian_bias_only():
    # A deterministic weight and a Gaussian bias: one bias draw per example and output.
    bias, bias_loc, bias_scale = gaussian(3)
    weight = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(1, 4, dtype=torch.float64).expand(5, 4)

    pyro.set_rng_seed(1)
    out = F.linear(x, weight, bias)
    pyro.set_rng_seed(1)
    expected = sampled_linear(x, weight, torch.zeros_like(weight), bias_loc, bias_scale.square())
    torch.testing.assert_close(out, expected)
    assert (out[1:] != out[0]).all()
    assert bias._sample is None

    x = torch.randn(1, 2, 5, 5, dtype=torch.float64).expand(4, 2, 5, 5)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    pyro.set_rng_seed(1)
    out = F.conv2d(x, weight, bias, padding=1)
    pyro.set_rng_seed(1)
    expected = sampled_conv2d(
        x, weight, torch.zeros_like(weight), bias_loc, bias_scale.square(), padding=1
    )
    torch.testing.assert_close(out, expected)
    assert (out[1:] != out[0]).all()


def test_zero_scale_has_finite_gradients():
    # A deterministic entry (scale exactly 0) must not turn the gradient into NaN, whether
    # the weight or only the bias is Gaussian.
    x = torch.randn(5, 4, dtype=torch.float64)
    for with_weight in (False, True):
        bias_scale = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
        bias = GaussianWeight(torch.zeros(3, dtype=torch.float64), bias_scale)
        weight_scale = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(3, 4, dtype=torch.float64)
        if with_weight:
            weight = GaussianWeight(weight, weight_scale)
        F.linear(x, weight, bias).sum().backward()
        assert torch.isfinite(bias_scale.grad).all()
        if with_weight:
            assert torch.isfinite(weight_scale.grad).all()


# ------------------------------------------------------------------------------- other uses


def test_other_operations_share_one_sample():
    weight, loc, scale = gaussian(3, 4)
    first = weight.sum()
    sample = weight._sample
    assert sample is not None and type(sample) is torch.Tensor

    # Every later use sees the same draw.
    assert torch.equal(weight.sum(), first)
    assert torch.equal(weight + 0, sample)
    assert torch.equal(weight * 2, 2 * sample)
    assert torch.equal(weight[1], sample[1])
    prior = dist.Normal(0.0, 1.0)
    assert torch.equal(prior.log_prob(weight), prior.log_prob(weight))
    assert torch.equal(prior.log_prob(weight), prior.log_prob(sample))
    assert weight._sample is sample

    # The sample is a draw of loc + scale * eps.
    eps = (sample - loc) / scale
    assert torch.isfinite(eps).all() and (eps != 0).all()


def test_results_are_plain_tensors():
    weight, _, _ = gaussian(3, 4)
    x = torch.randn(2, 4, dtype=torch.float64)
    results = [
        F.linear(x, weight),
        weight.sum(),
        weight + 1,
        torch.exp(weight),
        weight[0],
        weight.clone(),
        weight.detach(),
        dist.Normal(0.0, 1.0).log_prob(weight),
    ]
    for result in results:
        assert type(result) is torch.Tensor


def test_sample_path_gradients():
    weight, loc, scale = gaussian(3, 4)
    weight.sum().backward()
    eps = (weight._sample - loc) / scale
    torch.testing.assert_close(loc.grad, torch.ones_like(loc))
    torch.testing.assert_close(scale.grad, eps.detach())


def test_metadata_does_not_sample():
    weight, loc, _ = gaussian(3, 4)
    assert weight.shape == (3, 4)
    assert weight.size() == (3, 4)
    assert weight.size(1) == 4
    assert weight.dim() == 2
    assert weight.ndim == 2
    assert weight.numel() == 12
    assert len(weight) == 3
    assert weight.dtype == torch.float64
    assert weight.device == loc.device
    assert weight.is_floating_point()
    assert weight._sample is None


def test_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        GaussianWeight(torch.zeros(3, 4), torch.ones(4, 3))
    with pytest.raises(ValueError, match="variance .* same shape"):
        GaussianWeight(torch.zeros(3, 4), variance=torch.ones(4, 3))


def test_needs_exactly_one_of_scale_and_variance():
    message = "exactly one of scale, variance and log_variance"
    with pytest.raises(ValueError, match=message):
        GaussianWeight(torch.zeros(3))
    with pytest.raises(ValueError, match=message):
        GaussianWeight(torch.zeros(3), torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match=message):
        GaussianWeight(torch.zeros(3), variance=torch.ones(3), log_variance=torch.zeros(3))
    with pytest.raises(ValueError, match="log_variance"):
        GaussianWeight(torch.zeros(3), log_variance=torch.zeros(4))


def test_log_variance_form_is_the_same_distribution():
    # The layer gets the log-variance as it is; the output and its gradients are those of the
    # variance form, given the same noise.
    _, loc, scale = gaussian(3, 4)
    log_variance = (2 * scale.log()).detach().requires_grad_()
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.manual_seed(3)
    from_log = F.linear(x, GaussianWeight(loc, log_variance=log_variance))
    (loc_grad, log_grad) = torch.autograd.grad(from_log.square().sum(), (loc, log_variance))
    torch.manual_seed(3)
    from_variance = F.linear(x, GaussianWeight(loc, variance=log_variance.exp()))
    expected = torch.autograd.grad(from_variance.square().sum(), (loc, log_variance))
    torch.testing.assert_close(from_log, from_variance)
    torch.testing.assert_close(loc_grad, expected[0])
    torch.testing.assert_close(log_grad, expected[1])
    weight = GaussianWeight(loc, log_variance=log_variance)
    assert weight.log_variance is log_variance
    torch.testing.assert_close(weight.scale, scale)
    with pytest.raises(ValueError, match="exactly one of weight_var and weight_log_var"):
        sampled_linear(x, loc, log_variance.exp(), weight_log_var=log_variance)


def test_variance_form_is_the_same_distribution():
    _, loc, scale = gaussian(3, 4)
    x = torch.randn(5, 4, dtype=torch.float64)
    from_scale = GaussianWeight(loc, scale)
    from_variance = GaussianWeight(loc, variance=scale.square())
    torch.manual_seed(0)
    expected = F.linear(x, from_scale)
    torch.manual_seed(0)
    actual = F.linear(x, from_variance)
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(from_variance.scale, scale)
    torch.testing.assert_close(from_scale.variance, scale.square())
    torch.manual_seed(1)
    sample = from_variance + 0
    torch.manual_seed(1)
    torch.testing.assert_close(sample, from_scale + 0)
    # The gradient reaches the variance through the layer.
    variance = scale.detach().square().requires_grad_()
    F.linear(x, GaussianWeight(loc, variance=variance)).square().sum().backward()
    assert variance.grad is not None and torch.isfinite(variance.grad).all()


def test_repr_does_not_sample():
    weight, _, _ = gaussian(3, 4)
    assert "GaussianWeight" in repr(weight)
    assert weight._sample is None
