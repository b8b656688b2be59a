"""The fused Triton kernel against the torch reference, given the same noise.

Without CUDA the kernels run in Triton's interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``), which is slow: the shapes are small, but chosen to span several tiles
of the interpreter's config (32 x 32 x 16) in every dimension, with ragged edges.  The reference
is :func:`sampled_linear` with ``noise=fused_noise(...)``, evaluated in float64 from the same
(rounded) inputs; tolerances depend on the kernel's dtype.
"""

import itertools
import math
import subprocess
import sys

import pytest
import torch
from torch.autograd import gradcheck

from pyro_bnn.ops import (
    GaussianWeight,
    fused_kernel,
    fused_kernel_applies,
    fused_kernel_enabled,
    fused_linear,
    fused_noise,
    fused_sampled_linear,
    sampled_linear,
)

# (pyro_bnn.ops.sampled_linear is the function; its module is looked up by name.)
reference_module = sys.modules["pyro_bnn.ops.sampled_linear"]

pytest.importorskip("triton")

from pyro_bnn.ops import triton_sampled_linear as kernels  # noqa: E402 (after the skip)

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() or kernels.INTERPRETING),
    reason="no CUDA and Triton's interpreter is off",
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}
NAMES = ("x", "weight_mean", "spread", "bias_mean", "bias_var", "input_scale", "output_scale")
NUM_SE = 5.0


def signed_uniform(*shape, low=0.5, high=1.5):
    """Values of either sign with magnitudes in [low, high]: no variance is near zero."""
    magnitude = torch.empty(shape, dtype=torch.float64).uniform_(low, high)
    return torch.where(torch.rand(shape) < 0.5, -magnitude, magnitude)


def make_inputs(
    rows,
    inputs,
    outputs,
    dtype=torch.float32,
    input_scale=None,
    bias=None,
    output_scale=None,
    log_variance=False,
):
    """The op's tensors, in ``dtype``, requiring gradients; ``None`` for options not taken.
    A scale is ``"example"`` (one per example and unit) or ``"unit"``."""
    variance = torch.empty(outputs, inputs, dtype=torch.float64).uniform_(0.2, 1.0)
    values = {
        "x": signed_uniform(rows, inputs),
        "weight_mean": torch.randn(outputs, inputs, dtype=torch.float64),
        "spread": variance.log() if log_variance else variance,
        "bias_mean": None if bias is None else torch.randn(outputs, dtype=torch.float64),
        "bias_var": None,
        "input_scale": None,
        "output_scale": None,
    }
    if bias == "gaussian":
        values["bias_var"] = torch.empty(outputs, dtype=torch.float64).uniform_(0.2, 1.0)
    for name, kind, size in (
        ("input_scale", input_scale, inputs),
        ("output_scale", output_scale, outputs),
    ):
        if kind is not None:
            values[name] = signed_uniform(*((rows, size) if kind == "example" else (size,)))
    return {
        name: None if value is None else value.to(DEVICE, dtype).requires_grad_()
        for name, value in values.items()
    }


def kernel_call(values, log_variance, scale_variance=True, **kwargs):
    spread = {"weight_log_var" if log_variance else "weight_var": values["spread"]}
    return fused_sampled_linear(
        values["x"],
        values["weight_mean"],
        bias_mean=values["bias_mean"],
        bias_var=values["bias_var"],
        input_scale=values["input_scale"],
        output_scale=values["output_scale"],
        scale_variance=scale_variance,
        **spread,
        **kwargs,
    )


def reference_call(values, log_variance, noise, scale_variance=True):
    spread = values["spread"]
    return sampled_linear(
        values["x"],
        values["weight_mean"],
        spread.exp() if log_variance else spread,
        values["bias_mean"],
        values["bias_var"],
        values["input_scale"],
        noise,
        output_scale=values["output_scale"],
        scale_variance=scale_variance,
    )


def outputs_and_gradients(call, values, grad):
    leaves = [v for v in values.values() if v is not None]
    out = call(values)
    return out, torch.autograd.grad(out, leaves, grad)


