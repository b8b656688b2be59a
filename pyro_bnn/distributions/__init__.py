"""
Priors for Bayesian deep learning as Pyro distributions, and the KL divergences
between them and their guides (registered on import).
"""

from . import kl
from .hard_concrete import HardConcrete
from .horseshoe import group_horseshoe, half_cauchy_decomposition
from .improper_log_uniform import ImproperLogUniform
from .kl import sparse_vd_kl
from .log_uniform import LogUniform
from .matrix_normal import MatrixNormal
from .scale_mixture_normal import ScaleMixtureNormal
from .spike_and_slab import SpikeAndSlab

__all__ = [
    "HardConcrete",
    "ImproperLogUniform",
    "LogUniform",
    "MatrixNormal",
    "ScaleMixtureNormal",
    "SpikeAndSlab",
    "group_horseshoe",
    "half_cauchy_decomposition",
    "kl",
    "sparse_vd_kl",
]
