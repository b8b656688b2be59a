"""The weight protocol: every kind of stochastic weight through ``F.linear`` and ``F.conv{1,2,3}d``.

The reference is *weight-space sampling*: per draw, a full weight tensor from the distribution
the weight object represents (for a per-example scale, the weight of that example), applied
with the plain functional.  The layer call with the weight object (its handler) must give the
same per-example, per-output mean and variance.  Every output is Gaussian given the input and
the scales, so a sample mean has standard error ``sd / sqrt(n)`` and a sample variance
``var * sqrt(2 / n)``; every Monte Carlo comparison allows ``NUM_SE`` standard errors (of the
difference of two estimates, or of one estimate against an exact value).  The random state is
seeded per test (``tests/conftest.py``), so the outcome is deterministic.

The closed-form moments are computed here from each example's weight moments with the plain
functional, independently of :mod:`pyro_bnn.ops`, and compared exactly with the op functions
(which take an explicit ``noise``) and with the layer call of a weight of zero variance.
"""

import itertools
import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyro_bnn.ops import (
    GaussianWeight,
    MatrixNormalWeight,
    ScaledWeight,
    StochasticWeight,
    batched_conv,
    batched_linear,
    matrix_normal_conv,
    matrix_normal_linear,
    sampled_conv,
    sampled_linear,
)

DTYPE = torch.float64
NUM_SE = 5.0
EXAMPLES = 2  # distinct input rows (images), each repeated Call.draws times in one batch
EXACT = dict(rtol=1e-10, atol=1e-10)


@dataclass
class Call:
    fn: object
    in_shape: tuple  # one example's input
    weight_shape: tuple  # (out, in / groups, *kernel)
    kwargs: dict = field(default_factory=dict)
    draws: int = 0  # per example in the Monte Carlo comparisons

    @property
    def out(self):
        return self.weight_shape[0]

    @property
    def groups(self):
        return self.kwargs.get("groups", 1)

    def __call__(self, x, weight, bias=None):
        return self.fn(x, weight, bias, **self.kwargs)


# float64 dilated convolutions take torch's slow path: the dilated case has fewer draws.
CALLS = {
    "linear": Call(F.linear, (5,), (3, 5), draws=20_000),
    "conv1d": Call(F.conv1d, (3, 9), (4, 3, 3), dict(stride=2, padding=2, dilation=2), 2_000),
    "conv2d": Call(
        F.conv2d, (4, 5, 4), (4, 2, 2, 3), dict(stride=(2, 1), padding=(1, 0), groups=2), 4_000
    ),
    "conv3d": Call(F.conv3d, (2, 3, 3, 3), (3, 2, 3, 1, 3), dict(padding="same"), 2_000),
}

# gaussian: GaussianWeight; scaled_input: ScaledWeight with a per-example input scale (Bayesian
# compression); scaled_input_mean: the same on the mean only (multiplicative normalizing
# flows); scaled_output: a per-example output scale; matrix_normal: MatrixNormalWeight.
KINDS = ["gaussian", "scaled_input", "scaled_input_mean", "scaled_output", "matrix_normal"]


def uniform(shape, low, high):
    return torch.empty(shape, dtype=DTYPE).uniform_(low, high)


def make_params(kind, shape, per_example=True, zero_variance=False):
    """Random parameters of a weight of ``kind`` and layout ``shape``; scales have shape
    ``(EXAMPLES, size)`` when ``per_example``, else ``(size,)``."""
    lead = (EXAMPLES,) if per_example else ()
    params = {"loc": torch.randn(shape, dtype=DTYPE)}
    if kind == "matrix_normal":
        params["row_var"] = uniform(shape[1:], 0.2, 1.0)
        params["col_var"] = uniform(shape[:1], 0.2, 1.0)
    else:
        params["var"] = uniform(shape, 0.2, 1.0)
    if kind.startswith("scaled_input"):
        params["input_scale"] = uniform((*lead, shape[1]), 0.3, 2.0)
    if kind == "scaled_output":
        params["output_scale"] = uniform((*lead, shape[0]), 0.3, 2.0)
    if zero_variance:
        for name in ("var", "row_var", "col_var"):
            if name in params:
                params[name] = torch.zeros_like(params[name])
    return params


def make_weight(kind, params, repeats=1):
    """The weight object; per-example scales are repeated for a batch of ``repeats`` copies of
    the ``EXAMPLES`` examples (row ``n * EXAMPLES + e`` is example ``e``)."""
    if kind == "matrix_normal":
        return MatrixNormalWeight(params["loc"], params["row_var"], params["col_var"])
    gaussian = GaussianWeight(params["loc"], variance=params["var"])
    if kind == "gaussian":
        return gaussian

    def repeat(scale):
        return scale.repeat(repeats, 1) if scale.dim() == 2 else scale

    if kind == "scaled_output":
        return ScaledWeight(gaussian, output_scale=repeat(params["output_scale"]))
    return ScaledWeight(
        gaussian,
        input_scale=repeat(params["input_scale"]),
        scale_variance=kind == "scaled_input",
    )


