"""Bit precision from the posterior variance and the compression rates of Table 9 of Louizos'
thesis.

A weight whose posterior is wide does not need many bits: rounding it changes the network by less
than its own uncertainty.  Following the thesis (Sec. 6.4, Eq. 93-94) and its reference code
(Ullrich's ``compression.py`` in KarenUllrich/Tutorial_BayesianCompressionForDL), a layer gets as
many significant bits ``t`` as the rounding error it allows, the *unit round-off*
``u(t) = 1/2 * 2^(1 - t) = 2^-t`` (Heath 1996, Ch. 1), stays below twice its weights' marginal
posterior variance, plus exponent bits for the largest mean and one sign bit.

:func:`compression_ratios` reports the three scenarios of Table 9: pruning, fast prediction
(pruning plus a per-layer bit width) and maximum compression (pruning plus K-means weight sharing,
Han et al. 2016).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .structure import UnitMasks, kept_weights

#: Bits of the dense single precision network every scenario is compared with.
FLOAT_BITS = 32
#: Most significant bits a weight can get: the stored mantissa of a float32.
MAX_SIGNIFICANT_BITS = 23
#: The clusters of the maximum-compression scenario (thesis Sec. 6.5, after Han et al. 2016).
DEFAULT_NUM_CLUSTERS = 32
#: The widths of relative indices the maximum-compression scenario chooses from for a sparse
#: layer (Han et al. use 8 bits for convolutions and 5 for dense layers).
RELATIVE_INDEX_WIDTHS = range(1, 17)


def unit_round_off(bits: int) -> float:
    """The unit round-off of rounding to nearest with ``bits`` significant binary digits,
    ``u(t) = 1/2 * 2^(1 - t) = 2^-t`` (Heath 1996, Ch. 1)."""
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 0:
        raise ValueError(f"the number of bits must be a non-negative integer, got {bits!r}")
    return 0.5 * 2.0 ** (1 - bits)


def significant_bits(variance: torch.Tensor) -> int:
    """The significant bits of a layer from its weights' marginal posterior variances.

    Weight ``w`` with variance ``v`` needs the ``t`` with ``2 v < u(t)``, ``t = 1, ..., 23``; it
    gets as many bits as there are such ``t`` (0 when ``2 v >= 1/2``, 23 when ``v = 0``).  The
    layer gets the mean over its weights, rounded up: ``ceil(mean_w #{t : 2 v_w < 2^-t})``.  This
    is ``float_precisions`` of the reference code with its ``dist_fun = np.mean``; it counts
    ``t`` in ``1..23`` (not ``2..24``) and compares the variance, not the standard deviation, with
    the round-off, as the code does.

    :param variance: the variances of the layer's kept weights, any shape (the pruned weights
        left out, see :func:`~pyro_bnn.compression.structure.kept_weights`).
    """
    variance = _check_values("variance", variance).to(torch.float64)
    if (variance < 0).any():
        raise ValueError("a variance cannot be negative")
    # The thresholds 2^-23 < ... < 2^-1; those above 2v are the bit counts 1..n that satisfy it.
    thresholds = torch.tensor(
        [unit_round_off(t) for t in range(MAX_SIGNIFICANT_BITS, 0, -1)], dtype=torch.float64
    )
    at_or_below = torch.searchsorted(thresholds, 2 * variance.flatten().cpu(), right=True)
    bits = MAX_SIGNIFICANT_BITS - at_or_below
    return math.ceil(bits.double().mean().item())


def exponent_bits(mean: torch.Tensor) -> int:
    """The exponent bits for a layer's weights: ``ceil(log2(log2(m) + 1) + 1)`` with ``m`` the
    largest ``|mean|``, as in the reference code (where ``m`` is the largest over all layers).

    The formula asks for an exponent range reaching ``2^log2(m)``: ``e`` bits reach the largest
    exponent ``2^(e - 1) - 1``.  It is undefined for ``m <= 1/2`` (the log of a non-positive
    number) and reaches 0 bits below ``m = 2^(-1/2)``; here ``log2(m)`` is clamped at 0, so every
    layer with ``m <= 1`` (all zeros included) gets 1 exponent bit and larger ``m`` gets the
    reference's value (2 bits up to ``m = 2``, 3 up to 8, 4 up to 128).  The thesis instead adds
    3 exponent bits to every layer; pass ``exponent=3`` to :func:`layer_precision` for that.

    :param mean: the (posterior mean) weights of the layer's kept units, any shape.
    """
    mean = _check_values("mean", mean)
    largest = float(mean.abs().max())
    exponent = max(math.log2(largest), 0.0) if largest > 0 else 0.0
    return math.ceil(math.log2(exponent + 1) + 1)


@dataclass(frozen=True)
class LayerPrecision:
    """The floating point format of a layer's weights: ``sign + exponent + mantissa`` bits."""

    exponent: int
    mantissa: int
    sign: int = 1

    def __post_init__(self):
        for name in ("exponent", "mantissa", "sign"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} bits must be a non-negative integer, got {value!r}")

    @property
    def total(self) -> int:
        """Bits per weight."""
        return self.sign + self.exponent + self.mantissa


