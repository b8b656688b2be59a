"""The fused Triton kernel behind :func:`~pyro_bnn.ops.sampled_linear` on CUDA.

The torch reference computes a locally reparameterized linear layer with two matrix products
and a handful of elementwise passes, each writing a ``(batch, out)`` tensor::

    Y = ((X S) mu^T + b_mu) Z + sqrt(((X S)^2 s2^T + b_var) Z^2) eps

The fused kernel (:mod:`~pyro_bnn.ops.triton_sampled_linear`) reads each tile of ``X`` once for
both products, scales and squares it in registers, exponentiates a log-variance on the fly and
draws ``eps`` in its epilogue from a counter-based generator (Philox, keyed by a seed and an
offset), which the backward pass draws again instead of storing it.  It keeps, for the backward
pass, the pre-scale variance ``V`` (and the pre-scale mean ``M`` when ``Z`` needs a gradient),
where the reference keeps the variance, the standard deviation, the noise and the scaled and
squared inputs (and the mean, with an output scale).

:func:`sampled_linear` uses the kernel by itself when :func:`fused_kernel_applies`: CUDA
tensors, Triton installed, no ``noise`` given and the plain layout (a ``(out, in)`` weight, no
sample dimensions; the input's leading dimensions are flattened).  :func:`fused_sampled_linear`
calls it directly (on CPU tensors too, in Triton's interpreter, with ``TRITON_INTERPRET=1`` set
before Triton is imported), with an explicit seed and offset, and :func:`fused_noise` returns
the noise it draws for them, so that tests compare kernel and reference given the same ``eps``.
:func:`fused_kernel` turns the dispatch off for a block (to time or check the reference).

The diagonal matrix-normal layer (:func:`~pyro_bnn.ops.matrix_normal_linear`) does not use the
kernel: its variance ``(X^2 row_var) col_var`` is a matrix-vector product beside the mean's
matrix product, so the second accumulator the kernel exists for has nothing to do there.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import math
from collections.abc import Iterator

import torch
from torch.autograd.function import once_differentiable

_ENABLED = contextvars.ContextVar("pyro_bnn_fused_kernel", default=True)
_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_DISPATCHED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_SEED_BOUND = 2**63
_PLAIN = (torch.Tensor, torch.nn.Parameter)


@contextlib.contextmanager
def fused_kernel(enabled: bool = True) -> Iterator[None]:
    """Let :func:`sampled_linear` use the fused kernel (the default) or not inside a ``with``
    block.  A context variable: restored on exit, even on error, other threads unaffected."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def fused_kernel_enabled() -> bool:
    """Whether :func:`fused_kernel` currently lets :func:`sampled_linear` use the kernel."""
    return _ENABLED.get()


