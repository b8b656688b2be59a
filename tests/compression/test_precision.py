import math

import numpy as np
import pytest
import torch

from pyro_bnn.compression.precision import (
    LayerPrecision,
    compression_ratios,
    exponent_bits,
    layer_precision,
    relative_index_entries,
    round_to_precision,
    significant_bits,
    unit_round_off,
)
from pyro_bnn.compression.structure import UnitMasks


def test_unit_round_off():
    assert unit_round_off(1) == 0.5
    assert unit_round_off(2) == 0.25
    assert unit_round_off(23) == 2.0**-23
    assert unit_round_off(0) == 1.0
    with pytest.raises(ValueError, match="non-negative integer"):
        unit_round_off(-1)
    with pytest.raises(ValueError, match="non-negative integer"):
        unit_round_off(2.5)


@pytest.mark.parametrize(
    "variances, bits",
    [
        # 2v = 0.2 < 2^-1, 2^-2 but not 2^-3: 2 bits.
        ([0.1], 2),
        # 2v = 0.002: 2^-8 = 0.0039 > 0.002 > 2^-9 = 0.00195: 8 bits.
        ([0.001], 8),
        # A certain weight gets all 23 bits; a very uncertain one none.
        ([0.0], 23),
        ([0.3], 0),
        # 2v = 2^-4 exactly: 2v < 2^-t holds for t = 1, 2, 3 only.
        ([2.0**-5], 3),
        # The layer gets the mean, rounded up: (2 + 8) / 2, (2 + 8 + 23) / 3, (2 + 23) / 2.
        ([0.1, 0.001], 5),
        ([0.1, 0.001, 0.0], 11),
        ([0.1, 0.0], 13),
    ],
)
def test_significant_bits_by_hand(variances, bits):
    assert significant_bits(torch.tensor(variances)) == bits


def test_significant_bits_match_the_reference_rule():
    generator = torch.Generator().manual_seed(0)
    variance = torch.exp(torch.empty(3, 40).uniform_(-40, 0, generator=generator))
    # Reference: per weight the count of t = 1..23 with 2v < 0.5 * 2^(1 - t); mean; ceil.
    counts = [
        sum(2 * v < 0.5 * 2.0 ** (1 - t) for t in range(1, 24)) for v in variance.flatten().tolist()
    ]
    assert significant_bits(variance) == math.ceil(np.mean(counts))


@pytest.mark.parametrize(
    "largest, bits",
    [
        # Reference: ceil(log2(log2(m) + 1) + 1).
        (2.0, 2),  # log2 2 = 1; log2(2) + 1 = 2
        (3.0, 3),  # log2 3 = 1.58; log2(2.58) + 1 = 2.37
        (8.0, 3),  # log2 8 = 3; log2(4) + 1 = 3
        (9.0, 4),  # log2 9 = 3.17; log2(4.17) + 1 = 3.06
        (128.0, 4),
        # Largest |mean| at most 1: log2 m is clamped at 0 (the reference is undefined below 1/2).
        (1.0, 1),
        (0.75, 1),
        (0.3, 1),
        (0.0, 1),
    ],
)
def test_exponent_bits_by_hand(largest, bits):
    mean = torch.tensor([0.0, -largest, largest / 2])
    assert exponent_bits(mean) == bits


def test_exponent_bits_match_the_reference_above_one():
    for largest in (1.2, 1.9, 2.5, 7.0, 40.0, 1e5):
        reference = math.ceil(math.log2(math.log2(largest) + 1) + 1)
        assert exponent_bits(torch.tensor([largest])) == reference


def test_layer_precision():
    precision = LayerPrecision(exponent=3, mantissa=8)
    assert (precision.sign, precision.total) == (1, 12)
    mean = torch.tensor([0.5, -3.0])
    variance = torch.tensor([0.1, 0.001])
    assert layer_precision(mean, variance) == LayerPrecision(exponent=3, mantissa=5)
    assert layer_precision(mean, variance, exponent=2).total == 8
    with pytest.raises(ValueError, match="same shape"):
        layer_precision(mean, variance[:1])
    with pytest.raises(ValueError, match="mantissa bits must be a non-negative integer"):
        LayerPrecision(exponent=3, mantissa=-1)