def assert_matches(actual, expected, dtype, what=""):
    tol = TOLERANCE[dtype]
    scale = expected.detach().abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.detach().double().cpu(),
        expected.detach().double().cpu(),
        rtol=tol,
        atol=tol * max(scale, 1e-30),
        msg=lambda message: f"{what}: {message}",
    )


def check_against_reference(values, dtype, log_variance, scale_variance, seed=7, offset=11):
    """Output and every gradient of the kernel against the float64 reference."""
    rows, outputs = values["x"].shape[0], values["weight_mean"].shape[0]
    grad = torch.randn(rows, outputs, dtype=torch.float64).to(DEVICE, dtype)
    actual = outputs_and_gradients(
        lambda v: kernel_call(v, log_variance, scale_variance, seed=seed, offset=offset),
        values,
        grad,
    )
    wide = {
        name: None if v is None else v.detach().double().requires_grad_()
        for name, v in values.items()
    }
    noise = fused_noise(rows, outputs, seed, offset, device=DEVICE).double()
    expected = outputs_and_gradients(
        lambda v: reference_call(v, log_variance, noise, scale_variance), wide, grad.double()
    )
    names = [name for name, v in values.items() if v is not None]
    assert actual[0].dtype == dtype and actual[0].shape == expected[0].shape
    assert_matches(actual[0], expected[0], dtype, "output")
    for name, a, e in zip(names, actual[1], expected[1], strict=True):
        assert a.dtype == dtype and a.shape == e.shape, name
        assert_matches(a, e, dtype, f"gradient of {name}")


# ------------------------------------------------------------------------ against the reference


OPTIONS = list(
    itertools.product(
        [None, "example", "unit"],  # input scale
        [None, "fixed", "gaussian"],  # bias
        [None, "example", "unit"],  # output scale
        [True, False],  # scale_variance
        [False, True],  # log-variance
    )
)


@pytest.mark.parametrize(
    "input_scale, bias, output_scale, scale_variance, log_variance",
    OPTIONS,
    ids=["-".join(map(str, option)) for option in OPTIONS],
)
def test_every_option_matches_reference(
    input_scale, bias, output_scale, scale_variance, log_variance
):
    values = make_inputs(5, 7, 3, torch.float32, input_scale, bias, output_scale, log_variance)
    check_against_reference(values, torch.float32, log_variance, scale_variance)


