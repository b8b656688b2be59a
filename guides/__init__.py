"""Variational families (guides) for Bayesian neural networks.

Installed and imported as ``pyro_bnn.guides``.  Guides expose their variational distribution at
the model's own sample sites, so registered KL divergences apply and the layers can see the
distribution (local reparameterization).  :class:`AutoSiteGuide` chooses a family per site;
:class:`AutoMeanFieldNormal` is its all-Normal case.
"""

from .auto_site_guide import AutoSiteGuide
from .auxiliary import AUXILIARY_TERM, auxiliary_log_density
from .delta_family import DeltaFamily
from .family import (
    FAMILIES,
    PRIORS_WITH_ATOMS,
    GuideFamily,
    GuideFamilyWarning,
    Site,
    default_family_name,
    register_default_family,
    register_family,
)
from .functional_neural_process_guide import FunctionalNeuralProcessGuide
from .hard_concrete_family import HardConcreteFamily
from .local_reparameterized_matrix_normal import LocalReparameterizedMatrixNormal
from .local_reparameterized_normal import (
    LocalReparameterizedNormal,
    local_reparameterization,
    local_reparameterization_enabled,
)
from .matrix_normal_family import MatrixNormalFamily
from .mean_field_normal import AutoMeanFieldNormal
from .multiplicative_flow_family import MultiplicativeFlowFamily, MultiplicativeNormal
from .normal_family import DEFAULT_INIT_LOG_VARIANCE, NormalFamily
from .spike_and_slab_family import (
    RelaxedBernoulliFamily,
    RelaxedInclusion,
    RelaxedSpikeAndSlab,
    SpikeAndSlabFamily,
)
from .truncated_log_normal_family import TruncatedLogNormalFamily

__all__ = [
    "AUXILIARY_TERM",
    "DEFAULT_INIT_LOG_VARIANCE",
    "FAMILIES",
    "AutoMeanFieldNormal",
    "AutoSiteGuide",
    "DeltaFamily",
    "FunctionalNeuralProcessGuide",
    "GuideFamily",
    "GuideFamilyWarning",
    "HardConcreteFamily",
    "LocalReparameterizedMatrixNormal",
    "LocalReparameterizedNormal",
    "MatrixNormalFamily",
    "MultiplicativeFlowFamily",
    "MultiplicativeNormal",
    "NormalFamily",
    "RelaxedBernoulliFamily",
    "RelaxedInclusion",
    "RelaxedSpikeAndSlab",
    "SpikeAndSlabFamily",
    "TruncatedLogNormalFamily",
    "PRIORS_WITH_ATOMS",
    "Site",
    "auxiliary_log_density",
    "default_family_name",
    "register_default_family",
    "local_reparameterization",
    "local_reparameterization_enabled",
    "register_family",
]