@functools.cache
def triton_installed() -> bool:
    """Whether Triton can be imported, found without importing it."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernels():
    from . import triton_sampled_linear

    return triton_sampled_linear


def fused_kernel_applies(
    x: torch.Tensor,
    weight_mean: torch.Tensor,
    weight_var: torch.Tensor,
    bias_mean: torch.Tensor | None = None,
    bias_var: torch.Tensor | None = None,
    input_scale: torch.Tensor | None = None,
    output_scale: torch.Tensor | None = None,
) -> bool:
    """Whether :func:`sampled_linear` (without ``noise``) runs the fused kernel for these
    arguments: the switch is on, the tensors are CUDA tensors of one float32, bfloat16 or
    float16 type, Triton is installed, no autocast is active, ``torch.compile`` is not tracing
    (it fuses the reference itself), and the layout is the plain one
    (:func:`fused_sampled_linear`'s).  Everything else takes the torch reference."""
    if not (x.is_cuda and _ENABLED.get()):  # first: on CPU nothing else is looked at
        return False
    arguments = (x, weight_mean, weight_var, bias_mean, bias_var, input_scale, output_scale)
    return (
        triton_installed()
        and not torch.is_autocast_enabled("cuda")
        and not torch.compiler.is_compiling()
        and fused_kernel_supports(*arguments)
    )


def fused_kernel_supports(
    x, weight_mean, weight_var, bias_mean=None, bias_var=None, input_scale=None, output_scale=None
) -> bool:
    """The conditions of :func:`fused_kernel_applies` on the arguments themselves, wherever
    they live: plain tensors (or parameters) of one float32, bfloat16 or float16 type on one
    device, in the layout of :func:`fused_sampled_linear`."""
    tensors = [x, weight_mean, weight_var, bias_mean, bias_var, input_scale, output_scale]
    tensors = [t for t in tensors if t is not None]
    return (
        all(type(t) in _PLAIN for t in tensors)  # a subclass keeps its own semantics
        and all(t.device == x.device and t.dtype == x.dtype for t in tensors)
        and x.dtype in _DISPATCHED_DTYPES
        and _layout_problem(x, weight_mean, weight_var, bias_mean, bias_var,
                            input_scale, output_scale) is None
    )  # fmt: skip


def _layout_problem(x, weight_mean, weight_var, bias_mean, bias_var, input_scale, output_scale):
    """What is wrong with the arguments' shapes for the kernel, or ``None``."""
    if x.dim() < 1:
        return f"x must have at least one dimension, got shape {tuple(x.shape)}"
    if weight_mean.dim() != 2:
        return (
            f"weight_mean must have shape (out, in) without sample dimensions, got "
            f"{tuple(weight_mean.shape)}"
        )
    if weight_var.shape != weight_mean.shape:
        return (
            f"weight_mean {tuple(weight_mean.shape)} and its variances "
            f"{tuple(weight_var.shape)} must have the same shape"
        )
    out_features, in_features = weight_mean.shape
    if x.shape[-1] != in_features:
        return (
            f"x has {x.shape[-1]} features (shape {tuple(x.shape)}) but the weight "
            f"{tuple(weight_mean.shape)} takes {in_features}"
        )
    for name, bias in (("bias_mean", bias_mean), ("bias_var", bias_var)):
        if bias is not None and bias.shape != (out_features,):
            return f"{name} must have shape ({out_features},), got {tuple(bias.shape)}"
    if bias_var is not None and bias_mean is None:
        return "bias_var is given without bias_mean"
    lead = x.shape[:-1]
    for name, scale, size in (
        ("input_scale", input_scale, in_features),
        ("output_scale", output_scale, out_features),
    ):
        if scale is not None and _scale_layout(scale, lead, size) is None:
            return (
                f"{name} must have shape ({size},) (one value per unit) or "
                f"{(*lead, size)} (one per example and unit), got {tuple(scale.shape)}"
            )
    return None


def _scale_layout(scale: torch.Tensor, lead: torch.Size, size: int) -> str | None:
    """``"unit"`` for a scale per unit (any leading dimensions of size 1), ``"example"`` for one
    per example and unit, ``None`` for any other shape."""
    if scale.dim() == 0 or scale.shape[-1] != size or scale.dim() > len(lead) + 1:
        return None
    if all(d == 1 for d in scale.shape[:-1]):
        return "unit"
    return "example" if scale.shape == (*lead, size) else None


def _check(x, weight_mean, spread, bias_mean, bias_var, input_scale, output_scale, seed, offset,
           spread_name):  # fmt: skip
    tensors = {
        "x": x,
        "weight_mean": weight_mean,
        spread_name: spread,
        "bias_mean": bias_mean,
        "bias_var": bias_var,
        "input_scale": input_scale,
        "output_scale": output_scale,
    }
    for name, tensor in tensors.items():
        if tensor is not None and not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(tensor).__name__}")
    if x.dtype not in _DTYPES:
        raise TypeError(
            f"the fused kernel takes float32, bfloat16, float16 or float64 inputs, got {x.dtype}"
        )
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if tensor.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {tensor.dtype} but x has {x.dtype}; cast them")
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device} but x is on {x.device}")
    problem = _layout_problem(
        x, weight_mean, spread, bias_mean, bias_var, input_scale, output_scale
    )
    if problem is not None:
        raise ValueError(problem)
    for name, value, low in (("seed", seed, 0), ("offset", offset, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < _SEED_BOUND:
            raise ValueError(f"{name} must be an integer in [0, 2**63), got {value!r}")


def fused_sampled_linear(
    x: torch.Tensor,
    weight_mean: torch.Tensor,
    weight_var: torch.Tensor | None = None,
    bias_mean: torch.Tensor | None = None,
    bias_var: torch.Tensor | None = None,
    input_scale: torch.Tensor | None = None,
    *,
    output_scale: torch.Tensor | None = None,
    scale_variance: bool = True,
    weight_log_var: torch.Tensor | None = None,
    seed: int | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """:func:`~pyro_bnn.ops.sampled_linear` by the fused Triton kernel, forward and backward.

    The result is ``sampled_linear(..., noise=fused_noise(B, out, seed, offset))`` with ``B``
    the number of examples (``x``'s leading dimensions flattened), computed with float32
    accumulation (float64 for float64 inputs).

    :param x: inputs, shape ``(..., in)``.
    :param weight_mean: posterior means, shape ``(out, in)``.
    :param weight_var: posterior variances, shape ``(out, in)``; or give ``weight_log_var``.
    :param bias_mean: optional, shape ``(out,)``.
    :param bias_var: optional, shape ``(out,)``; needs ``bias_mean``.
    :param input_scale: optional, shape ``(in,)`` or ``(..., in)`` like ``x``.
    :param output_scale: optional, shape ``(out,)`` or ``(..., out)`` like the output.
    :param scale_variance: as in :func:`~pyro_bnn.ops.sampled_linear`.
    :param weight_log_var: the log-variances instead of ``weight_var`` (a guide's parameters
        as they are): exponentiated inside the kernel, and their gradient is
        ``d/d var * var``.
    :param seed: the generator's key, an integer in ``[0, 2**63)``; by default drawn from
        torch's (CPU) generator, so ``torch.manual_seed`` makes a run repeatable.
    :param offset: the index of the first draw: example ``b``'s output ``n`` uses draw
        ``offset + b * out + n`` of the seed's stream.
    :returns: a sample of the pre-activation, shape ``(..., out)``, in ``x``'s dtype.
    :raises ValueError, TypeError: for inconsistent arguments, before any work.
    :raises RuntimeError: for CPU tensors outside Triton's interpreter.
    """
    if (weight_var is None) == (weight_log_var is None):
        raise ValueError("give exactly one of weight_var and weight_log_var")
    log_variance = weight_log_var is not None
    spread = weight_log_var if log_variance else weight_var
    spread_name = "weight_log_var" if log_variance else "weight_var"
    _check(
        x, weight_mean, spread, bias_mean, bias_var, input_scale, output_scale,
        0 if seed is None else seed, offset, spread_name,
    )  # fmt: skip
    if not x.is_cuda and not _kernels().INTERPRETING:
        raise RuntimeError(
            "the fused kernel runs on CUDA tensors, or on CPU tensors in Triton's interpreter "
            "(set TRITON_INTERPRET=1 before Triton is first imported)"
        )
    if seed is None:
        # Below 2**31: Triton compiles one variant for 32-bit seeds and one for 64-bit ones.
        seed = int(torch.randint(2**31 - 1, ()).item())
    lead, (out_features, in_features) = x.shape[:-1], weight_mean.shape
    examples = math.prod(lead)
    rows = x.reshape(examples, in_features)
    scales = []
    for scale, size in ((input_scale, in_features), (output_scale, out_features)):
        if scale is not None:
            unit = _scale_layout(scale, lead, size) == "unit"
            scale = scale.reshape(size) if unit else scale.reshape(examples, size)
        scales.append(scale)
    if examples == 0 or out_features == 0:
        from .sampled_linear import sampled_linear  # nothing to compute: no kernel to launch

        variance = spread.exp() if log_variance else spread
        empty = x.new_zeros(*lead, out_features)
        return sampled_linear(
            x, weight_mean, variance, bias_mean, bias_var, input_scale, empty,
            output_scale=output_scale, scale_variance=scale_variance,
        )  # fmt: skip
    out = _FusedSampledLinear.apply(
        rows, weight_mean, spread, bias_mean, bias_var, *scales,
        scale_variance, log_variance, seed, offset,
    )  # fmt: skip
    return out.reshape(*lead, out_features)


def fused_noise(
    rows: int, cols: int, seed: int, offset: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """The standard-normal draws ``eps`` of shape ``(rows, cols)``, float32, that the fused
    kernel uses for ``rows`` examples, ``cols`` outputs and this seed and offset."""
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    for name, value in (("seed", seed), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _SEED_BOUND:
            raise ValueError(f"{name} must be an integer in [0, 2**63), got {value!r}")
    device = torch.device("cpu" if device is None else device)
    if device.type != "cuda" and not _kernels().INTERPRETING:
        raise RuntimeError(
            "the fused kernel's noise is drawn on CUDA, or on the CPU in Triton's interpreter "
            "(set TRITON_INTERPRET=1 before Triton is first imported)"
        )
    return _kernels().noise(rows, cols, seed, offset, device)


class _FusedSampledLinear(torch.autograd.Function):
    """The kernels as one differentiable op on 2-d inputs (see :func:`fused_sampled_linear`)."""

    @staticmethod
    def forward(
        ctx, x, weight_mean, spread, bias_mean, bias_var, input_scale, output_scale,
        scale_variance, log_variance, seed, offset,
    ):  # fmt: skip
        needs = ctx.needs_input_grad[:7]
        out, mean, variance = _kernels().forward(
            x, weight_mean, spread, bias_mean, bias_var, input_scale, output_scale,
            scale_variance=scale_variance, log_variance=log_variance, seed=seed, offset=offset,
            save_mean=needs[6], save_variance=any(needs),
        )  # fmt: skip
        ctx.save_for_backward(x, weight_mean, spread, input_scale, output_scale, mean, variance)
        ctx.options = {
            "scale_variance": scale_variance,
            "log_variance": log_variance,
            "seed": seed,
            "offset": offset,
        }
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight_mean, spread, input_scale, output_scale, mean, variance = ctx.saved_tensors
        grads = _kernels().backward(
            grad, x, weight_mean, spread, input_scale, output_scale, mean, variance,
            needs=tuple(ctx.needs_input_grad[:7]), **ctx.options,
        )  # fmt: skip
        return (*grads, None, None, None, None)