def layer_precision(
    mean: torch.Tensor, variance: torch.Tensor, exponent: int | None = None
) -> LayerPrecision:
    """The precision of a layer from its kept weights' posterior means and variances:
    :func:`exponent_bits` of the means (or ``exponent`` if given, e.g. 3 as in the thesis or the
    value for the largest mean over all layers as in the reference code), :func:`significant_bits`
    of the variances and one sign bit."""
    mean, variance = _check_values("mean", mean), _check_values("variance", variance)
    if mean.shape != variance.shape:
        raise ValueError(
            f"mean and variance must have the same shape, got {tuple(mean.shape)} and "
            f"{tuple(variance.shape)}"
        )
    return LayerPrecision(
        exponent=exponent_bits(mean) if exponent is None else exponent,
        mantissa=significant_bits(variance),
    )


def round_to_precision(weight: torch.Tensor, mantissa_bits: int) -> torch.Tensor:
    """Round to the grid of step ``delta = u(t) = 2^-t``: ``floor(w / delta + 1/2) * delta``
    (ties go up), the reference code's ``special_round``.

    This is a fixed-point grid: it keeps ``t`` significant bits of the weights in ``[1/2, 1)``,
    more of larger and fewer of smaller ones, and it ignores the exponent range, as the reference
    code does.
    """
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise ValueError("weight must be a floating point tensor")
    delta = unit_round_off(mantissa_bits)
    return torch.floor(weight / delta + 0.5) * delta


@dataclass(frozen=True)
class LayerStorage:
    """What a layer costs to store in each scenario, in bits (``fast_prediction_bits`` is
    ``None`` without a bit precision).

    ``weights`` is the dense count, ``kept`` the size of the kept block (kept outputs x kept
    inputs x kernel), ``nonzero`` its non-zero weights; ``sparse`` says whether the block is stored
    in compressed sparse column form for pruning and fast prediction (it is when that is
    smaller), ``relative_index_width`` the width of the relative indices that store it under
    maximum compression (``None``: stored densely)."""

    name: str
    weights: int
    kept: int
    nonzero: int
    sparse: bool
    pruning_bits: int
    fast_prediction_bits: int | None
    maximum_compression_bits: int
    relative_index_width: int | None = None


@dataclass(frozen=True)
class CompressionRatios:
    """The compression rates of Table 9 of Louizos' thesis: the dense 32-bit size of the weights
    over their size in each scenario (see :func:`compression_ratios`)."""

    layers: tuple[LayerStorage, ...]

    @property
    def original_bits(self) -> int:
        return FLOAT_BITS * sum(layer.weights for layer in self.layers)

    @property
    def kept_fraction(self) -> float:
        """``|w != 0| / |w|``, the first column of Table 9."""
        return sum(layer.nonzero for layer in self.layers) / sum(
            layer.weights for layer in self.layers
        )

    @property
    def pruning(self) -> float:
        return self.original_bits / sum(layer.pruning_bits for layer in self.layers)

    @property
    def fast_prediction(self) -> float | None:
        if any(layer.fast_prediction_bits is None for layer in self.layers):
            return None
        return self.original_bits / sum(layer.fast_prediction_bits for layer in self.layers)

    @property
    def maximum_compression(self) -> float:
        return self.original_bits / sum(layer.maximum_compression_bits for layer in self.layers)

    def as_dict(self) -> dict:
        return {
            "layers": {
                layer.name: {
                    "weights": layer.weights,
                    "kept": layer.kept,
                    "nonzero": layer.nonzero,
                    "sparse": layer.sparse,
                    "pruning_bits": layer.pruning_bits,
                    "fast_prediction_bits": layer.fast_prediction_bits,
                    "maximum_compression_bits": layer.maximum_compression_bits,
                    "relative_index_width": layer.relative_index_width,
                }
                for layer in self.layers
            },
            "kept_fraction": self.kept_fraction,
            "pruning": self.pruning,
            "fast_prediction": self.fast_prediction,
            "maximum_compression": self.maximum_compression,
        }

    def __str__(self) -> str:
        fast = self.fast_prediction
        return (
            f"|w!=0|/|w| = {100 * self.kept_fraction:.2f}%, compression: pruning "
            f"{self.pruning:.1f}, fast prediction {'-' if fast is None else f'{fast:.1f}'}, "
            f"maximum compression {self.maximum_compression:.1f}"
        )