SHAPES = [(1, 1, 1), (5, 7, 3), (33, 17, 65)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("options", ["plain", "all-per-example", "all-per-unit-mean-only"])
def test_dtypes_and_shapes_match_reference(dtype, shape, options):
    if options == "plain":
        values = make_inputs(*shape, dtype)
        check_against_reference(values, dtype, log_variance=False, scale_variance=True)
        return
    per_example = options == "all-per-example"
    kind, other = ("example", "unit") if per_example else ("unit", "example")
    values = make_inputs(*shape, dtype, kind, "gaussian", other, log_variance=per_example)
    check_against_reference(values, dtype, log_variance=per_example, scale_variance=per_example)


@pytest.mark.parametrize("scale_variance", [True, False])
def test_gradcheck_in_float64(scale_variance):
    values = make_inputs(3, 4, 2, torch.float64, "example", "gaussian", "unit", True)
    names = [name for name, v in values.items() if v is not None]

    def function(*tensors):
        return kernel_call(dict(zip(names, tensors, strict=True)), True, scale_variance, seed=3)

    assert gradcheck(function, tuple(values[name] for name in names))


# --------------------------------------------------------------------------- layouts and edges


def test_non_contiguous_inputs_and_broadcast_gradient():
    rows, inputs, outputs = 6, 5, 4
    x = signed_uniform(inputs, rows).T  # transposed: strides (1, rows)
    weight_mean = torch.randn(inputs, outputs, dtype=torch.float64).T
    weight_var = torch.empty(outputs, 2 * inputs, dtype=torch.float64).uniform_(0.2, 1)[:, ::2]
    bias_mean = torch.randn(2 * outputs, dtype=torch.float64)[::2]
    bias_var = torch.empty(3 * outputs, dtype=torch.float64).uniform_(0.2, 1)[1::3]
    input_scale = signed_uniform(rows, 2 * inputs)[:, 1::2]
    output_scale = signed_uniform(1, outputs).expand(rows, outputs)  # a row stride of 0
    tensors = [x, weight_mean, weight_var, bias_mean, bias_var, input_scale, output_scale]
    assert not any(t.is_contiguous() for t in tensors)
    values = dict(zip(NAMES, tensors, strict=True))
    values = {name: v.to(DEVICE, torch.float32).requires_grad_() for name, v in values.items()}
    check_against_reference(values, torch.float32, log_variance=False, scale_variance=True)

    # y.sum() sends back a gradient expanded from one number: a stride of 0 in both dims.
    out = kernel_call(values, False, seed=5)
    (grad_x,) = torch.autograd.grad(out.sum(), values["x"])
    out = kernel_call(values, False, seed=5)
    (expected,) = torch.autograd.grad(out, values["x"], torch.ones_like(out))
    torch.testing.assert_close(grad_x, expected)


def test_leading_dimensions_are_flattened():
    values = make_inputs(6, 5, 4, torch.float32, "example", "gaussian", "example")
    shaped = dict(values)
    for name in ("x", "input_scale", "output_scale"):
        shaped[name] = values[name].reshape(2, 3, -1)
    flat = kernel_call(values, False, seed=9, offset=4)
    out = kernel_call(shaped, False, seed=9, offset=4)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out.reshape(6, 4), flat, rtol=0, atol=0)
    # One example without a batch dimension.
    single = {**values, "input_scale": None, "output_scale": None}
    one = kernel_call({**single, "x": values["x"][0]}, False, seed=9)
    assert one.shape == (4,)
    first = kernel_call({**single, "x": values["x"][:1]}, False, seed=9)[0]
    torch.testing.assert_close(one, first, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_clamped_variance_has_zero_gradient_like_the_reference(dtype):
    # A dead row of inputs and no bias variance: the variance is exactly zero, clamped at the
    # dtype's smallest normal number, and sends back no gradient (not inf * 0 = NaN).
    values = make_inputs(3, 4, 2, dtype, bias="fixed")
    with torch.no_grad():
        values["x"][1] = 0
    grad = torch.ones(3, 2, dtype=dtype, device=DEVICE)
    actual = outputs_and_gradients(lambda v: kernel_call(v, False, seed=2), values, grad)
    noise = fused_noise(3, 2, 2, device=DEVICE).to(dtype)
    expected = outputs_and_gradients(lambda v: reference_call(v, False, noise), values, grad)
    for a, e in zip([actual[0], *actual[1]], [expected[0], *expected[1]], strict=True):
        assert torch.isfinite(a).all()
        assert_matches(a, e, dtype)


@pytest.mark.parametrize("log_variance", [False, True])
def test_weight_gradients_summed_over_parts_of_the_batch(monkeypatch, log_variance):
    # What a small layer with a long batch does on a GPU with many processors: here three
    # parts of 32 rows, the last one empty.
    monkeypatch.setattr(kernels, "_batch_splits", lambda *args: 3)
    values = make_inputs(33, 17, 65, torch.float32, "unit", "gaussian", "example", log_variance)
    check_against_reference(values, torch.float32, log_variance, scale_variance=True)


def test_empty_batch_and_no_inputs():
    values = make_inputs(0, 3, 2, torch.float32, bias="gaussian")
    assert kernel_call(values, False, seed=0).shape == (0, 2)
    values = make_inputs(4, 0, 2, torch.float32, "example", "gaussian", "unit")
    check_against_reference(values, torch.float32, log_variance=False, scale_variance=True)


def test_saves_only_the_variance_and_the_mean_when_the_output_scale_learns():
    def saved_outputs(values):
        inputs = {v.data_ptr() for v in values.values() if v is not None}
        new = []

        def pack(tensor):
            if tensor.data_ptr() not in inputs:
                new.append(tuple(tensor.shape))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            kernel_call(values, False, seed=1)
        return new

    values = make_inputs(6, 5, 4, torch.float32, "example", "gaussian")
    assert saved_outputs(values) == [(6, 4)]
    values = make_inputs(6, 5, 4, torch.float32, "example", "gaussian", "example")
    assert saved_outputs(values) == [(6, 4), (6, 4)]


# -------------------------------------------------------------------------------------- noise


def test_noise_is_one_stream_per_seed_read_row_by_row():
    first = fused_noise(4, 3, seed=12, device=DEVICE)
    assert first.dtype == torch.float32 and first.shape == (4, 3)
    torch.testing.assert_close(fused_noise(4, 3, seed=12, device=DEVICE), first, rtol=0, atol=0)
    # offset + row * cols + col: an offset of one row shifts the stream by a row.
    shifted = fused_noise(3, 3, seed=12, offset=3, device=DEVICE)
    torch.testing.assert_close(shifted, first[1:], rtol=0, atol=0)
    assert (fused_noise(4, 3, seed=13, device=DEVICE) != first).all()
    assert fused_noise(0, 3, seed=1, device=DEVICE).shape == (0, 3)


def test_output_is_reproducible_and_depends_on_seed_and_offset():
    values = make_inputs(5, 7, 3, torch.float32, "example", "gaussian", "unit")
    out = kernel_call(values, False, seed=4, offset=2)
    torch.testing.assert_close(kernel_call(values, False, seed=4, offset=2), out, rtol=0, atol=0)
    assert (kernel_call(values, False, seed=5, offset=2) != out).all()
    assert (kernel_call(values, False, seed=4, offset=3) != out).all()
    # By default the seed comes from torch's generator.
    torch.manual_seed(3)
    first = kernel_call(values, False)
    second = kernel_call(values, False)
    torch.manual_seed(3)
    torch.testing.assert_close(kernel_call(values, False), first, rtol=0, atol=0)
    assert (second != first).all()


def test_noise_is_standard_normal_without_neighbour_correlation():
    # One draw of 256 x 256 from a fixed seed: deterministic, so it cannot flake; every bound
    # is NUM_SE standard errors of its estimate under independent N(0, 1) draws.
    eps = fused_noise(256, 256, seed=2024, device=DEVICE).double().cpu()
    n = eps.numel()
    assert abs(eps.mean()) <= NUM_SE / math.sqrt(n)
    assert abs(eps.var() - 1) <= NUM_SE * math.sqrt(2 / n)
    assert abs((eps**4).mean() - 3) <= NUM_SE * math.sqrt(96 / n)  # E x^8 - (E x^4)^2 = 96
    pairs = {
        "row neighbours": (eps[:, :-1], eps[:, 1:]),
        "column neighbours": (eps[:-1], eps[1:]),
        "another seed": (eps, fused_noise(256, 256, seed=2025, device=DEVICE).double().cpu()),
    }
    for name, (a, b) in pairs.items():
        correlation = (a * b).mean()  # E[ab] = 0, Var[ab] = 1 for independent N(0, 1)
        assert abs(correlation) <= NUM_SE / math.sqrt(a.numel()), name


# ------------------------------------------------------------------------------- bad input


BAD = {
    "var and log-var": (dict(weight_log_var="mean"), ValueError, "exactly one"),
    "neither variance": (dict(weight_var=None), ValueError, "exactly one"),
    "wrong inputs": (dict(x=torch.zeros(2, 4)), ValueError, "takes 3"),
    "variance shape": (dict(weight_var=torch.ones(3, 2)), ValueError, "same shape"),
    "sample dimensions": (
        dict(weight_mean=torch.zeros(2, 2, 3), weight_var=torch.ones(2, 2, 3)),
        ValueError,
        "without sample dimensions",
    ),
    "bias_var without mean": (dict(bias_var=torch.ones(2)), ValueError, "without bias_mean"),
    "bias shape": (dict(bias_mean=torch.zeros(3)), ValueError, r"bias_mean must have shape \(2,\)"),
    "input_scale shape": (dict(input_scale=torch.ones(4, 1)), ValueError, "input_scale must"),
    "output_scale shape": (dict(output_scale=torch.ones(5, 2)), ValueError, "output_scale must"),
    "mixed dtypes": (dict(weight_var=torch.ones(2, 3, dtype=torch.float64)), TypeError, "dtype"),
    "integer x": (dict(x=torch.zeros(4, 3, dtype=torch.int64)), TypeError, "float32"),
    "not a tensor": (dict(bias_mean=[0.0, 0.0]), TypeError, "bias_mean must be a tensor"),
    "negative seed": (dict(seed=-1), ValueError, "seed must be"),
    "float offset": (dict(offset=0.5), ValueError, "offset must be"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_refused_before_any_work(case, monkeypatch):
    changes, error, message = BAD[case]

    def launched(*args, **kwargs):
        raise AssertionError("a kernel ran")

    monkeypatch.setattr(kernels, "forward", launched)
    arguments = dict(
        x=torch.zeros(4, 3), weight_mean=torch.zeros(2, 3), weight_var=torch.ones(2, 3)
    )
    arguments.update(changes)
    if arguments.get("weight_log_var") == "mean":
        arguments["weight_log_var"] = arguments["weight_mean"]
    state = torch.get_rng_state()
    with pytest.raises(error, match=message):
        fused_sampled_linear(**arguments)
    assert torch.equal(torch.get_rng_state(), state)  # no seed drawn


def test_bad_noise_request_is_refused():
    with pytest.raises(ValueError, match="rows must be"):
        fused_noise(-1, 2, seed=0)
    with pytest.raises(ValueError, match="seed must be"):
        fused_noise(2, 2, seed=2**63)


# -------------------------------------------------------------------------------- dispatch


def test_dispatch_conditions():
    x, mean, var = torch.randn(4, 3), torch.randn(2, 3), torch.rand(2, 3)
    assert not fused_kernel_applies(x, mean, var)  # CPU tensors never take the kernel
    fusable = fused_linear.fused_kernel_supports
    assert fusable(x, mean, var, torch.randn(2), torch.rand(2), torch.rand(3), torch.rand(4, 2))
    assert fusable(x, torch.nn.Parameter(mean), var, output_scale=torch.rand(1, 2))
    assert fusable(x.bfloat16(), mean.bfloat16(), var.bfloat16())
    assert not fusable(x.double(), mean.double(), var.double())  # float64: the reference
    assert not fusable(x, mean.double(), var)
    assert not fusable(x, mean.expand(5, 2, 3), var.expand(5, 2, 3))  # sample dimensions
    assert not fusable(x, mean, var, input_scale=torch.rand(4, 1))  # one scale per example
    assert not fusable(x, GaussianWeight(mean, variance=var), var)  # a tensor subclass
    assert not fusable(x, mean, var, bias_var=torch.rand(2))
    assert fused_kernel_enabled()
    with fused_kernel(False):
        assert not fused_kernel_enabled()
    assert fused_kernel_enabled()


def test_sampled_linear_runs_the_kernel_where_it_applies(monkeypatch):
    monkeypatch.setattr(reference_module, "fused_kernel_applies", lambda *args: True)
    values = make_inputs(5, 7, 3, torch.float32, "unit", "gaussian", "example")
    arguments = [values[name] for name in NAMES[:6]]
    options = dict(output_scale=values["output_scale"], scale_variance=False)
    torch.manual_seed(8)
    dispatched = sampled_linear(*arguments, **options)
    torch.manual_seed(8)
    direct = fused_sampled_linear(*arguments, **options)
    torch.testing.assert_close(dispatched, direct, rtol=0, atol=0)
    noise = torch.zeros(5, 3)  # given noise always takes the reference
    reference = sampled_linear(*arguments, noise, **options)
    torch.testing.assert_close(reference, reference_call(values, False, noise, False))


def test_cpu_calls_never_import_triton():
    code = (
        "import sys, torch, pyro_bnn, pyro_bnn.guides, pyro_bnn.models\n"
        "from pyro_bnn.ops import sampled_linear, fused_kernel_applies\n"
        "x, m, v = torch.randn(4, 3), torch.randn(2, 3), torch.rand(2, 3)\n"
        "assert sampled_linear(x, m, v).shape == (4, 2)\n"
        "assert not fused_kernel_applies(x, m, v)\n"
        "assert sys.modules.get('triton') is None, 'triton was imported'\n"
    )
    for block in ("", "sys.modules['triton'] = None  # as if not installed\n"):
        result = subprocess.run(
            [sys.executable, "-c", "import sys\n" + block + code], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