def weight_moments(kind, params, example=None):
    """Mean and variance of every entry of the weight (of ``example`` for per-example scales):
    in every kind the entries are independent given the scales."""
    loc = params["loc"]
    extra = (1,) * (loc.dim() - 2)
    if kind == "matrix_normal":
        return loc, params["col_var"].reshape(-1, 1, *extra) * params["row_var"]
    mean, var = loc, params["var"]
    if kind.startswith("scaled"):
        name = "output_scale" if kind == "scaled_output" else "input_scale"
        scale = params[name]
        scale = scale if scale.dim() == 1 else scale[example]
        if kind == "scaled_output":  # one scale per output unit (channel): dim 0
            scale = scale.reshape(-1, 1, *extra)
        else:  # one per (kernel) input unit (channel): dim 1
            scale = scale.reshape(1, -1, *extra)
        mean = mean * scale
        if kind != "scaled_input_mean":
            var = var * scale.square()
    return mean, var


def make_bias(bias, out):
    """(the bias argument, its mean, its variance or None)."""
    if bias == "none":
        return None, None, None
    loc = torch.randn(out, dtype=DTYPE)
    if bias == "plain":
        return loc, loc, None
    var = uniform(out, 0.2, 1.0)
    return GaussianWeight(loc, variance=var), loc, var


def make_input(call):
    x = torch.randn(EXAMPLES, *call.in_shape, dtype=DTYPE)
    x[0] = -x[0].abs()  # negative inputs: the variance uses x**2, the mean x
    return x


def closed_form(kind, params, call, x, bias_mean, bias_var):
    """Exact (mean, variance) of every output of every example, from each example's weight
    moments and the plain functional: ``call(x, E W) + E b`` and ``call(x**2, Var W) + Var b``."""
    means, variances = [], []
    for e in range(EXAMPLES):
        mean_w, var_w = weight_moments(kind, params, e)
        means.append(call(x[e : e + 1], mean_w, bias_mean)[0])
        variances.append(call(x[e : e + 1].square(), var_w, bias_var)[0])
    return torch.stack(means), torch.stack(variances)


# --------------------------------------------------------------------- weight-space reference


def patches(call, x):
    """The input entries that multiply each kernel entry at each output position:
    ``(E, groups, in / groups * prod(kernel), *out_spatial)``, from the plain functional with
    one one-hot kernel per kernel entry (so stride, padding, dilation and ``"same"`` are
    torch's own)."""
    channels, kernel = call.weight_shape[1], call.weight_shape[2:]
    size = channels * math.prod(kernel)
    one_hot = torch.eye(size, dtype=DTYPE).reshape(size, channels, *kernel)
    out = call(x, one_hot.repeat(call.groups, *(1,) * (len(kernel) + 1)))
    return out.reshape(len(x), call.groups, size, *out.shape[2:])


