"""Calibration of a posterior predictive in a DataTree: interval coverage and width."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .arviz_compat import arviz_stats


def _observed_name(datatree, var_name: str | None) -> str:
    for group in ("posterior_predictive", "observed_data"):
        if group not in datatree.children:
            raise ValueError(f"the DataTree has no {group} group")
    names = list(datatree["observed_data"].data_vars)
    if var_name is None:
        if len(names) != 1:
            raise ValueError(f"the DataTree observes {names}; choose one with var_name=")
        return names[0]
    if var_name not in names:
        raise ValueError(f"the DataTree has no observed variable {var_name!r}; it has {names}")
    return var_name


def interval_coverage(
    datatree, probs: Sequence[float] = (0.5, 0.9), var_name: str | None = None
) -> dict[float, dict[str, float]]:
    """How often the observed values fall in the posterior predictive's equal-tailed intervals.

    For each probability ``p`` the central interval of the predictive draws of each
    observation (ArviZ's ``eti``, linear interpolation between order statistics) is compared
    with the observed value.  A calibrated predictive covers a fraction ``p`` of held-out
    observations; narrower intervals at the same coverage are better.

    :param datatree: with ``posterior_predictive`` and ``observed_data`` groups (from
        :func:`~pyro_bnn.diagnostics.from_svi` or :func:`~pyro_bnn.diagnostics.from_mcmc` on
        held-out data).
    :param probs: interval probabilities, each in ``(0, 1)``.
    :param var_name: the observed variable, when there are several.
    :returns: ``{p: {"coverage": fraction covered, "mean_width": mean interval width}}``.
    """
    for prob in probs:
        if not 0 < prob < 1:
            raise ValueError(f"interval probabilities must lie in (0, 1), got {prob}")
    name = _observed_name(datatree, var_name)
    draws = datatree["posterior_predictive"][name]
    observed = datatree["observed_data"][name]
    result = {}
    for prob in probs:
        interval = arviz_stats().eti(draws, prob=prob, dim=["chain", "draw"])
        lower = interval.sel(ci_bound="lower")
        upper = interval.sel(ci_bound="upper")
        covered = (observed >= lower) & (observed <= upper)
        result[float(prob)] = {
            "coverage": float(np.mean(covered.values)),
            "mean_width": float(np.mean((upper - lower).values)),
        }
    return result
