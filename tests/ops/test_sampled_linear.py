"""The local reparameterization trick against weight-space sampling.

The Monte Carlo checks compare sample moments of :func:`sampled_linear` /
:func:`sampled_conv2d` with those of the plain estimator that draws a weight tensor
``W ~ N(mu, var)`` and applies it. Both outputs are Gaussian, so a sample mean has standard
error ``sd / sqrt(n)`` and a sample variance ``var * sqrt(2 / n)``; every comparison allows
``NUM_SE`` standard errors of the difference of the two estimates.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck
from torch.profiler import ProfilerActivity, profile

from pyro_bnn.ops import sampled_conv2d, sampled_linear

NUM_SE = 5.0
LINEAR_DRAWS = 200_000
CONV_DRAWS = 20_000


def assert_same_moments(actual, expected):
    """Per-position mean and variance over dim 0 agree within NUM_SE standard errors."""
    n = actual.shape[0]
    mean_a, mean_e = actual.mean(0), expected.mean(0)
    var_a, var_e = actual.var(0), expected.var(0)
    mean_se = ((var_a + var_e) / n).sqrt()
    var_se = math.sqrt(2.0 / n) * (var_a.square() + var_e.square()).sqrt()
    assert ((mean_a - mean_e).abs() <= NUM_SE * mean_se).all(), (mean_a - mean_e) / mean_se
    assert ((var_a - var_e).abs() <= NUM_SE * var_se).all(), (var_a - var_e) / var_se


def random_variance(*shape):
    return torch.empty(shape, dtype=torch.float64).uniform_(0.2, 1.0)


# ------------------------------------------------------------------------------------- linear


def linear_params(batch=3, in_features=4, out_features=2, bias="gaussian", input_scale=False):
    x = torch.randn(batch, in_features, dtype=torch.float64)
    x[0] = -x[0].abs()  # a row of negative inputs: the variance uses x**2, the mean x
    params = {
        "weight_mean": torch.randn(out_features, in_features, dtype=torch.float64),
        "weight_var": random_variance(out_features, in_features),
        "bias_mean": None,
        "bias_var": None,
        "input_scale": None,
    }
    if bias is not None:
        params["bias_mean"] = torch.randn(out_features, dtype=torch.float64)
    if bias == "gaussian":
        params["bias_var"] = random_variance(out_features)
    if input_scale:
        params["input_scale"] = torch.empty(batch, in_features, dtype=torch.float64).uniform_(
            0.0, 2.0
        )
    return x, params


def weight_space_linear(x, weight_mean, weight_var, bias_mean, bias_var, input_scale, num_draws):
    """``num_draws`` samples of ``(x s) @ W.T + b`` with one (W, b) per draw."""
    if input_scale is not None:
        x = x * input_scale
    weight = weight_mean + weight_var.sqrt() * torch.randn(
        (num_draws,) + weight_mean.shape, dtype=x.dtype
    )
    out = torch.einsum("bi,noi->nbo", x, weight)
    if bias_mean is not None:
        bias = bias_mean.expand(num_draws, -1)
        if bias_var is not None:
            bias = bias + bias_var.sqrt() * torch.randn_like(bias)
        out = out + bias[:, None, :]
    return out


@pytest.mark.parametrize("input_scale", [False, True], ids=["no_scale", "input_scale"])
@pytest.mark.parametrize("bias", [None, "fixed", "gaussian"])
def test_linear_moments_match_weight_space(bias, input_scale):
    x, params = linear_params(bias=bias, input_scale=input_scale)
    batch, in_features = x.shape
    local = sampled_linear(x.expand(LINEAR_DRAWS, batch, in_features), **params)
    reference = weight_space_linear(x, **params, num_draws=LINEAR_DRAWS)
    assert local.shape == reference.shape == (LINEAR_DRAWS, batch, 2)
    assert_same_moments(local, reference)


@pytest.mark.parametrize("input_scale", [False, True], ids=["no_scale", "input_scale"])
@pytest.mark.parametrize("bias", [None, "fixed", "gaussian"])
def test_linear_formula(bias, input_scale):
    x, params = linear_params(bias=bias, input_scale=input_scale)
    noise = torch.randn(x.shape[0], 2, dtype=torch.float64)
    actual = sampled_linear(x, **params, noise=noise)

    scaled = x if params["input_scale"] is None else x * params["input_scale"]
    mean = scaled @ params["weight_mean"].T
    variance = scaled.square() @ params["weight_var"].T
    if params["bias_mean"] is not None:
        mean = mean + params["bias_mean"]
    if params["bias_var"] is not None:
        variance = variance + params["bias_var"]
    torch.testing.assert_close(actual, mean + variance.sqrt() * noise, rtol=1e-12, atol=1e-12)


def test_linear_leading_dims():
    x, params = linear_params()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    noise = torch.randn(2, 5, 2, dtype=torch.float64)
    actual = sampled_linear(x, **params, noise=noise)
    expected = sampled_linear(x.reshape(10, 4), **params, noise=noise.reshape(10, 2))
    assert actual.shape == (2, 5, 2)
    torch.testing.assert_close(actual, expected.reshape(2, 5, 2))


def test_linear_per_example_noise():
    # Identical rows get independent pre-activations: the noise is drawn per example.
    _, params = linear_params()
    x = torch.randn(1, 4, dtype=torch.float64).expand(6, 4)
    out = sampled_linear(x, **params)
    assert (out[1:] != out[0]).all()


# --------------------------------------------------------------------------------------- conv


CONV_CASES = {
    "plain": dict(stride=1, groups=1, input_scale=False, output_scale=False),
    "stride2_input_scale": dict(stride=2, groups=1, input_scale=True, output_scale=False),
    "output_scale": dict(stride=1, groups=1, input_scale=False, output_scale=True),
    "stride2_both_scales": dict(stride=2, groups=1, input_scale=True, output_scale=True),
    "groups2": dict(stride=1, groups=2, input_scale=True, output_scale=True),
}
# float64 dilated convolutions take torch's slow path: too slow for CONV_DRAWS draws.
FORMULA_CASES = dict(
    CONV_CASES,
    groups2_dilation2=dict(stride=2, groups=2, dilation=2, input_scale=True, output_scale=True),
)


def conv_params(stride, groups, input_scale, output_scale, dilation=1, bias=True, side=5):
    batch, in_channels, out_channels = 2, 2, 3 * groups
    x = torch.randn(batch, in_channels, side, side, dtype=torch.float64)
    shape = (out_channels, in_channels // groups, 3, 3)
    params = {
        "weight_mean": torch.randn(shape, dtype=torch.float64),
        "weight_var": random_variance(*shape),
        "bias_mean": torch.randn(out_channels, dtype=torch.float64) if bias else None,
        "bias_var": random_variance(out_channels) if bias else None,
        "stride": stride,
        "padding": dilation,
        "dilation": dilation,
        "groups": groups,
        "input_scale": None,
        "output_scale": None,
    }
    if input_scale:
        params["input_scale"] = torch.empty(batch, in_channels, dtype=torch.float64).uniform_(0, 2)
    if output_scale:
        params["output_scale"] = torch.empty(batch, out_channels, dtype=torch.float64).uniform_(
            0, 2
        )
    return x, params


def weight_space_conv2d(x, num_draws, **params):
    """``num_draws`` samples of ``(conv(x s, W) + b) z`` with one (W, b) per draw.

    Written with ``F.unfold`` and an einsum, independently of ``F.conv2d``.
    """
    weight_mean, weight_var = params["weight_mean"], params["weight_var"]
    groups = params["groups"]
    batch = x.shape[0]
    out_channels, _, kh, kw = weight_mean.shape
    if params["input_scale"] is not None:
        x = x * params["input_scale"][:, :, None, None]
    patches = F.unfold(
        x, (kh, kw), params["dilation"], params["padding"], params["stride"]
    )  # (batch, in_channels * kh * kw, positions), channel-major
    positions = patches.shape[-1]
    patches = patches.reshape(batch, groups, -1, positions)
    weight = weight_mean + weight_var.sqrt() * torch.randn(
        (num_draws,) + weight_mean.shape, dtype=x.dtype
    )
    weight = weight.reshape(num_draws, groups, out_channels // groups, -1)
    out = torch.einsum("bgkl,ngok->nbgol", patches, weight).reshape(
        num_draws, batch, out_channels, positions
    )
    if params["bias_mean"] is not None:
        bias = params["bias_mean"].expand(num_draws, -1)
        if params["bias_var"] is not None:
            bias = bias + params["bias_var"].sqrt() * torch.randn_like(bias)
        out = out + bias[:, None, :, None]
    if params["output_scale"] is not None:
        out = out * params["output_scale"][:, :, None]
    side = math.isqrt(positions)
    return out.reshape(num_draws, batch, out_channels, side, side)


def repeat_conv_inputs(x, params, num_draws):
    """(x, params) for one batched call of ``sampled_conv2d`` covering ``num_draws`` draws."""
    params = dict(params)
    for key in ("input_scale", "output_scale"):
        if params[key] is not None:
            params[key] = params[key].repeat(num_draws, 1)
    return x.repeat(num_draws, 1, 1, 1), params


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_moments_match_weight_space(case):
    x, params = conv_params(**CONV_CASES[case])
    reference = weight_space_conv2d(x, CONV_DRAWS, **params)
    x_rep, params_rep = repeat_conv_inputs(x, params, CONV_DRAWS)
    local = sampled_conv2d(x_rep, **params_rep)
    local = local.reshape((CONV_DRAWS, x.shape[0]) + local.shape[1:])
    assert local.shape == reference.shape
    assert_same_moments(local, reference)


@pytest.mark.parametrize("case", list(FORMULA_CASES))
def test_conv2d_formula(case):
    x, params = conv_params(**FORMULA_CASES[case])
    conv_args = {k: params[k] for k in ("stride", "padding", "dilation", "groups")}
    scaled = x
    if params["input_scale"] is not None:
        scaled = x * params["input_scale"][:, :, None, None]
    mean = F.conv2d(scaled, params["weight_mean"], params["bias_mean"], **conv_args)
    variance = F.conv2d(scaled.square(), params["weight_var"], params["bias_var"], **conv_args)
    if params["output_scale"] is not None:
        z = params["output_scale"][:, :, None, None]
        mean, variance = mean * z, variance * z.square()
    noise = torch.randn_like(mean)
    actual = sampled_conv2d(x, **params, noise=noise)
    torch.testing.assert_close(actual, mean + variance.sqrt() * noise, rtol=1e-12, atol=1e-12)


def test_conv2d_without_bias():
    x, params = conv_params(stride=1, groups=1, input_scale=False, output_scale=False, bias=False)
    noise = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    conv_args = {k: params[k] for k in ("stride", "padding", "dilation", "groups")}
    mean = F.conv2d(x, params["weight_mean"], **conv_args)
    std = F.conv2d(x.square(), params["weight_var"], **conv_args).sqrt()
    torch.testing.assert_close(sampled_conv2d(x, **params, noise=noise), mean + std * noise)


# ---------------------------------------------------------------------------------- gradients


def test_linear_gradcheck():
    x, params = linear_params(bias="gaussian", input_scale=True)
    noise = torch.randn(x.shape[0], 2, dtype=torch.float64)
    names = ["weight_mean", "weight_var", "bias_mean", "bias_var", "input_scale"]
    inputs = (x, *(params[name] for name in names))
    inputs = tuple(t.detach().clone().requires_grad_() for t in inputs)

    def fn(x, *tensors):
        return sampled_linear(x, **dict(zip(names, tensors, strict=True)), noise=noise)

    assert gradcheck(fn, inputs)


def test_conv2d_gradcheck():
    x, params = conv_params(stride=2, groups=1, input_scale=True, output_scale=True, side=4)
    noise = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    names = ["weight_mean", "weight_var", "bias_mean", "bias_var", "input_scale", "output_scale"]
    conv_args = {k: params[k] for k in ("stride", "padding", "dilation", "groups")}
    inputs = (x, *(params[name] for name in names))
    inputs = tuple(t.detach().clone().requires_grad_() for t in inputs)

    def fn(x, *tensors):
        return sampled_conv2d(x, **dict(zip(names, tensors, strict=True)), **conv_args, noise=noise)

    assert gradcheck(fn, inputs)


def test_float32():
    x, params = linear_params(bias="gaussian", input_scale=True)
    params = {k: v.float() for k, v in params.items()}
    out = sampled_linear(x.float(), **params)
    assert out.dtype == torch.float32

    x, params = conv_params(stride=1, groups=1, input_scale=True, output_scale=True)
    params = {k: v.float() if torch.is_tensor(v) else v for k, v in params.items()}
    out = sampled_conv2d(x.float(), **params)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_dead_input_row_has_finite_gradients(dtype):
    # An all-zero input row and no bias variance: the pre-activation variance is exactly 0,
    # where sqrt has an infinite derivative.
    x = torch.randn(3, 4, dtype=dtype)
    x[1] = 0
    weight_mean = torch.randn(2, 4, dtype=dtype, requires_grad=True)
    weight_var = torch.rand(2, 4, dtype=dtype).add(0.1).requires_grad_()
    bias_mean = torch.randn(2, dtype=dtype, requires_grad=True)
    x.requires_grad_()
    out = sampled_linear(x, weight_mean, weight_var, bias_mean)
    torch.testing.assert_close(out[1], bias_mean.detach().expand(2))
    out.sum().backward()
    for grad in (x.grad, weight_mean.grad, weight_var.grad, bias_mean.grad):
        assert torch.isfinite(grad).all()


def test_conv2d_dead_input_has_finite_gradients():
    x = torch.randn(2, 2, 5, 5)
    x[1] = 0
    weight_mean = torch.randn(3, 2, 3, 3, requires_grad=True)
    weight_var = torch.rand(3, 2, 3, 3).add(0.1).requires_grad_()
    x.requires_grad_()
    out = sampled_conv2d(x, weight_mean, weight_var, padding=1)
    # Zero up to the clamp: sqrt(finfo.tiny) * noise, about 1e-19 in float32.
    assert out[1].abs().max() < 1e-15
    out.sum().backward()
    for grad in (x.grad, weight_mean.grad, weight_var.grad):
        assert torch.isfinite(grad).all()


# ---------------------------------------------------------------------------------- bad input


def test_linear_bad_input():
    x, params = linear_params()
    with pytest.raises(ValueError, match="noise"):
        sampled_linear(x, **params, noise=torch.randn(3, 3, dtype=torch.float64))
    bad = dict(params, weight_var=params["weight_var"][:, :3])
    with pytest.raises(ValueError, match="weight_mean .* weight_var"):
        sampled_linear(x, **bad)
    bad = dict(params, bias_mean=None)
    with pytest.raises(ValueError, match="bias_var .*without bias_mean"):
        sampled_linear(x, **bad)


def test_conv2d_bad_input():
    x, params = conv_params(stride=1, groups=1, input_scale=False, output_scale=False)
    with pytest.raises(ValueError, match="noise"):
        sampled_conv2d(x, **params, noise=torch.randn(2, 3, 4, 4, dtype=torch.float64))
    bad = dict(params, weight_var=params["weight_var"][:2])
    with pytest.raises(ValueError, match="weight_mean .* weight_var"):
        sampled_conv2d(x, **bad)
    bad = dict(params, bias_mean=None)
    with pytest.raises(ValueError, match="bias_var .*without bias_mean"):
        sampled_conv2d(x, **bad)


# ------------------------------------------------------------------------------------- memory


def largest_allocation(fn, *args, **kwargs):
    """The largest CPU allocation, in bytes, made by any single operator in ``fn``."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(*args, **kwargs)
    return max(event.cpu_memory_usage for event in prof.events())