def weight_space(call, x, weights, biases):
    """``call(x[e], weights[n, e], biases[n, e])`` for every draw ``n`` and example ``e``: the
    convolution is linear in its weight, so one contraction with the input's patches does all
    draws (checked against a loop of plain calls in
    ``test_weight_space_reference_is_a_loop_of_plain_calls``)."""
    num_draws = len(weights)
    if call.fn is F.linear:
        out = torch.einsum("ei,neoi->neo", x, weights)
    else:
        p = patches(call, x)
        flat = weights.reshape(num_draws, EXAMPLES, call.groups, call.out // call.groups, -1)
        out = torch.einsum("egk...,negok->nego...", p, flat)
        out = out.reshape(num_draws, EXAMPLES, call.out, *p.shape[3:])
    if biases is not None:
        out = out + biases.reshape(*biases.shape, *(1,) * (out.dim() - 3))
    return out


def draw_weights(kind, params, num_draws):
    """``(num_draws, EXAMPLES, *shape)``: independent full weight tensors of each example."""
    mean, var = zip(*(weight_moments(kind, params, e) for e in range(EXAMPLES)), strict=True)
    mean, std = torch.stack(mean), torch.stack(var).sqrt()
    return mean + std * torch.randn(num_draws, *mean.shape, dtype=DTYPE)


def draw_biases(bias_mean, bias_var, num_draws):
    if bias_mean is None:
        return None
    biases = bias_mean.expand(num_draws, EXAMPLES, -1)
    if bias_var is not None:
        biases = biases + bias_var.sqrt() * torch.randn_like(biases)
    return biases


def repeat_rows(x, repeats):
    return x.repeat(repeats, *(1,) * (x.dim() - 1))


# ---------------------------------------------------------------------------- moment checks


def sample_moments(samples):
    return samples.mean(0), samples.var(0), len(samples)


def assert_same_moments(actual, expected):
    """Two samples (draws along dim 0): means and variances agree within NUM_SE standard
    errors of their difference."""
    mean_a, var_a, n = sample_moments(actual)
    mean_e, var_e, m = sample_moments(expected)
    mean_se = (var_a / n + var_e / m).sqrt()
    var_se = (2 * var_a.square() / n + 2 * var_e.square() / m).sqrt()
    assert ((mean_a - mean_e).abs() <= NUM_SE * mean_se).all(), (mean_a - mean_e) / mean_se
    assert ((var_a - var_e).abs() <= NUM_SE * var_se).all(), (var_a - var_e) / var_se


def assert_moments_are(samples, mean, var):
    """A sample's mean and variance agree with exact values within NUM_SE standard errors."""
    mean_s, var_s, n = sample_moments(samples)
    mean_se, var_se = (var / n).sqrt(), var * math.sqrt(2 / n)
    assert ((mean_s - mean).abs() <= NUM_SE * mean_se).all(), (mean_s - mean) / mean_se
    assert ((var_s - var).abs() <= NUM_SE * var_se).all(), (var_s - var) / var_se


def assert_no_sample_drawn(weight, bias):
    """The layer got the weight object: its handler ran and no weight sample was drawn."""
    assert weight._sample is None
    if isinstance(weight, ScaledWeight):
        assert weight.weight._sample is None
    if isinstance(bias, StochasticWeight):
        assert bias._sample is None


# ------------------------------------------------------------- 1. handler vs weight space

MC_BIASES = {
    "gaussian": ["plain", "gaussian"],
    "scaled_input": ["plain"],
    "scaled_input_mean": ["gaussian"],
    "scaled_output": ["plain", "gaussian"],
    "matrix_normal": ["gaussian"],
}
MC_CASES = [(kind, call, bias) for kind in KINDS for call in CALLS for bias in MC_BIASES[kind]]


@pytest.mark.parametrize("kind, call_name, bias", MC_CASES)
def test_layer_moments_match_weight_space_sampling(kind, call_name, bias):
    call = CALLS[call_name]
    params = make_params(kind, call.weight_shape)
    bias_arg, bias_mean, bias_var = make_bias(bias, call.out)
    x = make_input(call)
    n = call.draws

    weight = make_weight(kind, params, repeats=n)
    local = call(repeat_rows(x, n), weight, bias_arg)
    assert type(local) is torch.Tensor
    assert_no_sample_drawn(weight, bias_arg)
    local = local.reshape(n, EXAMPLES, *local.shape[1:])

    reference = weight_space(
        call, x, draw_weights(kind, params, n), draw_biases(bias_mean, bias_var, n)
    )
    assert local.shape == reference.shape
    assert_same_moments(local, reference)

    mean, var = closed_form(kind, params, call, x, bias_mean, bias_var)
    assert_moments_are(local, mean, var)
    assert_moments_are(reference, mean, var)


@pytest.mark.parametrize("call_name", list(CALLS))
def test_weight_space_reference_is_a_loop_of_plain_calls(call_name):
    call = CALLS[call_name]
    x = make_input(call)
    weights = torch.randn(3, EXAMPLES, *call.weight_shape, dtype=DTYPE)
    biases = torch.randn(3, EXAMPLES, call.out, dtype=DTYPE)
    expected = torch.stack(
        [
            torch.stack(
                [call(x[e : e + 1], weights[n, e], biases[n, e])[0] for e in range(EXAMPLES)]
            )
            for n in range(3)
        ]
    )
    torch.testing.assert_close(weight_space(call, x, weights, biases), expected, **EXACT)


@pytest.mark.parametrize("bias", ["none", "plain", "gaussian"])
@pytest.mark.parametrize("call_name", list(CALLS))
@pytest.mark.parametrize("kind", KINDS)
def test_zero_variance_layer_is_the_closed_form_mean(kind, call_name, bias):
    # A degenerate weight (and bias) makes the layer deterministic: exactly the mean, however
    # the handler draws its noise.
    call = CALLS[call_name]
    params = make_params(kind, call.weight_shape, zero_variance=True)
    bias_arg, bias_mean, _ = make_bias(bias, call.out)
    if bias == "gaussian":
        bias_arg = GaussianWeight(bias_mean, variance=torch.zeros_like(bias_mean))
    x = make_input(call)
    weight = make_weight(kind, params)
    out = call(x, weight, bias_arg)
    assert type(out) is torch.Tensor
    assert_no_sample_drawn(weight, bias_arg)
    mean, _ = closed_form(kind, params, call, x, bias_mean, None)
    torch.testing.assert_close(out, mean, **EXACT)


CONV_DEFAULTS = dict(stride=1, padding=0, dilation=1, groups=1)


def op_call(kind, params, call, x, bias_mean, bias_var, noise):
    """The op function a layer call of this kind is documented to compute, with ``noise``."""
    linear = call.fn is F.linear
    args = () if linear else tuple(call.kwargs.get(k, d) for k, d in CONV_DEFAULTS.items())
    if kind == "matrix_normal":
        op = matrix_normal_linear if linear else matrix_normal_conv
        row_var, col_var = params["row_var"], params["col_var"]
        return op(x, params["loc"], row_var, col_var, bias_mean, bias_var, *args, noise=noise)
    scales = {}
    if kind.startswith("scaled_input"):
        # The op takes a scale per input channel; the weight's is per kernel input channel.
        scales["input_scale"] = params["input_scale"].repeat(1, call.groups)
        scales["scale_variance"] = kind == "scaled_input"
    if kind == "scaled_output":
        scales["output_scale"] = params["output_scale"]
    op = sampled_linear if linear else sampled_conv
    return op(x, params["loc"], params["var"], bias_mean, bias_var, *args, noise=noise, **scales)


@pytest.mark.parametrize("call_name", list(CALLS))
@pytest.mark.parametrize("kind", KINDS)
def test_op_functions_are_the_closed_form(kind, call_name):
    call = CALLS[call_name]
    params = make_params(kind, call.weight_shape)
    _, bias_mean, bias_var = make_bias("gaussian", call.out)
    x = make_input(call)
    mean, var = closed_form(kind, params, call, x, bias_mean, bias_var)
    if kind == "scaled_output":
        # The op's output scale multiplies the bias too (the seeds' algorithms):
        # (x * mu + b) z + sqrt((x**2 * var + b_var) z**2) eps.
        _, var_w = weight_moments("gaussian", params)
        z = params["output_scale"].reshape(EXAMPLES, -1, *(1,) * (mean.dim() - 2))
        mean = mean + bias_mean.reshape(z.shape[1:]) * (z - 1)
        var = z.square() * (call(x.square(), var_w, bias_var))

    def op(noise):
        return op_call(kind, params, call, x, bias_mean, bias_var, noise)

    zeros = torch.zeros_like(mean)
    ones = torch.ones_like(mean)
    torch.testing.assert_close(op(zeros), mean, **EXACT)
    torch.testing.assert_close(op(ones) - op(zeros), var.sqrt(), **EXACT)
    noise = torch.randn_like(mean)
    torch.testing.assert_close(op(noise), mean + var.sqrt() * noise, **EXACT)


# -------------------------------------------------------------------------------- 2. no leak

FUNCTIONALS = ("linear", "conv1d", "conv2d", "conv3d")


@pytest.mark.parametrize("call_name", list(CALLS))
@pytest.mark.parametrize("kind", KINDS)
def test_nothing_leaks(kind, call_name):
    call = CALLS[call_name]
    x = make_input(call)
    plain_weight = torch.randn(call.weight_shape, dtype=DTYPE)
    plain_bias = torch.randn(call.out, dtype=DTYPE)
    before = call(x, plain_weight, plain_bias)
    functions = {name: getattr(F, name) for name in FUNCTIONALS}
    tensor_hooks = (torch.Tensor.__torch_function__, torch.Tensor.__mul__, torch.mul)

    # Per-example scales (the layer only) and per-unit scales (also materializable).
    for per_example in (True, False):
        params = make_params(kind, call.weight_shape, per_example=per_example)
        bias_arg, _, _ = make_bias("gaussian", call.out)
        weight = make_weight(kind, params)
        out = call(x, weight, bias_arg)
        assert type(out) is torch.Tensor
        assert_no_sample_drawn(weight, bias_arg)

    # Every other operation materializes one sample, a plain tensor, and reuses it.
    total = weight.sum()
    sample = weight._sample
    assert type(sample) is torch.Tensor and type(total) is torch.Tensor
    assert sample.shape == weight.shape
    prior = dist.Normal(0.0, 1.0)
    others = [weight.sum(), weight[0], weight + 1, weight - sample, prior.log_prob(weight)]
    for other in others:
        assert type(other) is torch.Tensor
    assert torch.equal(others[0], total)
    assert torch.equal(others[1], sample[0])
    assert torch.equal(others[2], sample + 1)
    assert torch.equal(others[3], torch.zeros_like(sample))
    assert torch.equal(others[4], prior.log_prob(sample))
    assert weight._sample is sample and weight.rsample() is sample
    # A layer call still goes to the handler and returns a plain tensor.
    assert type(call(x, weight, bias_arg)) is torch.Tensor

    assert {name: getattr(F, name) for name in FUNCTIONALS} == functions
    assert (torch.Tensor.__torch_function__, torch.Tensor.__mul__, torch.mul) == tensor_hooks
    after = call(x, plain_weight, plain_bias)
    assert type(after) is torch.Tensor
    assert torch.equal(after, before)
    if call.fn is F.linear:
        torch.testing.assert_close(after, x @ plain_weight.T + plain_bias, **EXACT)


@pytest.mark.parametrize("kind", KINDS)
def test_materialized_sample_follows_the_weight_distribution(kind):
    params = make_params(kind, CALLS["conv2d"].weight_shape, per_example=False)
    samples = torch.stack([make_weight(kind, params).rsample() for _ in range(2_000)])
    mean, var = weight_moments(kind, params)
    assert_moments_are(samples, mean, var)


# ------------------------------------------------------------------- 3. non-centred products


def gaussian(*shape, requires_grad=False):
    loc = torch.randn(shape, dtype=DTYPE, requires_grad=requires_grad)
    var = uniform(shape, 0.2, 1.0).requires_grad_(requires_grad)
    return GaussianWeight(loc, variance=var), loc, var


SCALES = {
    "row": lambda: uniform((1, 4), 0.3, 2.0),
    "column": lambda: uniform((3, 1), 0.3, 2.0),
    "full": lambda: uniform((3, 4), 0.3, 2.0),
    "scalar_tensor": lambda: torch.tensor(1.7, dtype=DTYPE),
    "python_float": lambda: 1.7,
}
PRODUCTS = {
    "weight * scale": lambda w, s: w * s,
    "scale * weight": lambda w, s: s * w,
    "torch.mul": lambda w, s: torch.mul(w, s),
    "Tensor.mul": lambda w, s: w.mul(s),
}


@pytest.mark.parametrize("product", list(PRODUCTS))
@pytest.mark.parametrize("scale_name", list(SCALES))
def test_product_with_scale_stays_gaussian(scale_name, product):
    weight, loc, var = gaussian(3, 4)
    scale = SCALES[scale_name]()
    result = PRODUCTS[product](weight, scale)
    assert type(result) is GaussianWeight
    assert result.shape == weight.shape
    t = torch.as_tensor(scale, dtype=DTYPE)
    torch.testing.assert_close(result.loc, loc * t, **EXACT)
    torch.testing.assert_close(result.variance, var * t.square(), **EXACT)
    assert weight._sample is None and result._sample is None


@pytest.mark.parametrize("scale_name", ["row", "column", "scalar_tensor"])
def test_layer_with_product_is_locally_reparameterized(scale_name):
    weight, loc, var = gaussian(3, 4, requires_grad=True)
    scale = SCALES[scale_name]().requires_grad_()
    product = weight * scale
    num_draws = 20_000
    x = torch.randn(1, 4, dtype=DTYPE)
    out = F.linear(x.expand(num_draws, 4), product)
    assert type(out) is torch.Tensor
    assert weight._sample is None and product._sample is None
    # Per-example draws of N(x (loc s).T, x**2 (var s**2).T): the handler, not one sample.
    mean = F.linear(x, loc * scale).detach()
    variance = F.linear(x.square(), var * scale.square()).detach()
    assert_moments_are(out, mean, variance)
    # The non-centred scale learns through the layer.
    out[:10].square().sum().backward()
    for grad in (scale.grad, loc.grad, var.grad):
        assert grad is not None and torch.isfinite(grad).all() and (grad != 0).any()


def test_product_after_the_sample_uses_that_sample():
    weight, _, _ = gaussian(3, 4)
    weight.sum()
    sample = weight._sample
    for scale in (SCALES["row"](), SCALES["column"](), 1.7):
        for result in (weight * scale, scale * weight, torch.mul(weight, scale)):
            assert type(result) is torch.Tensor
            torch.testing.assert_close(result, sample * scale, rtol=0, atol=0)
    assert weight._sample is sample


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 1, 1), (5, 3, 1)])
def test_product_that_broadcasts_to_a_bigger_shape_uses_one_sample(shape):
    weight, _, _ = gaussian(3, 4)
    scale = uniform(shape, 0.3, 2.0)
    result = weight * scale
    assert type(result) is torch.Tensor
    sample = weight._sample
    assert sample is not None
    assert result.shape == torch.broadcast_shapes((3, 4), shape)
    torch.testing.assert_close(result, sample * scale, rtol=0, atol=0)