@pytest.mark.parametrize(
    "values, message",
    [
        (torch.tensor([-0.1]), "cannot be negative"),
        (torch.tensor([float("nan")]), "NaN"),
        (torch.tensor([]), "empty"),
        (torch.tensor([1, 2]), "floating point"),
    ],
)
def test_significant_bits_refuse_bad_variances(values, message):
    with pytest.raises(ValueError, match=message):
        significant_bits(values)


def test_exponent_bits_refuse_infinite_means():
    with pytest.raises(ValueError, match="infinite"):
        exponent_bits(torch.tensor([float("inf")]))


def test_round_to_precision_by_hand():
    weight = torch.tensor([0.3, 0.375, -0.375, -0.3, 1.1])
    # delta = 2^-2: 0.3 / 0.25 = 1.2 -> 1; ties (1.5, -1.5) go up.
    expected = torch.tensor([0.25, 0.5, -0.25, -0.25, 1.0])
    assert torch.equal(round_to_precision(weight, 2), expected)
    assert torch.equal(round_to_precision(torch.tensor([1.5, 0.4]), 0), torch.tensor([2.0, 0.0]))
    fine = torch.randn(100, generator=torch.Generator().manual_seed(0))
    assert (round_to_precision(fine, 10) - fine).abs().max() <= 2.0**-11
    with pytest.raises(ValueError, match="floating point"):
        round_to_precision(torch.tensor([1, 2]), 2)


def test_compression_ratios_by_hand():
    # A 4 x 3 layer keeping outputs {0, 2} and inputs {1, 2}: a dense 2 x 2 block.
    weight = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [0.0, 3.0, 4.0], [0.0, 0.0, 0.0]])
    masks = UnitMasks(torch.tensor([False, True, True]), torch.tensor([True, False, True, False]))
    ratios = compression_ratios(
        {"fc": weight}, {"fc": masks}, {"fc": LayerPrecision(exponent=3, mantissa=4)}
    )
    (layer,) = ratios.layers
    assert (layer.weights, layer.kept, layer.nonzero, layer.sparse) == (12, 4, 4, False)
    assert ratios.kept_fraction == 4 / 12
    assert ratios.pruning == 12 * 32 / (4 * 32)
    assert ratios.fast_prediction == 12 * 32 / (4 * 8)
    # Four distinct values: 2-bit indices and a codebook of four 32-bit centres.
    assert ratios.maximum_compression == 12 * 32 / (4 * 2 + 4 * 32)
    assert ratios.as_dict()["layers"]["fc"]["maximum_compression_bits"] == 136
    assert "pruning 3.0" in str(ratios)


def test_compression_ratios_count_sparse_indices():
    # Unstructured: 3 non-zeros in a 10 x 10 layer, stored as CSC with 32-bit indices:
    # 3 values and row indices, 11 column pointers.
    weight = torch.zeros(10, 10)
    weight[0, 1], weight[4, 4], weight[9, 2] = 0.5, -1.0, 0.25
    ratios = compression_ratios({"fc": weight}, precisions={"fc": LayerPrecision(2, 5)})
    (layer,) = ratios.layers
    assert layer.sparse and layer.nonzero == 3
    assert layer.pruning_bits == 3 * (32 + 32) + 11 * 32
    assert layer.fast_prediction_bits == 3 * (8 + 32) + 11 * 32
    # Maximum compression: Deep Compression's relative indices.  Row-major positions 1, 44, 92,
    # distances 2, 43, 48; three centres, 2-bit codes.  Width 6 holds every distance: 3 entries
    # of 2 + 6 bits; width 5 needs fillers (1 + 2 + 2 entries of 2 + 5 bits = 35), width 4
    # 7 x 6 = 42; dense 2-bit codes (with one for zero) would take 200.
    assert layer.maximum_compression_bits == 3 * (2 + 6) + 3 * 32
    assert layer.relative_index_width == 6
    assert ratios.pruning == 3200 / 544
    # With 8-bit indices.
    small = compression_ratios({"fc": weight}, index_bits=8).layers[0]
    assert small.pruning_bits == 3 * (32 + 8) + 11 * 8
    # Without precisions there is no fast-prediction figure.
    assert ratios.fast_prediction is not None
    assert compression_ratios({"fc": weight}).fast_prediction is None


