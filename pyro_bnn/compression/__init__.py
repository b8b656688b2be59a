"""Compression of trained Bayesian networks: each method's pruning rule, the cascade of removed
units through the network, bit precision, weight sharing, the compression rates of Louizos'
thesis (Table 9) and the export of a smaller deterministic network."""

from .compress import SCENARIOS, CompressedNetwork, compress
from .export import KeptInputs, export, masked_network, save_exported
from .inference import WindowMax2d, optimize_for_inference
from .precision import (
    CompressionRatios,
    LayerPrecision,
    compression_ratios,
    exponent_bits,
    layer_precision,
    relative_index_entries,
    round_to_precision,
    significant_bits,
    unit_round_off,
)
from .rules import layer_name, layer_posteriors, magnitude_masks, signal_to_noise_masks
from .selection import (
    ThresholdCandidate,
    ThresholdChoice,
    choose_threshold,
    one_standard_error_index,
)
from .sparse_vd import (
    DEFAULT_LOG_ALPHA_THRESHOLD,
    CompressionReport,
    LayerSparsity,
    PointGuide,
    compression_report,
    prune,
    pruned_posterior_mean,
)
from .structure import PRUNABLE_LAYERS, UnitMasks, cascade, kept_weights, layer_flops
from .timing import speed_up
from .weight_sharing import Codebook, kmeans_share, train_codebooks

__all__ = [
    "DEFAULT_LOG_ALPHA_THRESHOLD",
    "PRUNABLE_LAYERS",
    "SCENARIOS",
    "Codebook",
    "CompressedNetwork",
    "CompressionRatios",
    "CompressionReport",
    "KeptInputs",
    "LayerPrecision",
    "LayerSparsity",
    "PointGuide",
    "ThresholdCandidate",
    "ThresholdChoice",
    "UnitMasks",
    "WindowMax2d",
    "cascade",
    "choose_threshold",
    "compress",
    "compression_ratios",
    "compression_report",
    "exponent_bits",
    "export",
    "kept_weights",
    "kmeans_share",
    "layer_flops",
    "layer_name",
    "layer_posteriors",
    "layer_precision",
    "magnitude_masks",
    "masked_network",
    "one_standard_error_index",
    "optimize_for_inference",
    "prune",
    "pruned_posterior_mean",
    "relative_index_entries",
    "round_to_precision",
    "save_exported",
    "signal_to_noise_masks",
    "significant_bits",
    "speed_up",
    "train_codebooks",
    "unit_round_off",
]