def compression_ratios(
    weights: Mapping[str, torch.Tensor],
    unit_masks: Mapping[str, UnitMasks] | None = None,
    precisions: Mapping[str, LayerPrecision] | None = None,
    *,
    num_clusters: int = DEFAULT_NUM_CLUSTERS,
    index_bits: int = FLOAT_BITS,
) -> CompressionRatios:
    """The three compression rates of Table 9: dense 32-bit size over the stored size.

    Storage model (weights only, as the reference code and the thesis count; biases and batch
    norm parameters are left out):

    - The original network stores every weight in 32 bits.
    - A layer keeps the block ``weight[outputs][:, inputs]`` of its unit masks (all of it without
      masks); what lies outside is not stored, whatever its value.  A block without zeros is
      stored densely.  A block with zeros (unstructured sparsity) is stored in compressed sparse
      column form when that is smaller at 32 bits, and then in all three scenarios: the block as
      a ``(fan-in, outputs)`` matrix (fan-in = kept inputs x kernel), one column per kept output,
      with an ``index_bits`` row index per non-zero weight and ``outputs + 1`` column pointers of
      ``index_bits`` each.
    - (a) *Pruning*: every stored value has 32 bits.
    - (b) *Fast prediction*: a layer's values have its ``precisions[layer].total`` bits (the
      indices of a sparse layer keep ``index_bits``).
    - (c) *Maximum compression*, Deep Compression's storage (Han et al. 2016, Sec. 2-3) without
      its Huffman coding: K-means weight sharing with ``K = num_clusters`` per layer, each stored
      value a ``ceil(log2 codes)`` bit code, ``codes = K' + [zeros are stored]``, into a codebook
      of ``K' = min(K, distinct non-zero values)`` 32-bit centres
      (:class:`~pyro_bnn.compression.weight_sharing.Codebook`; a stored zero needs a code but no
      centre).  A block with zeros is stored densely or, when smaller, with Han et al.'s
      *relative indices*: the non-zeros in row-major order of the ``(outputs, fan-in)`` block,
      each with the distance ``g`` from the previous one in ``b`` bits; a distance over ``2^b``
      takes ``ceil(g / 2^b) - 1`` filler zeros (:func:`relative_index_entries`).  The layer's
      ``b`` is the best of :data:`RELATIVE_INDEX_WIDTHS` (Han et al. fix 8 bits for
      convolutions and 5 for dense layers).

    For structured pruning this reproduces the thesis: LeNet-5-Caffe with BC-GHS (architecture
    5-10-76-16, bits 10-10-14-13) gives 156, 419 and 771 as in Table 9, LeNet-300-100 with
    BC-GHS (311-86-14, bits 13-11-10) 9, 23 and 59.  The thesis does not give the index widths of
    its unstructured baselines; their pruning and fast-prediction rates depend on ``index_bits``.

    :param weights: ``{layer name: weight}``, the masked posterior means in their original shapes.
    :param unit_masks: ``{layer name: UnitMasks}`` of the removed units (from
        :func:`~pyro_bnn.compression.structure.cascade`); layers not named keep all units.
    :param precisions: ``{layer name: LayerPrecision}`` for fast prediction, for every layer;
        without it the fast-prediction rate is ``None``.
    :param index_bits: bits of a CSC row index and column pointer (pruning and fast prediction).
    """
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError("weights must be a non-empty mapping from layer names to tensors")
    unit_masks = dict(unit_masks or {})
    precisions = None if precisions is None else dict(precisions)
    for kind, given in (("are unit masks", unit_masks), ("is a precision", precisions or {})):
        for name in given:
            if name not in weights:
                raise ValueError(f"there {kind} for {name!r} but no weight of that name")
    if precisions is not None:
        missing = [name for name in weights if name not in precisions]
        if missing:
            raise ValueError(f"there is no precision for {', '.join(map(repr, missing))}")
    if not isinstance(index_bits, int) or isinstance(index_bits, bool) or index_bits < 1:
        raise ValueError(f"index_bits must be a positive integer, got {index_bits!r}")
    if not isinstance(num_clusters, int) or isinstance(num_clusters, bool) or num_clusters < 1:
        raise ValueError(f"num_clusters must be a positive integer, got {num_clusters!r}")
    layers = []
    for name, weight in weights.items():
        weight = _check_values(f"weight of {name!r}", weight)
        if weight.dim() < 2:
            raise ValueError(f"the weight of {name!r} must have at least 2 dimensions")
        block = kept_weights(weight, unit_masks[name]) if name in unit_masks else weight
        precision = None if precisions is None else precisions[name]
        layers.append(
            _layer_storage(name, weight.numel(), block, precision, num_clusters, index_bits)
        )
    return CompressionRatios(tuple(layers))


