"""
Priors for Bayesian deep learning as Pyro distributions, and the KL divergences
between them and their guides (registered on import).
"""

from . import kl
from .hard_concrete import HardConcrete
from .horseshoe import group_horseshoe, half_cauchy_decomposition
from .improper_log_uniform import ImproperLogUniform
from .kl import sparse_vd_kl
from .l0_prior import L0Prior
from .log_uniform import LogUniform
from .log_variance_normal import LogVarianceNormal
from .masked_coupling import MaskedCoupling
from .masked_flow import MaskedFlow
from .matrix_normal import MatrixNormal
from .random_graph import RandomGraph, dag_order, rbf_edge_logits
from .scale_mixture_normal import ScaleMixtureNormal
from .spike_and_slab import SpikeAndSlab
from .truncated_log_normal import TruncatedLogNormal

__all__ = [
    "HardConcrete",
    "ImproperLogUniform",
    "L0Prior",
    "LogUniform",
    "LogVarianceNormal",
    "MaskedCoupling",
    "MaskedFlow",
    "MatrixNormal",
    "RandomGraph",
    "ScaleMixtureNormal",
    "SpikeAndSlab",
    "TruncatedLogNormal",
    "dag_order",
    "group_horseshoe",
    "half_cauchy_decomposition",
    "kl",
    "rbf_edge_logits",
    "sparse_vd_kl",
]
