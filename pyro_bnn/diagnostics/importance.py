"""How well a guide matches its posterior: Pareto k-hat of the importance ratios, and PSIS-LOO.

For draws ``theta_s ~ q`` the importance ratios ``r_s = p(theta_s, y) / q(theta_s)`` have mean
``p(y)``; the heavier their right tail, the worse ``q`` covers the posterior.  Pareto-smoothed
importance sampling fits a generalized Pareto distribution to the largest ratios; its shape
``k-hat`` is the diagnostic of Yao et al. (2018): below ``min(1 - 1/log10(S), 0.7)``
importance sampling (and so the guide) is reliable, above it the guide misses mass the posterior
has, typically because it is too narrow.

Y. Yao, A. Vehtari, D. Simpson and A. Gelman, *Yes, but did it work?: Evaluating variational
inference*, ICML 2018.  A. Vehtari, D. Simpson, A. Gelman, Y. Yao and J. Gabry, *Pareto
smoothed importance sampling*, JMLR 2024.  A. Magnusson, M. Andersen, J. Jonasson and
A. Vehtari, *Bayesian leave-one-out cross-validation for large data*, ICML 2019 (PSIS-LOO
corrected for an approximate posterior).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np

from .arviz_compat import arviz_stats

#: The fewest draws whose largest ``min(S/5, 3 sqrt(S))`` make the five a tail fit needs.
MIN_DRAWS = 25

#: The widest spread (nats) of the tail's log ratios that a float64 fit still resolves:
#: ``exp(-690)`` is about ``1e-300``.
MAX_LOG_SPREAD = 690.0

#: The largest k-hat ArviZ and the PSIS paper still call reliable, whatever the sample size.
KHAT_THRESHOLD = 0.7


def _sample_stat(datatree, name: str, source: str):
    stats = datatree.get("sample_stats") if hasattr(datatree, "get") else None
    if stats is None or name not in stats.data_vars:
        raise ValueError(
            f"the DataTree has no sample_stats.{name}; it comes from pyro_bnn.diagnostics.{source}"
        )
    return stats[name]


def log_importance_ratios(datatree):
    """``lp - log_q`` per draw (a ``DataArray`` with dims ``(chain, draw)``) of a DataTree
    from :func:`~pyro_bnn.diagnostics.from_svi`."""
    return _sample_stat(datatree, "lp", "from_svi") - _sample_stat(datatree, "log_q", "from_svi")


def _tail_size(num_draws: int) -> int:
    """The number of largest ratios PSIS fits (r_eff = 1): ``3 sqrt(S)``, or ``S / 5`` for
    fewer than 225 draws."""
    return int(3 * math.sqrt(num_draws)) if num_draws > 225 else math.ceil(num_draws / 5)


def khat_threshold(num_draws: int) -> float:
    """``min(1 - 1/log10(S), 0.7)``: the sample-size dependent threshold of the PSIS paper."""
    return min(1 - 1 / math.log10(num_draws), KHAT_THRESHOLD) if num_draws > 10 else 0.0


def pareto_khat(datatree) -> float:
    """Pareto k-hat of the guide's importance ratios ``p(theta, y) / q(theta)`` (right tail).

    :param datatree: from :func:`~pyro_bnn.diagnostics.from_svi`, on the training data (the
        log joint the guide approximates).
    :returns: ``k-hat``; compare it with :func:`khat_threshold` of the number of draws.
        Constant ratios (the guide is the posterior, up to rounding) have no tail to fit and
        give ``-inf``.  Two cases give ``inf``: an infinite ratio (a draw at a pole of the
        prior's density), and a tail that floating point cannot hold, where the tail's
        smallest ratio is below ``1e-300`` times its largest (a spread of
        :data:`MAX_LOG_SPREAD` nats).  Fitted anyway, such a tail underflows to zeros and
        gives a small, meaningless k-hat; its largest draw alone outweighs the others by
        hundreds of orders of magnitude, as a guide far from its posterior does (a network's
        weight guide against the full log joint, typically).
    """
    log_ratios = log_importance_ratios(datatree)
    if log_ratios.size < MIN_DRAWS:
        raise ValueError(
            f"pareto_khat needs at least {MIN_DRAWS} draws, got {log_ratios.size}: the tail fit "
            "uses the largest min(S/5, 3 sqrt(S)) ratios and needs five of them"
        )
    if np.isnan(log_ratios.values).any():
        raise ValueError("the importance ratios are undefined (NaN) for some draws")
    if np.isposinf(log_ratios.values).any():
        return float("inf")
    if float(log_ratios.max() - log_ratios.min()) < 1e-9 * (1 + float(abs(log_ratios).max())):
        return float("-inf")
    ordered = np.sort(log_ratios.values.ravel())
    if ordered[-1] - ordered[-_tail_size(len(ordered))] > MAX_LOG_SPREAD:
        return float("inf")
    arviz_stats()  # registers the ``azstats`` accessor
    # The ratios themselves, scaled by their largest: arviz-stats 0.8 reads ``log_weights=True``
    # only for LOO's sign convention, so pass values whose right tail is the ratios'.
    ratios = np.exp(log_ratios - log_ratios.max())
    khat = ratios.azstats.pareto_khat(sample_dims=["chain", "draw"], tail="right", r_eff=1.0)
    return float(khat)


def loo(datatree, pointwise: bool = True, correct: bool = True):
    """PSIS-LOO of a DataTree: corrected for the variational proposal
    (``loo_approximate_posterior``) when it has ``sample_stats.log_q`` (SVI), plain ``loo``
    otherwise (MCMC).

    :param correct: with ``False``, a guide's draws are taken as posterior draws (plain PSIS-LOO
        on them).  The correction needs importance ratios a float64 can hold; for the weight
        guide of a whole network against its full log joint they overflow (its
        :func:`pareto_khat` is ``inf``), and only the uncorrected estimate is defined.
    :returns: ArviZ's ``ELPDData`` (``elpd``, ``se``, ``p``, per-observation ``pareto_k``).
    """
    stats = arviz_stats()
    if correct and "log_q" in datatree["sample_stats"].data_vars:
        return stats.loo_approximate_posterior(
            datatree,
            log_p=datatree["sample_stats"]["lp"],
            log_q=datatree["sample_stats"]["log_q"],
            pointwise=pointwise,
        )
    return stats.loo(datatree, pointwise=pointwise)


def _num_observations(datatree) -> int:
    if "log_likelihood" not in datatree.children:
        raise ValueError("the DataTree has no log_likelihood group to compare models with")
    return sum(
        value.size // (value.sizes["chain"] * value.sizes["draw"])
        for value in datatree["log_likelihood"].data_vars.values()
    )


def compare(models: Mapping[str, object], method: str = "stacking"):
    """ArviZ's ``compare`` of several models by PSIS-LOO, each computed with :func:`loo`.

    :param models: ``{name: DataTree or ELPDData}``, at least two, on the same observations.
    :returns: a ``pandas.DataFrame`` ranked by ``elpd``, with stacking weights.
    """
    if len(models) < 2:
        raise ValueError(f"compare needs at least two models, got {len(models)}")
    elpd = arviz_stats().ELPDData
    sizes = {
        name: value.n_data_points if isinstance(value, elpd) else _num_observations(value)
        for name, value in models.items()
    }
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"the models were scored on different numbers of observations: {sizes}; compare "
            "them on the same data"
        )
    results = {
        name: value if isinstance(value, elpd) else loo(value) for name, value in models.items()
    }
    with warnings.catch_warnings():
        # arviz-stats 0.8 sorts its table with pandas' deprecated ``inplace=True``; the
        # deprecation is theirs to fix and says nothing about the models.
        warnings.filterwarnings("ignore", message="The inplace keyword")
        return arviz_stats().compare(results, method=method)


def summary(datatree, **kwargs):
    """ArviZ's ``summary`` (mean, sd, intervals, ESS, R-hat, MCSE) of the posterior."""
    return arviz_stats().summary(datatree, **kwargs)


def ess(datatree, **kwargs):
    """ArviZ's effective sample size of each posterior variable."""
    return arviz_stats().ess(datatree, **kwargs)


def rhat(datatree, **kwargs):
    """ArviZ's rank-normalized split R-hat of each posterior variable (needs two chains)."""
    return arviz_stats().rhat(datatree, **kwargs)
