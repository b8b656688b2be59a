"""Compression of trained Bayesian networks: pruning rules, pruned weights and reports."""

from .sparse_vd import (
    DEFAULT_LOG_ALPHA_THRESHOLD,
    CompressionReport,
    LayerSparsity,
    PointGuide,
    compression_report,
    prune,
    pruned_posterior_mean,
)

__all__ = [
    "DEFAULT_LOG_ALPHA_THRESHOLD",
    "CompressionReport",
    "LayerSparsity",
    "PointGuide",
    "compression_report",
    "prune",
    "pruned_posterior_mean",
]