def test_product_of_two_stochastic_weights_is_a_product_of_samples():
    first, _, _ = gaussian(3, 4)
    second, _, _ = gaussian(3, 4)
    result = first * second
    assert type(result) is torch.Tensor
    torch.testing.assert_close(result, first._sample * second._sample, rtol=0, atol=0)


# ---------------------------------------------------------------------- 4. sample dimensions

SAMPLES = 3


def sampled_params(kind, shape):
    """Parameters with sample dimensions ``(SAMPLES, 1)``, as under a vectorized plate."""
    lead = (SAMPLES, 1)
    params = {"loc": torch.randn(*lead, *shape, dtype=DTYPE)}
    if kind == "gaussian":
        params["var"] = uniform((*lead, *shape), 0.2, 1.0)
    else:
        params["row_var"] = uniform((*lead, *shape[1:]), 0.2, 1.0)
        params["col_var"] = uniform((*lead, shape[0]), 0.2, 1.0)
    return params


def per_sample(params, s):
    return {name: value[s, 0] for name, value in params.items()}


SAMPLE_CALLS = {
    "linear": CALLS["linear"],
    "conv2d": Call(F.conv2d, (4, 5, 5), (4, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
}


@pytest.mark.parametrize("input_has_sample_dims", [False, True])
@pytest.mark.parametrize("call_name", list(SAMPLE_CALLS))
@pytest.mark.parametrize("kind", ["gaussian", "matrix_normal"])
def test_sample_dims_match_each_sample_separately(kind, call_name, input_has_sample_dims):
    call = SAMPLE_CALLS[call_name]
    params = sampled_params(kind, call.weight_shape)
    bias_loc = torch.randn(SAMPLES, 1, call.out, dtype=DTYPE)
    bias_var = uniform((SAMPLES, 1, call.out), 0.2, 1.0)
    weight = make_weight(kind, params)
    bias = GaussianWeight(bias_loc, variance=bias_var)
    x = make_input(call)  # the EXAMPLES distinct inputs
    if input_has_sample_dims:  # the output of an earlier layer: one input per sample
        x = x + torch.randn(SAMPLES, 1, *x.shape, dtype=DTYPE)

    # Exactly one output per (sample, example): the per-sample layer with the same noise.
    torch.manual_seed(1)
    out = call(x, weight, bias)
    assert type(out) is torch.Tensor
    torch.manual_seed(1)
    noise = torch.randn_like(out)
    assert out.shape[:3] == (SAMPLES, 1, EXAMPLES)
    assert_no_sample_drawn(weight, bias)
    for s in range(SAMPLES):
        x_s = x[s, 0] if input_has_sample_dims else x
        params_s, bias_s = per_sample(params, s), (bias_loc[s, 0], bias_var[s, 0])
        expected = op_call(kind, params_s, call, x_s, *bias_s, noise[s, 0])
        torch.testing.assert_close(out[s, 0], expected, **EXACT)
        single = make_weight(kind, params_s), GaussianWeight(bias_s[0], variance=bias_s[1])
        assert call(x_s, *single).shape == out.shape[2:]

    # Monte Carlo: each sample's moments are those of its own weight applied separately.
    n = 2_000
    repeats = (1, 1, n) if input_has_sample_dims else (n,)
    out = call(x.repeat(*repeats, *(1,) * len(call.in_shape)), weight, bias)
    out = out.reshape(SAMPLES, n, EXAMPLES, *out.shape[3:])
    for s in range(SAMPLES):
        x_s = x[s, 0] if input_has_sample_dims else x
        mean_w, var_w = weight_moments(kind, per_sample(params, s))
        mean = call(x_s, mean_w, bias_loc[s, 0])
        var = call(x_s.square(), var_w, bias_var[s, 0])
        assert_moments_are(out[s], mean, var)


def test_matrix_normal_with_sample_dims_materializes():
    params = sampled_params("matrix_normal", (4, 2, 3, 3))
    weight = make_weight("matrix_normal", params)
    assert weight.variance.shape == (SAMPLES, 1, 4, 2, 3, 3)
    for s in range(SAMPLES):
        _, var = weight_moments("matrix_normal", per_sample(params, s))
        torch.testing.assert_close(weight.variance[s, 0], var, **EXACT)
    assert weight.rsample().shape == weight.shape


def loop(fn, x, weight, bias, samples, x_event, w_event, **kwargs):
    """``fn`` applied sample by sample: the reference of the batched ops."""

    def at(t, event, index):
        if t is None or t.dim() == event:
            return t
        return t.broadcast_to(*samples, *t.shape[-event:])[index]

    outs = [
        fn(at(x, x_event, i), at(weight, w_event, i), at(bias, 1, i), **kwargs)
        for i in itertools.product(*map(range, samples))
    ]
    return torch.stack(outs).reshape(*samples, *outs[0].shape)


# (weight samples, input samples, bias shape): the input samples may be absent (a network's
# input) or given (an earlier layer's output), the bias plain or per sample.
BATCHED_CASES = {
    "weight_samples": ((3, 1), (), None),
    "plain_bias": ((3, 2), (), "plain"),
    "sample_bias": ((3, 1), (), (3, 1)),
    "input_samples": ((3, 1), (3, 1), (3, 1)),
    "input_samples_broadcast": ((3, 1), (3, 2), (3, 2)),
    "only_input_samples": ((), (3, 1), "plain"),
    "only_bias_samples": ((), (), (3, 1)),
}


def batched_inputs(case, in_shape, weight_shape, out):
    weight_samples, input_samples, bias = BATCHED_CASES[case]
    x = torch.randn(*input_samples, 4, *in_shape, dtype=DTYPE)
    weight = torch.randn(*weight_samples, *weight_shape, dtype=DTYPE)
    if bias is None:
        b = None
    elif bias == "plain":
        b = torch.randn(out, dtype=DTYPE)
    else:
        b = torch.randn(*bias, out, dtype=DTYPE)
    samples = torch.broadcast_shapes(
        weight_samples, input_samples, () if bias in (None, "plain") else bias
    )
    return x, weight, b, samples


@pytest.mark.parametrize("case", list(BATCHED_CASES))
def test_batched_linear_is_a_loop(case):
    x, weight, bias, samples = batched_inputs(case, (5,), (3, 5), 3)
    out = batched_linear(x, weight, bias)
    assert out.shape == (*samples, 4, 3)
    expected = loop(F.linear, x, weight, bias, samples, 2, 2)
    torch.testing.assert_close(out, expected, **EXACT)


@pytest.mark.parametrize("case", list(BATCHED_CASES))
@pytest.mark.parametrize("call_name", ["conv1d", "conv2d", "conv3d"])
def test_batched_conv_is_a_loop(call_name, case):
    call = CALLS[call_name]
    x, weight, bias, samples = batched_inputs(case, call.in_shape, call.weight_shape, call.out)
    spatial = len(call.in_shape) - 1
    out = batched_conv(x, weight, bias, spatial=spatial, **call.kwargs)
    event = spatial + 2
    expected = loop(call.fn, x, weight, bias, samples, event, event, **call.kwargs)
    assert out.shape[: len(samples) + 2] == (*samples, 4, call.out)
    torch.testing.assert_close(out, expected, **EXACT)


# ------------------------------------------------------------------------------ 5. bad input


def test_scaled_weight_rejects_bad_scales():
    weight, _, _ = gaussian(3, 4)
    with pytest.raises(ValueError, match=r"input_scale must have shape \(4,\) or \(batch, 4\)"):
        ScaledWeight(weight, input_scale=torch.ones(3, dtype=DTYPE))
    with pytest.raises(ValueError, match=r"input_scale must have shape .* got \(2, 5\)"):
        ScaledWeight(weight, input_scale=torch.ones(2, 5, dtype=DTYPE))
    with pytest.raises(ValueError, match=r"output_scale must have shape \(3,\) or \(batch, 3\)"):
        ScaledWeight(weight, output_scale=torch.ones(2, 4, dtype=DTYPE))
    with pytest.raises(ValueError, match=r"output_scale .* got \(2, 2, 3\)"):
        ScaledWeight(weight, output_scale=torch.ones(2, 2, 3, dtype=DTYPE))
    matrix_normal = MatrixNormalWeight(torch.zeros(3, 4), torch.ones(4), torch.ones(3))
    with pytest.raises(TypeError, match="got MatrixNormalWeight"):
        ScaledWeight(matrix_normal)
    vector, _, _ = gaussian(3)
    with pytest.raises(ValueError, match=r"needs a layer's weight, got shape \(3,\)"):
        ScaledWeight(vector)


def test_matrix_normal_weight_rejects_bad_shapes():
    loc = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"row_var of shape \(4,\) .* got \(3,\)"):
        MatrixNormalWeight(loc, torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match=r"col_var of shape \(3,\).* got \(4,\) and \(4,\)"):
        MatrixNormalWeight(loc, torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match=r"row_var of shape \(2, 3, 3\)"):
        MatrixNormalWeight(torch.zeros(4, 2, 3, 3), torch.ones(2, 3), torch.ones(4))
    with pytest.raises(ValueError, match="matrix-normal weight of shape"):
        MatrixNormalWeight(torch.zeros(3), torch.ones(()), torch.ones(3))
    # Sample dimensions: row_var and col_var carry the same ones as loc.
    with pytest.raises(ValueError, match="matrix-normal weight of shape"):
        MatrixNormalWeight(torch.zeros(2, 1, 3, 4), torch.ones(4), torch.ones(2, 1, 3))
    with pytest.raises(ValueError, match="matrix-normal weight of shape"):
        MatrixNormalWeight(torch.zeros(2, 1, 3, 4), torch.ones(5, 1, 4), torch.ones(2, 1, 3))
    with pytest.raises(ValueError, match="matrix-normal weight"):
        matrix_normal_linear(torch.ones(2, 4), loc, torch.ones(3), torch.ones(3))


@pytest.mark.parametrize("which", ["input_scale", "output_scale"])
def test_scaled_weight_with_per_example_scale_has_no_sample(which):
    weight, _, _ = gaussian(3, 4)
    size = 4 if which == "input_scale" else 3
    scaled = ScaledWeight(weight, **{which: torch.ones(5, size, dtype=DTYPE)})
    uses = [
        lambda: scaled.sum(),
        lambda: scaled + 1,
        lambda: scaled[0],
        lambda: dist.Normal(0.0, 1.0).log_prob(scaled),
        lambda: scaled.rsample(),
    ]
    for use in uses:
        with pytest.raises(ValueError, match="a weight with a scale per example has no single"):
            use()
    # The layer call is fine.
    assert F.linear(torch.ones(5, 4, dtype=DTYPE), scaled).shape == (5, 3)


@pytest.mark.parametrize("kind", ["input_scale", "output_scale"])
def test_per_example_scale_must_match_the_batch(kind):
    loc = torch.randn(3, 4, dtype=torch.float64)
    gaussian = GaussianWeight(loc, variance=torch.full_like(loc, 0.1))
    size = 4 if kind == "input_scale" else 3
    weight = ScaledWeight(gaussian, **{kind: torch.rand(5, size, dtype=torch.float64)})
    for x in (torch.randn(1, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)):
        with pytest.raises(ValueError, match=f"{kind} has a row per example \\(5 rows\\)"):
            F.linear(x, weight)
    assert F.linear(torch.randn(5, 4, dtype=torch.float64), weight).shape == (5, 3)
    kernel = torch.randn(3, 4, 2, dtype=torch.float64)
    conv = ScaledWeight(
        GaussianWeight(kernel, variance=torch.full_like(kernel, 0.1)),
        **{kind: torch.rand(5, size, dtype=torch.float64)},
    )
    with pytest.raises(ValueError, match="but the layer's input has 2 examples"):
        F.conv1d(torch.randn(2, 4, 6, dtype=torch.float64), conv)


# ------------------------------------------------------------------ matmul, transposes, one draw


def _gaussian(*shape):
    loc = torch.randn(shape, dtype=torch.float64)
    return GaussianWeight(loc, variance=torch.rand(shape, dtype=torch.float64) + 0.1), loc


@pytest.mark.parametrize("transpose", ["T", "mT", "t", "transpose", "torch.transpose"])
def test_x_matmul_transposed_weight_is_locally_reparameterized(transpose):
    weight, loc = _gaussian(3, 4)
    transposed = {
        "T": lambda w: w.T,
        "mT": lambda w: w.mT,
        "t": lambda w: w.t(),
        "transpose": lambda w: w.transpose(0, 1),
        "torch.transpose": lambda w: torch.transpose(w, 0, 1),
    }[transpose](weight)
    assert type(transposed) is GaussianWeight and transposed.shape == (4, 3)
    torch.testing.assert_close(transposed.loc, loc.T)
    torch.testing.assert_close(transposed.variance, weight.variance.T)
    x = torch.randn(1, 4, dtype=torch.float64).expand(6, 4)
    pyro.set_rng_seed(3)
    out = x @ transposed
    pyro.set_rng_seed(3)
    expected = sampled_linear(x, loc, weight.variance)
    assert type(out) is torch.Tensor
    torch.testing.assert_close(out, expected)
    assert (out[1:] != out[0]).all()  # per-example noise: no shared weight sample
    assert weight._sample is None and transposed._sample is None
    assert torch.matmul(x, transposed).shape == out.shape


def test_a_derived_weight_is_the_same_random_variable():
    # Whichever is materialized first, a transpose or a product shares the source's one draw.
    for first in ("source", "derived"):
        weight, _ = _gaussian(3, 4)
        scale = torch.rand(1, 4, dtype=torch.float64)
        transposed, product = weight.T, weight * scale
        if first == "derived":
            sample_t = transposed.rsample()
            sample_p = product.rsample()
            sample = weight.rsample()
        else:
            sample = weight.rsample()
            sample_t, sample_p = transposed.rsample(), product.rsample()
        torch.testing.assert_close(sample_t, sample.T)
        torch.testing.assert_close(sample_p, sample * scale)
        # After the draw, transformations apply to the sample itself.
        assert type(transposed.T) is torch.Tensor and torch.equal(transposed.T, sample)


def test_gaussian_weight_on_the_left_of_matmul_is_one_sample():
    weight, _ = _gaussian(3, 4)
    x = torch.randn(4, 5, dtype=torch.float64)
    out = weight @ x
    assert type(out) is torch.Tensor
    torch.testing.assert_close(out, weight.rsample() @ x)


def test_matmul_with_sample_dimensions_is_per_sample():
    weight, loc = _gaussian(5, 1, 3, 4)  # (S, 1, out, in)
    x = torch.randn(6, 4, dtype=torch.float64)
    pyro.set_rng_seed(4)
    out = x @ weight.mT
    pyro.set_rng_seed(4)
    expected = sampled_linear(x, loc, weight.variance)
    assert out.shape == (5, 1, 6, 3)
    torch.testing.assert_close(out, expected)


def test_reshapes_keep_the_gaussian_and_its_one_draw():
    weight, loc = _gaussian(3, 4)
    for reshaped, expected in (
        (weight.reshape(12), loc.reshape(12)),
        (torch.reshape(weight, (2, 6)), loc.reshape(2, 6)),
        (weight.view(4, 3), loc.view(4, 3)),
        (weight.unsqueeze(0), loc.unsqueeze(0)),
        (torch.unsqueeze(weight, 1).squeeze(1), loc),
    ):
        assert type(reshaped) is GaussianWeight
        torch.testing.assert_close(reshaped.loc, expected)
    flat = weight.reshape(12)
    torch.testing.assert_close(flat.rsample(), weight.rsample().reshape(12))
    # Reinterpreting the bits needs a sample.
    other, _ = _gaussian(3, 4)
    assert type(other.view(torch.int64)) is torch.Tensor