def test_relative_index_entries_by_hand():
    # Han et al.'s Fig. 2 with 3-bit distances (up to 8): non-zeros at 1, 4 and 15 are 2, 3 and
    # 11 apart; the 11 needs one filler, 4 entries in all.
    positions = torch.tensor([1, 4, 15])
    assert relative_index_entries(positions, 3) == 4
    assert relative_index_entries(positions, 4) == 3
    assert relative_index_entries(positions, 1) == 1 + 2 + 6
    assert relative_index_entries(torch.tensor([0]), 1) == 1


@pytest.mark.parametrize("density", [0.002, 0.05, 0.3, 0.9])
def test_maximum_compression_takes_the_smaller_of_dense_and_relative(density):
    # Count the relative coding independently: walk the positions, adding fillers by hand.
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(40, 300, generator=generator)
    weight = weight * (torch.rand(40, 300, generator=generator) < density)
    layer = compression_ratios({"fc": weight}, num_clusters=8).layers[0]
    nonzero = int((weight != 0).sum())

    def walked(width):
        entries, previous = 0, -1
        for position in torch.flatten(weight).nonzero().squeeze(1).tolist():
            entries += 1 + (position - previous - 1) // 2**width
            previous = position
        codes = 8 + (entries > nonzero)
        return entries * (math.ceil(math.log2(codes)) + width)

    best = min([walked(width) for width in range(1, 17)] + [weight.numel() * 4])
    assert layer.maximum_compression_bits == best + 8 * 32
    dense = layer.relative_index_width is None
    assert dense == (best == weight.numel() * 4)
    assert dense == (density == 0.9)


def structured(shapes, kept, bits, generator):
    weights, masks, precisions = {}, {}, {}
    for (name, shape), (outputs, inputs), total in zip(shapes.items(), kept, bits, strict=True):
        weights[name] = torch.randn(shape, generator=generator)
        masks[name] = UnitMasks(torch.arange(shape[1]) < inputs, torch.arange(shape[0]) < outputs)
        precisions[name] = LayerPrecision(exponent=3, mantissa=total - 4)
    return weights, masks, precisions


def test_compression_ratios_reproduce_table_9():
    generator = torch.Generator().manual_seed(0)
    # LeNet-5-Caffe with BC-GHS: 5-10-76-16 groups kept, 10-10-14-13 bits (Table 8).
    lenet5 = {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5), "fc1": (500, 800), "fc2": (10, 500)}
    kept = [(5, 1), (10, 5), (16, 76), (10, 16)]
    ratios = compression_ratios(*structured(lenet5, kept, [10, 10, 14, 13], generator))
    assert math.floor(ratios.pruning) == 156
    assert math.floor(ratios.fast_prediction) == 419
    assert math.floor(ratios.maximum_compression) == 771
    assert round(100 * ratios.kept_fraction, 1) == 0.6
    # LeNet-300-100 with BC-GHS: 311-86-14 inputs kept, 13-11-10 bits.
    lenet300 = {"fc1": (300, 784), "fc2": (100, 300), "fc3": (10, 100)}
    kept = [(86, 311), (14, 86), (10, 14)]
    ratios = compression_ratios(*structured(lenet300, kept, [13, 11, 10], generator))
    assert math.floor(ratios.pruning) == 9
    assert math.floor(ratios.fast_prediction) == 23
    assert math.floor(ratios.maximum_compression) == 59


@pytest.mark.parametrize(
    "arguments, message",
    [
        (({},), "non-empty mapping"),
        (({"fc": torch.ones(3)},), "at least 2 dimensions"),
        (({"fc": torch.ones(2, 2)}, {"fc2": None}), "unit masks for 'fc2'"),
        (({"fc": torch.ones(2, 2)}, None, {}), "no precision for 'fc'"),
        (({"fc": torch.full((2, 2), float("nan"))},), "NaN"),
        (
            ({"fc": torch.ones(2, 2)}, {"fc": UnitMasks(*[torch.ones(3, dtype=torch.bool)] * 2)}),
            "do not fit",
        ),
    ],
)
def test_compression_ratios_refuse_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        compression_ratios(*arguments)