def test_linear_allocates_no_batch_out_in_tensor():
    batch, in_features, out_features = 64, 256, 256
    x = torch.randn(batch, in_features)
    weight_mean = torch.randn(out_features, in_features)
    weight_var = torch.rand(out_features, in_features)
    bias = torch.randn(out_features)
    input_scale = torch.rand(batch, in_features)
    largest = largest_allocation(
        sampled_linear, x, weight_mean, weight_var, bias, bias.abs(), input_scale
    )
    # A (batch, out, in) temporary would be 16 MiB; every real temporary is at most 256 KiB.
    assert largest <= 4 * weight_mean.numel() * 4
    assert largest < batch * out_features * in_features * 4 / 16


def test_conv2d_allocates_no_batch_out_in_tensor():
    batch, in_channels, out_channels, side = 16, 16, 32, 16
    x = torch.randn(batch, in_channels, side, side)
    weight_mean = torch.randn(out_channels, in_channels, 3, 3)
    weight_var = torch.rand(out_channels, in_channels, 3, 3)
    output_bytes = batch * out_channels * side * side * 4
    largest = largest_allocation(
        sampled_conv2d,
        x,
        weight_mean,
        weight_var,
        padding=1,
        input_scale=torch.rand(batch, in_channels),
        output_scale=torch.rand(batch, out_channels),
    )
    assert largest <= output_bytes


def test_linear_large_layer_runs():
    # Materializing (batch, out, in) here would take 32 GiB in float32.
    batch, in_features, out_features = 2048, 2048, 2048
    x = torch.randn(batch, in_features)
    weight_mean = torch.randn(out_features, in_features) / math.sqrt(in_features)
    weight_var = torch.full((out_features, in_features), 1e-3)
    out = sampled_linear(x, weight_mean, weight_var)
    assert out.shape == (batch, out_features)
    assert torch.isfinite(out).all()