def relative_index_entries(positions: torch.Tensor, width: int) -> int:
    """The entries Deep Compression's relative indexing stores for non-zeros at ``positions``
    (Han et al. 2016, Sec. 2 and Fig. 2): each non-zero's distance ``g`` from the previous one
    (from position -1 for the first) is stored in ``width`` bits, which hold distances up to
    ``2^width``; a longer distance is bridged by filler zeros, ``ceil(g / 2^width)`` entries in all.

    :param positions: increasing flat positions of the non-zeros, ``(nonzero,)``, ``long``.
    """
    distances = torch.diff(positions, prepend=positions.new_tensor([-1]))
    return int(torch.sum(-(-distances // 2**width)))


def _code_bits(codes: int) -> int:
    return math.ceil(math.log2(codes)) if codes > 1 else 0


def _layer_storage(
    name: str,
    weights: int,
    block: torch.Tensor,
    precision: LayerPrecision | None,
    num_clusters: int,
    index_bits: int,
) -> LayerStorage:
    # The block as (outputs, fan-in); a sparse column is one kept output.
    matrix = block.reshape(block.shape[0], -1)
    nonzero = int(torch.count_nonzero(matrix))
    dense_bits = matrix.numel() * FLOAT_BITS
    sparse = nonzero * (FLOAT_BITS + index_bits) + (matrix.shape[0] + 1) * index_bits < dense_bits

    def stored(value_bits: int) -> int:
        if not sparse:
            return matrix.numel() * value_bits
        return nonzero * (value_bits + index_bits) + (matrix.shape[0] + 1) * index_bits

    # Maximum compression: codes into K' centres of the non-zeros, plus a code for a stored zero.
    centres = min(num_clusters, int(torch.unique(matrix[matrix != 0]).numel()))
    codes_bits, width = matrix.numel() * _code_bits(centres + (nonzero < matrix.numel())), None
    if 0 < nonzero < matrix.numel():
        positions = torch.flatten(matrix).nonzero().squeeze(1)
        for candidate in RELATIVE_INDEX_WIDTHS:
            entries = relative_index_entries(positions, candidate)
            bits = entries * (_code_bits(centres + (entries > nonzero)) + candidate)
            if bits < codes_bits:
                codes_bits, width = bits, candidate
    return LayerStorage(
        name=name,
        weights=weights,
        kept=matrix.numel(),
        nonzero=nonzero,
        sparse=sparse,
        pruning_bits=stored(FLOAT_BITS),
        fast_prediction_bits=None if precision is None else stored(precision.total),
        maximum_compression_bits=codes_bits + centres * FLOAT_BITS,
        relative_index_width=width,
    )


def _check_values(what: str, values: torch.Tensor) -> torch.Tensor:
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        raise ValueError(f"the {what} must be a floating point tensor")
    if values.numel() == 0:
        raise ValueError(f"the {what} is empty")
    if not torch.isfinite(values).all():
        raise ValueError(f"the {what} has NaN or infinite values")
    return values.detach()
