"""Triton kernels for the hot path: :func:`~pyro_bnn.ops.sampled_linear` in one pass.

The only module of the package that imports Triton; :mod:`pyro_bnn.ops.fused_linear`
imports it on first use, so a machine without Triton or CUDA never does.

With ``X`` of shape ``(B, K)``, weight means ``mu`` and variances ``s2`` of shape ``(N, K)``
(the ``nn.Linear`` layout), an input scale ``S`` (``(B, K)`` or ``(K,)``), an output scale
``Z`` (``(B, N)`` or ``(N,)``) and a bias with mean ``b_mu`` and variance ``b_var``::

    M = (X S) mu^T + b_mu                    (B, N), pre-scale mean
    V = (X S)^2 s2^T + b_var                 (B, N), pre-scale variance (X for X S without
                                             scale_variance)
    Y = M Z + sqrt(max(V Z^2, tiny)) eps     (Z^2 dropped without scale_variance)

``eps[b, n]`` is ``tl.randn(seed, offset + b * N + n)``: a counter-based (Philox) draw that the
backward pass regenerates, so no ``(B, N)`` noise tensor is ever stored.

Kernels:

- :func:`_forward`: one pass over each ``X`` tile feeds both accumulators, ``(X S) mu^T`` and
  ``(X S)^2 s2^T``; ``X S`` and its square are formed in registers, a log-variance is
  exponentiated on the fly, and the epilogue adds the bias, applies ``Z``, draws ``eps`` and
  writes ``Y`` (and, for the backward pass, ``V``, plus ``M`` when ``Z`` needs a gradient).
- :func:`_output_gradients`: from ``dY`` the gradients of ``M`` and ``V``
  (``g_m = dY Z``, ``g_v = dY eps / (2 std) Z^2``, zero where the variance is clamped), of ``Z``
  and, summed over rows per tile, of the bias.
- :func:`_input_gradients`: ``g_m mu`` and ``g_v s2`` in one loop over ``N`` (two
  accumulators sharing the tile of ``g``'s rows), then ``dX`` and ``dS`` in the epilogue.
- :func:`_weight_gradients`: ``g_m^T (X S)`` and ``g_v^T (X S)^2`` in one loop over ``B``
  (sharing the ``X`` tile), i.e. ``dmu`` and ``ds2`` (``ds2 * s2`` for a log-variance); for a
  small layer and a long batch, split over ranges of rows whose parts are summed after.
- :func:`_noise`: the ``eps`` the other kernels draw, for tests and checks.

Accumulation is in float32 (float64 for float64 inputs); float32 products use TF32 only where
torch's own float32 matrix products may (``torch.backends.cuda.matmul.fp32_precision``, or
``allow_tf32``).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
import triton
import triton.language as tl

# Triton reads TRITON_INTERPRET when a kernel is decorated: from here on, kernels either run in
# the interpreter (CPU tensors, for tests) or compile for the GPU.
if hasattr(triton, "knobs"):
    INTERPRETING = bool(triton.knobs.runtime.interpret)
else:  # Triton before its knobs module read the variable itself
    INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"

_COMPUTE_TYPES = {torch.float64: tl.float64}  # everything else accumulates in float32


def _configs() -> list[triton.Config]:
    """Tile shapes: ``BLOCK_M`` rows of the batch, ``BLOCK_N`` outputs, ``BLOCK_K`` inputs."""

    def config(m, n, k, warps, stages):
        return triton.Config(
            {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8},
            num_warps=warps,
            num_stages=stages,
        )

    if INTERPRETING:
        # One config (the autotuner then runs nothing twice), small enough that the tests'
        # shapes span several tiles in every dimension and loop more than once over K.
        return [config(32, 32, 16, 4, 1)]
    # For the H100 / H200 class.  Two float32 accumulators per tile double the registers of a
    # plain GEMM, hence 8 warps for 128 x 128 tiles; 64 x 64 is the fallback that fits anywhere.
    return [
        config(128, 128, 32, 8, 3),
        config(128, 64, 32, 4, 4),
        config(64, 128, 32, 4, 4),
        config(128, 128, 64, 8, 3),
        config(32, 64, 64, 4, 4),
        config(64, 64, 32, 4, 3),
    ]


CONFIGS = _configs()
#: Below this many multiply-adds (B * N * K) the fallback tile runs untuned: tuning would compile
#: every config of every kernel variant for a product that takes microseconds anyway.
SMALL_PROBLEM = 2**22


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    if named_args["B"] * named_args["N"] * named_args["K"] < SMALL_PROBLEM:
        return configs[-1:]
    return configs


_TUNING = {
    "configs": CONFIGS,
    "key": ["B", "N", "K"],
    "prune_configs_by": {"early_config_prune": _prune},
}
# A per-input scale's gradient is summed over rows tile by tile into a (tiles, K) buffer, whose
# size must not depend on the config the autotuner picks: the smallest tile has the most rows.
_MIN_BLOCK_M = min(c.kwargs["BLOCK_M"] for c in CONFIGS)
_ELEMENTWISE_BLOCK = 32 if INTERPRETING else 64


@triton.jit
def _tile(pid, rows, cols, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, GROUP: tl.constexpr):
    """Program ``pid``'s tile ``(r, c)``, ordered by groups of ``GROUP`` tile rows so that
    neighbouring programs share operand tiles in L2."""
    tiles_r = tl.cdiv(rows, BLOCK_R)
    tiles_c = tl.cdiv(cols, BLOCK_C)
    per_group = GROUP * tiles_c
    first = (pid // per_group) * GROUP
    size = tl.minimum(tiles_r - first, GROUP)
    within = pid % per_group
    return first + within % size, within // size


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:
        # Triton's interpreter multiplies bfloat16 operands as their raw 16-bit patterns: it
        # gets them as float32 instead, the same values, summed in float32 as on the GPU.
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=acc.dtype)


@triton.jit
def _times(a, b, COMPUTE: tl.constexpr):
    """``a * b`` rounded to ``a``'s type, as torch computes it in that type."""
    return (a.to(COMPUTE) * b.to(COMPUTE)).to(a.dtype)


