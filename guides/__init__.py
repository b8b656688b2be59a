"""Variational families (guides) for Bayesian neural networks.

Installed and imported as ``pyro_bnn.guides``.  Guides expose their variational distribution at
the model's own sample sites, so registered KL divergences apply and the layers can see the
distribution (local reparameterization).
"""

from .local_reparameterized_normal import (
    LocalReparameterizedNormal,
    local_reparameterization,
    local_reparameterization_enabled,
)
from .mean_field_normal import DEFAULT_INIT_LOG_VARIANCE, AutoMeanFieldNormal

__all__ = [
    "DEFAULT_INIT_LOG_VARIANCE",
    "AutoMeanFieldNormal",
    "LocalReparameterizedNormal",
    "local_reparameterization",
    "local_reparameterization_enabled",
]
