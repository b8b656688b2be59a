"""
Posterior diagnostics with ArviZ, for SVI and for MCMC.

* :mod:`~pyro_bnn.diagnostics.convert`: :func:`from_svi` (a trained guide) and
  :func:`from_mcmc` (a ``pyro.infer.MCMC`` run) give an ``xarray.DataTree`` with ArviZ's
  groups: ``posterior``, ``posterior_predictive``, ``log_likelihood``, ``observed_data`` and
  ``sample_stats`` (``lp``, and ``log_q`` for SVI), dims named from the model's plates and
  layers (:mod:`~pyro_bnn.diagnostics.dims`).
* :mod:`~pyro_bnn.diagnostics.importance`: :func:`pareto_khat` of a guide's importance ratios,
  :func:`loo` (PSIS-LOO, corrected for the variational proposal), :func:`compare`, and
  ArviZ's :func:`summary`, :func:`ess` and :func:`rhat`.
* :mod:`~pyro_bnn.diagnostics.predictive`: :func:`interval_coverage` of the posterior
  predictive.

ArviZ comes with the ``diagnostics`` extra (``pip install 'pyro-bnn[diagnostics]'``); the
figures are in :mod:`pyro_bnn.plots`.
"""

from .convert import LARGE_SITES, from_mcmc, from_svi
from .importance import (
    KHAT_THRESHOLD,
    compare,
    ess,
    khat_threshold,
    log_importance_ratios,
    loo,
    pareto_khat,
    rhat,
    summary,
)
from .predictive import interval_coverage

__all__ = [
    "KHAT_THRESHOLD",
    "LARGE_SITES",
    "compare",
    "ess",
    "from_mcmc",
    "from_svi",
    "interval_coverage",
    "khat_threshold",
    "log_importance_ratios",
    "loo",
    "pareto_khat",
    "rhat",
    "summary",
]