@triton.jit
def _variance(tile, LOG_VARIANCE: tl.constexpr, COMPUTE: tl.constexpr):
    """A tile of variances, from the log-variances when those are what the caller has."""
    if LOG_VARIANCE:
        return tl.exp(tile.to(COMPUTE)).to(tile.dtype)
    return tile


@triton.jit
def _standard_deviation(variance, TINY: tl.constexpr):
    # As the torch reference: clamped at the smallest normal number of the inputs' type, where
    # the gradient is exactly zero instead of inf * 0; rounded as torch rounds (tl.sqrt is an
    # approximation in float32, exact in float64, where sqrt_rn does not exist).
    if variance.dtype == tl.float64:
        return tl.sqrt(tl.maximum(variance, TINY))
    return tl.sqrt_rn(tl.maximum(variance, TINY))


@triton.autotune(**_TUNING)
@triton.jit(do_not_specialize=["seed", "offset"])
def _forward(
    X, S, MU, VAR, BIAS_MEAN, BIAS_VAR, Z, OUT, SAVED_MEAN, SAVED_VAR,
    B, N, K,
    stride_xb, stride_xk, stride_sb, stride_sk,
    stride_mun, stride_muk, stride_vn, stride_vk,
    stride_bm, stride_bv, stride_zb, stride_zn,
    seed, offset,
    HAS_S: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS_MEAN: tl.constexpr, HAS_BIAS_VAR: tl.constexpr,
    SCALE_VARIANCE: tl.constexpr, LOG_VARIANCE: tl.constexpr,
    SAVE_MEAN: tl.constexpr, SAVE_VAR: tl.constexpr,
    TINY: tl.constexpr, COMPUTE: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """``Y`` (and ``V``, ``M`` for the backward pass) for one ``(BLOCK_M, BLOCK_N)`` tile."""
    pid_m, pid_n = _tile(tl.program_id(0), B, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    ks = tl.arange(0, BLOCK_K)
    row_in, col_in = rows < B, cols < N
    x_ptrs = X + rows[:, None] * stride_xb + ks[None, :] * stride_xk
    if HAS_S:
        s_ptrs = S + rows[:, None] * stride_sb + ks[None, :] * stride_sk
    # The weights read as (K, N) tiles: mu^T without a transposed copy.
    mu_ptrs = MU + ks[:, None] * stride_muk + cols[None, :] * stride_mun
    var_ptrs = VAR + ks[:, None] * stride_vk + cols[None, :] * stride_vn
    mean = tl.zeros((BLOCK_M, BLOCK_N), dtype=COMPUTE)
    variance = tl.zeros((BLOCK_M, BLOCK_N), dtype=COMPUTE)
    for start in range(0, K, BLOCK_K):
        k_in = (start + ks) < K
        x_mask = row_in[:, None] & k_in[None, :]
        w_mask = k_in[:, None] & col_in[None, :]
        x = tl.load(x_ptrs, mask=x_mask, other=0.0)
        scaled = x
        if HAS_S:
            scaled = _times(x, tl.load(s_ptrs, mask=x_mask, other=0.0), COMPUTE)
        if SCALE_VARIANCE:
            squared = _times(scaled, scaled, COMPUTE)
        else:
            squared = _times(x, x, COMPUTE)
        mu = tl.load(mu_ptrs, mask=w_mask, other=0.0)
        var = _variance(tl.load(var_ptrs, mask=w_mask, other=0.0), LOG_VARIANCE, COMPUTE)
        mean = _dot(scaled, mu, mean, PRECISION, UPCAST)
        variance = _dot(squared, var, variance, PRECISION, UPCAST)
        x_ptrs += BLOCK_K * stride_xk
        if HAS_S:
            s_ptrs += BLOCK_K * stride_sk
        mu_ptrs += BLOCK_K * stride_muk
        var_ptrs += BLOCK_K * stride_vk

    if HAS_BIAS_MEAN:
        bias_mean = tl.load(BIAS_MEAN + cols * stride_bm, mask=col_in, other=0.0)
        mean += bias_mean.to(COMPUTE)[None, :]
    if HAS_BIAS_VAR:
        bias_var = tl.load(BIAS_VAR + cols * stride_bv, mask=col_in, other=0.0)
        variance += bias_var.to(COMPUTE)[None, :]
    out_mask = row_in[:, None] & col_in[None, :]
    flat = rows[:, None] * N + cols[None, :]  # the saved buffers are contiguous (B, N)
    if SAVE_MEAN:
        tl.store(SAVED_MEAN + flat, mean, mask=out_mask)
    if SAVE_VAR:
        tl.store(SAVED_VAR + flat, variance, mask=out_mask)
    if HAS_Z:
        z_ptrs = Z + rows[:, None] * stride_zb + cols[None, :] * stride_zn
        z = tl.load(z_ptrs, mask=out_mask, other=0.0).to(COMPUTE)
        mean = mean * z
        if SCALE_VARIANCE:
            variance = variance * (z * z)
    eps = tl.randn(seed, offset + flat).to(COMPUTE)
    out = mean + _standard_deviation(variance, TINY) * eps
    tl.store(OUT + flat, out.to(OUT.dtype.element_ty), mask=out_mask)


@triton.jit(do_not_specialize=["seed", "offset"])
def _output_gradients(
    G, SAVED_MEAN, SAVED_VAR, Z, GRAD_MEAN, GRAD_VAR, GRAD_Z,
    PART_BIAS_MEAN, PART_BIAS_VAR, PART_Z,
    B, N, stride_gb, stride_gn, stride_zb, stride_zn, seed, offset,
    HAS_Z: tl.constexpr, SCALE_VARIANCE: tl.constexpr,
    WRITE_GRAD_MEAN: tl.constexpr, WRITE_GRAD_VAR: tl.constexpr,
    Z_GRAD: tl.constexpr, BIAS_MEAN_GRAD: tl.constexpr, BIAS_VAR_GRAD: tl.constexpr,
    TINY: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """The gradients of ``M`` and ``V`` (written for the GEMM kernels), of ``Z`` (``Z_GRAD``: 1
    per element, 2 summed over the tile's rows) and of the bias (summed over the tile's rows)."""
    pid_m = tl.program_id(0)
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    col_in = cols < N
    mask = (rows < B)[:, None] & col_in[None, :]
    flat = rows[:, None] * N + cols[None, :]
    g = tl.load(G + rows[:, None] * stride_gb + cols[None, :] * stride_gn, mask=mask, other=0.0)
    g = g.to(COMPUTE)
    pre_variance = tl.load(SAVED_VAR + flat, mask=mask, other=0.0)
    variance = pre_variance
    if HAS_Z:
        z = tl.load(Z + rows[:, None] * stride_zb + cols[None, :] * stride_zn, mask=mask, other=0.0)
        z = z.to(COMPUTE)
        if SCALE_VARIANCE:
            variance = pre_variance * (z * z)
    eps = tl.randn(seed, offset + flat).to(COMPUTE)
    # d sqrt(max(v, tiny)) / dv: 1 / (2 std) where v >= tiny, zero where it is clamped.
    grad_scaled_var = tl.where(
        mask & (variance >= TINY), g * eps / (2 * _standard_deviation(variance, TINY)), 0.0
    )
    grad_mean = g
    grad_var = grad_scaled_var
    if HAS_Z:
        grad_mean = g * z
        if SCALE_VARIANCE:
            grad_var = grad_scaled_var * (z * z)
    if WRITE_GRAD_MEAN:
        tl.store(GRAD_MEAN + flat, grad_mean.to(GRAD_MEAN.dtype.element_ty), mask=mask)
    if WRITE_GRAD_VAR:
        tl.store(GRAD_VAR + flat, grad_var.to(GRAD_VAR.dtype.element_ty), mask=mask)
    if Z_GRAD > 0:
        grad_z = g * tl.load(SAVED_MEAN + flat, mask=mask, other=0.0)
        if SCALE_VARIANCE:
            grad_z += grad_scaled_var * pre_variance * (2 * z)
        if Z_GRAD == 1:
            tl.store(GRAD_Z + flat, grad_z.to(GRAD_Z.dtype.element_ty), mask=mask)
        else:
            tl.store(PART_Z + pid_m * N + cols, tl.sum(grad_z, axis=0), mask=col_in)
    if BIAS_MEAN_GRAD:
        tl.store(PART_BIAS_MEAN + pid_m * N + cols, tl.sum(grad_mean, axis=0), mask=col_in)
    if BIAS_VAR_GRAD:
        tl.store(PART_BIAS_VAR + pid_m * N + cols, tl.sum(grad_var, axis=0), mask=col_in)


@triton.autotune(**_TUNING)
@triton.jit
def _input_gradients(
    GRAD_MEAN, GRAD_VAR, MU, VAR, X, S, DX, DS, PART_S,
    B, N, K,
    stride_gmb, stride_gmn, stride_mun, stride_muk, stride_vn, stride_vk,
    stride_xb, stride_xk, stride_sb, stride_sk,
    HAS_S: tl.constexpr, SCALE_VARIANCE: tl.constexpr, LOG_VARIANCE: tl.constexpr,
    X_GRAD: tl.constexpr, S_GRAD: tl.constexpr,
    COMPUTE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """``dX`` and ``dS`` (``S_GRAD``: 1 per element, 2 summed over the tile's rows) for one
    ``(BLOCK_M, BLOCK_K)`` tile, from ``g_m mu`` and ``g_v s2`` accumulated over ``N``."""
    pid_m, pid_k = _tile(tl.program_id(0), B, K, BLOCK_M, BLOCK_K, GROUP_M)
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    ks = (pid_k * BLOCK_K + tl.arange(0, BLOCK_K)).to(tl.int64)
    ns = tl.arange(0, BLOCK_N)
    row_in, k_in = rows < B, ks < K
    gm_ptrs = GRAD_MEAN + rows[:, None] * stride_gmb + ns[None, :] * stride_gmn
    gv_ptrs = GRAD_VAR + rows[:, None] * N + ns[None, :]  # written contiguous by the kernel above
    mu_ptrs = MU + ns[:, None] * stride_mun + ks[None, :] * stride_muk
    var_ptrs = VAR + ns[:, None] * stride_vn + ks[None, :] * stride_vk
    through_mean = tl.zeros((BLOCK_M, BLOCK_K), dtype=COMPUTE)
    through_var = tl.zeros((BLOCK_M, BLOCK_K), dtype=COMPUTE)
    for start in range(0, N, BLOCK_N):
        n_in = (start + ns) < N
        g_mask = row_in[:, None] & n_in[None, :]
        w_mask = n_in[:, None] & k_in[None, :]
        grad_mean = tl.load(gm_ptrs, mask=g_mask, other=0.0)
        grad_var = tl.load(gv_ptrs, mask=g_mask, other=0.0)
        mu = tl.load(mu_ptrs, mask=w_mask, other=0.0)
        var = _variance(tl.load(var_ptrs, mask=w_mask, other=0.0), LOG_VARIANCE, COMPUTE)
        through_mean = _dot(grad_mean, mu, through_mean, PRECISION, UPCAST)
        through_var = _dot(grad_var, var, through_var, PRECISION, UPCAST)
        gm_ptrs += BLOCK_N * stride_gmn
        gv_ptrs += BLOCK_N
        mu_ptrs += BLOCK_N * stride_mun
        var_ptrs += BLOCK_N * stride_vn

    mask = row_in[:, None] & k_in[None, :]
    x = tl.load(X + rows[:, None] * stride_xb + ks[None, :] * stride_xk, mask=mask, other=0.0)
    scaled = x
    if HAS_S:
        s = tl.load(S + rows[:, None] * stride_sb + ks[None, :] * stride_sk, mask=mask, other=0.0)
        scaled = _times(x, s, COMPUTE)
    if SCALE_VARIANCE:
        # Both products see X S: d(X S) = g_m mu + 2 (X S) (g_v s2).
        through_scaled = through_mean + 2 * scaled.to(COMPUTE) * through_var
        through_x = 0.0
    else:
        # The variance sees X alone: d(X S) = g_m mu and dX gets 2 X (g_v s2) besides.
        through_scaled = through_mean
        through_x = 2 * x.to(COMPUTE) * through_var
    grad_x = through_scaled + through_x
    if HAS_S:
        grad_x = through_scaled * s.to(COMPUTE) + through_x
    grad_s = through_scaled * x.to(COMPUTE)
    flat = rows[:, None] * K + ks[None, :]  # the gradients are written contiguous
    if X_GRAD:
        tl.store(DX + flat, grad_x.to(DX.dtype.element_ty), mask=mask)
    if S_GRAD == 1:
        tl.store(DS + flat, grad_s.to(DS.dtype.element_ty), mask=mask)
    if S_GRAD == 2:
        grad_s = tl.sum(tl.where(mask, grad_s, 0.0), axis=0)
        tl.store(PART_S + pid_m * K + ks, grad_s, mask=k_in)


@triton.autotune(**_TUNING)
@triton.jit
def _weight_gradients(
    GRAD_MEAN, GRAD_VAR, X, S, VAR, DMU, DVAR,
    B, N, K, SPLITS,
    stride_gmb, stride_gmn, stride_xb, stride_xk, stride_sb, stride_sk, stride_vn, stride_vk,
    HAS_S: tl.constexpr, SCALE_VARIANCE: tl.constexpr, LOG_VARIANCE: tl.constexpr,
    MU_GRAD: tl.constexpr, VAR_GRAD: tl.constexpr,
    COMPUTE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """``dmu = g_m^T (X S)`` and ``ds2 = g_v^T (X S)^2`` for one ``(BLOCK_N, BLOCK_K)`` tile,
    accumulated over the batch from one ``X`` tile per step.

    With ``SPLITS > 1``, program ``(tile, split)`` sums one of ``SPLITS`` ranges of rows and
    writes its float32 part to ``DMU[split]`` / ``DVAR[split]``: a small layer has too few
    tiles to occupy the GPU, and a long batch gives every range enough work."""
    pid_n, pid_k = _tile(tl.program_id(0), N, K, BLOCK_N, BLOCK_K, GROUP_M)
    split = tl.program_id(1)
    chunk = tl.cdiv(tl.cdiv(B, SPLITS), BLOCK_M) * BLOCK_M
    first = split * chunk
    last = tl.minimum(B, first + chunk)
    cols = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    ks = (pid_k * BLOCK_K + tl.arange(0, BLOCK_K)).to(tl.int64)
    ms = first + tl.arange(0, BLOCK_M).to(tl.int64)
    col_in, k_in = cols < N, ks < K
    # The output gradients read as (N, B) tiles: g^T without a transposed copy.
    if MU_GRAD:
        gm_ptrs = GRAD_MEAN + cols[:, None] * stride_gmn + ms[None, :] * stride_gmb
    if VAR_GRAD:
        gv_ptrs = GRAD_VAR + cols[:, None] + ms[None, :] * N
    x_ptrs = X + ms[:, None] * stride_xb + ks[None, :] * stride_xk
    if HAS_S:
        s_ptrs = S + ms[:, None] * stride_sb + ks[None, :] * stride_sk
    grad_mu = tl.zeros((BLOCK_N, BLOCK_K), dtype=COMPUTE)
    grad_var = tl.zeros((BLOCK_N, BLOCK_K), dtype=COMPUTE)
    for start in range(0, last - first, BLOCK_M):
        m_in = (ms + start) < last
        g_mask = col_in[:, None] & m_in[None, :]
        x_mask = m_in[:, None] & k_in[None, :]
        x = tl.load(x_ptrs, mask=x_mask, other=0.0)
        scaled = x
        if HAS_S:
            scaled = _times(x, tl.load(s_ptrs, mask=x_mask, other=0.0), COMPUTE)
        if MU_GRAD:
            grad_mean_t = tl.load(gm_ptrs, mask=g_mask, other=0.0)
            grad_mu = _dot(grad_mean_t, scaled, grad_mu, PRECISION, UPCAST)
            gm_ptrs += BLOCK_M * stride_gmb
        if VAR_GRAD:
            if SCALE_VARIANCE:
                squared = _times(scaled, scaled, COMPUTE)
            else:
                squared = _times(x, x, COMPUTE)
            grad_var_t = tl.load(gv_ptrs, mask=g_mask, other=0.0)
            grad_var = _dot(grad_var_t, squared, grad_var, PRECISION, UPCAST)
            gv_ptrs += BLOCK_M * N
        x_ptrs += BLOCK_M * stride_xb
        if HAS_S:
            s_ptrs += BLOCK_M * stride_sb

    mask = col_in[:, None] & k_in[None, :]
    # The gradients (or their parts) are written contiguous.
    flat = split.to(tl.int64) * N * K + cols[:, None] * K + ks[None, :]
    if MU_GRAD:
        tl.store(DMU + flat, grad_mu.to(DMU.dtype.element_ty), mask=mask)
    if VAR_GRAD:
        if LOG_VARIANCE:
            # d/d log s2 = d/d s2 * s2 (linear: each part may take its factor).
            log_var_ptrs = VAR + cols[:, None] * stride_vn + ks[None, :] * stride_vk
            log_var = tl.load(log_var_ptrs, mask=mask, other=0.0)
            grad_var = grad_var * _variance(log_var, True, COMPUTE).to(COMPUTE)
        tl.store(DVAR + flat, grad_var.to(DVAR.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["seed", "offset"])
def _noise(OUT, size, seed, offset, BLOCK: tl.constexpr):
    """``OUT[i] = randn(seed, offset + i)``: the kernels' ``eps``, flattened row by row."""
    index = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    tl.store(OUT + index, tl.randn(seed, offset + index), mask=index < size)


# ------------------------------------------------------------------------------- launchers


def _on_device(tensor: torch.Tensor):
    # Triton launches on the current CUDA device; the tensors may live on another.
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _tf32_allowed() -> bool:
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        # The newer switch, which also reflects the legacy one; reading allow_tf32 raises
        # once a program has set this one.
        return matmul.fp32_precision == "tf32"
    return bool(matmul.allow_tf32)


def _precision(dtype: torch.dtype) -> str | None:
    """``tl.dot``'s input precision: a choice for float32 operands only, where TF32 is used
    exactly when torch's own matrix products may use it; Triton's default for the others."""
    if dtype == torch.float32:
        return "tf32" if _tf32_allowed() else "ieee"
    if dtype == torch.float64:
        return "ieee"
    return None


def _common(dtype: torch.dtype) -> dict:
    return {
        "COMPUTE": _COMPUTE_TYPES.get(dtype, tl.float32),
        "PRECISION": _precision(dtype),
        "UPCAST": INTERPRETING and dtype == torch.bfloat16,
    }


def _strides(tensor: torch.Tensor | None, dims: int) -> tuple[int, ...]:
    """The strides of a ``dims``-d operand; a lower-dimensional one broadcasts (stride 0)."""
    if tensor is None:
        return (0,) * dims
    return (0,) * (dims - tensor.dim()) + tensor.stride()


def _matmul_grid(rows: int, cols: int, row_block: str, col_block: str):
    return lambda meta: (triton.cdiv(rows, meta[row_block]) * triton.cdiv(cols, meta[col_block]),)


#: A split of the batch in the weights' gradient gets at least this many rows.
_MIN_SPLIT_ROWS = 32 if INTERPRETING else 512
_MAX_SPLITS = 16


@functools.cache
def _processors(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def _batch_splits(rows: int, outputs: int, inputs: int, device: torch.device) -> int:
    """In how many ranges of rows to split the weights' gradient: enough for two programs per
    processor with the largest tile, each range with at least ``_MIN_SPLIT_ROWS`` rows, and
    the two float32 ``(splits, out, in)`` buffers of parts no larger than ``x`` itself."""
    tiles = max(1, triton.cdiv(outputs, 128) * triton.cdiv(inputs, 128))
    wanted = triton.cdiv(2 * _processors(device), tiles)
    fits = rows // (2 * max(outputs, 1))
    return max(1, min(wanted, rows // _MIN_SPLIT_ROWS, fits, _MAX_SPLITS))


def forward(
    x: torch.Tensor,
    weight_mean: torch.Tensor,
    weight_spread: torch.Tensor,
    bias_mean: torch.Tensor | None,
    bias_var: torch.Tensor | None,
    input_scale: torch.Tensor | None,
    output_scale: torch.Tensor | None,
    *,
    scale_variance: bool,
    log_variance: bool,
    seed: int,
    offset: int,
    save_mean: bool,
    save_variance: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``Y`` of shape ``(B, N)``, with the float32 ``M`` and ``V`` when asked to save them.

    ``x`` is ``(B, K)``; ``weight_spread`` the variances, or log-variances if ``log_variance``;
    ``input_scale`` ``(B, K)`` or ``(K,)``; ``output_scale`` ``(B, N)`` or ``(N,)``.
    """
    (rows, inputs), outputs = x.shape, weight_mean.shape[0]
    saved = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.empty(rows, outputs, dtype=x.dtype, device=x.device)
    mean = torch.empty(rows, outputs, dtype=saved, device=x.device) if save_mean else None
    variance = torch.empty(rows, outputs, dtype=saved, device=x.device) if save_variance else None
    with _on_device(x):
        _forward[_matmul_grid(rows, outputs, "BLOCK_M", "BLOCK_N")](
            x, input_scale, weight_mean, weight_spread, bias_mean, bias_var, output_scale,
            out, mean, variance,
            rows, outputs, inputs,
            *x.stride(), *_strides(input_scale, 2),
            *weight_mean.stride(), *weight_spread.stride(),
            *_strides(bias_mean, 1), *_strides(bias_var, 1), *_strides(output_scale, 2),
            seed, offset,
            HAS_S=input_scale is not None, HAS_Z=output_scale is not None,
            HAS_BIAS_MEAN=bias_mean is not None, HAS_BIAS_VAR=bias_var is not None,
            SCALE_VARIANCE=scale_variance, LOG_VARIANCE=log_variance,
            SAVE_MEAN=save_mean, SAVE_VAR=save_variance,
            TINY=torch.finfo(x.dtype).tiny, **_common(x.dtype),
        )  # fmt: skip
    return out, mean, variance


def backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight_mean: torch.Tensor,
    weight_spread: torch.Tensor,
    input_scale: torch.Tensor | None,
    output_scale: torch.Tensor | None,
    saved_mean: torch.Tensor | None,
    saved_variance: torch.Tensor,
    *,
    scale_variance: bool,
    log_variance: bool,
    seed: int,
    offset: int,
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, ...]:
    """The gradients of ``(x, weight_mean, weight_spread, bias_mean, bias_var, input_scale,
    output_scale)`` for those flagged in ``needs`` (``None`` for the others)."""
    x_grad, mu_grad, var_grad, bias_mean_grad, bias_var_grad, s_grad, z_grad = needs
    (rows, inputs), outputs = x.shape, weight_mean.shape[0]
    device, dtype = x.device, x.dtype
    compute = _common(dtype)
    has_z = output_scale is not None
    input_side = x_grad or s_grad
    # The GEMM kernels read g_m = dY Z (dY itself without Z) and g_v.
    write_grad_mean = has_z and (input_side or mu_grad)
    write_grad_var = input_side or var_grad
    per_example_z = has_z and output_scale.dim() == 2
    z_mode = (1 if per_example_z else 2) if z_grad else 0
    tiles = triton.cdiv(rows, _ELEMENTWISE_BLOCK)

    def empty(*shape, type=dtype):
        return torch.empty(*shape, dtype=type, device=device)

    partial = torch.float64 if dtype == torch.float64 else torch.float32
    grad_mean = empty(rows, outputs) if write_grad_mean else None
    grad_var = empty(rows, outputs) if write_grad_var else None
    grad_z = empty(rows, outputs, type=output_scale.dtype) if z_mode == 1 else None
    part_z = empty(tiles, outputs, type=partial) if z_mode == 2 else None
    part_bias_mean = empty(tiles, outputs, type=partial) if bias_mean_grad else None
    part_bias_var = empty(tiles, outputs, type=partial) if bias_var_grad else None
    with _on_device(x):
        grid = (tiles, triton.cdiv(outputs, _ELEMENTWISE_BLOCK))
        _output_gradients[grid](
            grad, saved_mean, saved_variance, output_scale, grad_mean, grad_var, grad_z,
            part_bias_mean, part_bias_var, part_z,
            rows, outputs, *grad.stride(), *_strides(output_scale, 2), seed, offset,
            HAS_Z=has_z, SCALE_VARIANCE=scale_variance,
            WRITE_GRAD_MEAN=write_grad_mean, WRITE_GRAD_VAR=write_grad_var,
            Z_GRAD=z_mode, BIAS_MEAN_GRAD=bias_mean_grad, BIAS_VAR_GRAD=bias_var_grad,
            TINY=torch.finfo(dtype).tiny, COMPUTE=compute["COMPUTE"],
            BLOCK_M=_ELEMENTWISE_BLOCK, BLOCK_N=_ELEMENTWISE_BLOCK,
        )  # fmt: skip
        if grad_mean is None:
            grad_mean = grad  # g_m is dY itself, read with its own strides (a broadcast too)

        dx = ds = part_s = None
        s_mode = 0
        if input_side and inputs:
            per_example_s = input_scale is not None and input_scale.dim() == 2
            s_mode = (1 if per_example_s else 2) if s_grad else 0
            dx = empty(rows, inputs) if x_grad else None
            ds = empty(rows, inputs, type=input_scale.dtype) if s_mode == 1 else None
            part_s = (
                torch.zeros(triton.cdiv(rows, _MIN_BLOCK_M), inputs, dtype=partial, device=device)
                if s_mode == 2
                else None
            )
            _input_gradients[_matmul_grid(rows, inputs, "BLOCK_M", "BLOCK_K")](
                grad_mean, grad_var, weight_mean, weight_spread, x, input_scale, dx, ds, part_s,
                rows, outputs, inputs,
                *grad_mean.stride(), *weight_mean.stride(), *weight_spread.stride(),
                *x.stride(), *_strides(input_scale, 2),
                HAS_S=input_scale is not None, SCALE_VARIANCE=scale_variance,
                LOG_VARIANCE=log_variance, X_GRAD=x_grad, S_GRAD=s_mode, **compute,
            )  # fmt: skip
        elif input_side:  # no inputs: nothing flows back to them
            dx = torch.zeros_like(x) if x_grad else None
            ds = torch.zeros_like(input_scale) if s_grad else None

        splits = _batch_splits(rows, outputs, inputs, device)
        if splits > 1:
            dmu = empty(splits, outputs, inputs, type=partial) if mu_grad else None
            dvar = empty(splits, outputs, inputs, type=partial) if var_grad else None
        else:
            dmu = empty(outputs, inputs, type=weight_mean.dtype) if mu_grad else None
            dvar = empty(outputs, inputs, type=weight_spread.dtype) if var_grad else None
        if (mu_grad or var_grad) and inputs:
            tiles = _matmul_grid(outputs, inputs, "BLOCK_N", "BLOCK_K")
            _weight_gradients[lambda meta: (*tiles(meta), splits)](
                grad_mean, grad_var, x, input_scale, weight_spread, dmu, dvar,
                rows, outputs, inputs, splits,
                *grad_mean.stride(), *x.stride(), *_strides(input_scale, 2),
                *weight_spread.stride(),
                HAS_S=input_scale is not None, SCALE_VARIANCE=scale_variance,
                LOG_VARIANCE=log_variance, MU_GRAD=mu_grad, VAR_GRAD=var_grad, **compute,
            )  # fmt: skip

    if splits > 1:
        dmu = None if dmu is None else dmu.sum(0).to(weight_mean.dtype)
        dvar = None if dvar is None else dvar.sum(0).to(weight_spread.dtype)
    if s_mode == 2:
        ds = part_s.sum(0).to(input_scale.dtype)
    if z_mode == 2:
        grad_z = part_z.sum(0).to(output_scale.dtype)
    bias_mean_grad = None if part_bias_mean is None else part_bias_mean.sum(0).to(dtype)
    bias_var_grad = None if part_bias_var is None else part_bias_var.sum(0).to(dtype)
    return dx, dmu, dvar, bias_mean_grad, bias_var_grad, ds, grad_z


def noise(rows: int, cols: int, seed: int, offset: int, device: torch.device) -> torch.Tensor:
    """The float32 ``eps`` of shape ``(rows, cols)`` that the kernels draw for
    ``(seed, offset)``."""
    out = torch.empty(rows, cols, dtype=torch.float32, device=device)
    size = rows * cols
    if size:
        block = 1024
        with _on_device(out):
            _noise[(triton.cdiv(size, block),)](out, size, seed, offset, BLOCK=block)
    return out
