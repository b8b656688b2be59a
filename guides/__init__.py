"""Variational families (guides) for Bayesian neural networks.

Installed and imported as ``pyro_bnn.guides``.  Guides expose their variational distribution at
the model's own sample sites, so registered KL divergences apply and the layers can see the
distribution (local reparameterization).  :class:`AutoSiteGuide` chooses a family per site;
:class:`AutoMeanFieldNormal` is its all-Normal case.
"""

from .auto_site_guide import AutoSiteGuide
from .delta_family import DeltaFamily
from .family import (
    FAMILIES,
    PRIORS_WITH_ATOMS,
    GuideFamily,
    GuideFamilyWarning,
    Site,
    register_family,
)
from .hard_concrete_family import HardConcreteFamily
from .local_reparameterized_normal import (
    LocalReparameterizedNormal,
    local_reparameterization,
    local_reparameterization_enabled,
)
from .mean_field_normal import AutoMeanFieldNormal
from .normal_family import DEFAULT_INIT_LOG_VARIANCE, NormalFamily

__all__ = [
    "DEFAULT_INIT_LOG_VARIANCE",
    "FAMILIES",
    "AutoMeanFieldNormal",
    "AutoSiteGuide",
    "DeltaFamily",
    "GuideFamily",
    "GuideFamilyWarning",
    "HardConcreteFamily",
    "LocalReparameterizedNormal",
    "NormalFamily",
    "PRIORS_WITH_ATOMS",
    "Site",
    "local_reparameterization",
    "local_reparameterization_enabled",
    "register_family",
]
