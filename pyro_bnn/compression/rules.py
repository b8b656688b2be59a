"""Each method's pruning rule, applied to a trained Bayesian network layer by layer.

A layer with a structured prior (:mod:`pyro_bnn.models.structured`) prunes with its method's
rule: the group's log alpha for group normal-Jeffreys, the log-mode of the group scale for the
horseshoe, the test-time gate for L0, the inclusion probability for spike-and-slab, the
signal-to-noise ratio for structured Bayesian pruning.  A layer with an elementwise prior prunes
weights: log alpha for sparse variational dropout's log-uniform prior, the inclusion probability
for a spike-and-slab; a group (input neuron, output channel) then goes when all its weights do.
For comparison, seed 003's rules rank the weights of any Gaussian posterior by their
signal-to-noise ratio ``|mu| / sigma`` or their magnitude ``|mu|`` and keep a fraction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import pyro.distributions as dist
import torch

from pyro_bnn.distributions import ImproperLogUniform, SpikeAndSlab
from pyro_bnn.models import BayesianNetwork
from pyro_bnn.models.structured import GroupPosterior, group_dim, per_layer
from pyro_bnn.models.structured.base import posterior_of

from .sparse_vd import DEFAULT_LOG_ALPHA_THRESHOLD


def layer_name(site: str) -> str:
    """The module name of a weight site in the model's network: ``"net.fc1.weight"`` ->
    ``"fc1"``."""
    return site.removeprefix("net.").rpartition(".")[0]


def _elementwise_prior(model: BayesianNetwork, site: str):
    fn = model.priors[site]
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    return fn


def _check_trained(guide) -> None:
    if getattr(guide, "prototype_trace", None) is None:
        raise RuntimeError(
            "the guide has not been trained: train it (or call it once with the model's "
            "arguments) before pruning or exporting"
        )


def layer_posteriors(
    model: BayesianNetwork, guide, thresholds: float | Mapping[str, float] | None = None
) -> dict[str, GroupPosterior]:
    """The pruning decision of every weight with a prior, keyed by layer name (``"fc1"``).

    :param model: the trained :class:`~pyro_bnn.models.BayesianNetwork`.
    :param guide: its trained guide (with ``get_posterior(site)``, such as
        :class:`~pyro_bnn.guides.AutoSiteGuide`).
    :param thresholds: a threshold for every layer, a mapping from layer names to thresholds,
        or ``None`` for each method's default.  Every threshold is checked (range, type)
        before anything is computed.
    """
    if not isinstance(model, BayesianNetwork):
        raise TypeError(f"pruning rules need a BayesianNetwork, got {type(model).__name__}")
    _check_trained(guide)
    plan = []
    for site in model.random_sites():
        threshold = (
            None
            if thresholds is None
            else per_layer(thresholds, site.removeprefix("net."), "thresholds")
        )
        if site in model.structured:
            layer = model.structured[site]
            threshold = layer.prior.default_threshold if threshold is None else threshold
            layer.prior.check_threshold(threshold)
            plan.append((site, _structured_rule(model, layer), threshold))
            continue
        fn = _elementwise_prior(model, site)
        rule = next((r for t, r in _ELEMENTWISE.items() if isinstance(fn, t)), None)
        if rule is None:
            raise ValueError(
                f"{site} has a {type(fn).__name__} prior, which has no pruning rule; use a "
                "sparsity prior, or prune by signal_to_noise_masks / magnitude_masks"
            )
        rule, default, check = rule
        threshold = default if threshold is None else threshold
        check(threshold)
        module = model.net.get_submodule(layer_name(site))
        plan.append((site, _elementwise(rule, group_dim(module, site)), threshold))
    with torch.no_grad():
        return {layer_name(site): rule(guide, site, threshold) for site, rule, threshold in plan}


def _structured_rule(model, layer) -> Callable:
    def rule(guide, site, threshold):
        unscaled = model.unscaled_weight(site)
        return layer.prior.summarize(guide, site, layer.shape, layer.group_dim, unscaled, threshold)

    return rule


def _elementwise(spec, dim: int) -> Callable:
    statistic, keep, kind = spec  # the statistic, the keep test, the family it reads

    def rule(guide, site, threshold):
        fn = posterior_of(guide, site, kind)
        value = statistic(fn)
        weight_keep = keep(value, threshold)
        others = [d for d in range(value.dim()) if d != dim]
        loc = fn.loc
        if isinstance(fn, SpikeAndSlab):  # the median probability model
            loc = loc * (fn.probs > 0.5)
        return GroupPosterior(
            mean=loc,
            variance=fn.variance,
            statistic=value,
            keep=weight_keep.any(others[0])
            if len(others) == 1
            else weight_keep.permute(dim, *others).flatten(1).any(1),
            group_dim=dim,
            weight_keep=weight_keep,
        )

    return rule


def _log_alpha(fn) -> torch.Tensor:
    return fn.variance.log() - fn.loc.square().clamp_min(1e-30).log()


def _check_log_alpha(threshold) -> None:
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"the log alpha threshold must be a finite number, got {threshold!r}")


def _check_probability(threshold) -> None:
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise ValueError(f"the inclusion threshold must lie in (0, 1), got {threshold!r}")


_ELEMENTWISE = {
    ImproperLogUniform: (
        (_log_alpha, lambda value, t: value < t, dist.Normal),
        DEFAULT_LOG_ALPHA_THRESHOLD,
        _check_log_alpha,
    ),
    SpikeAndSlab: (
        (lambda fn: fn.probs, lambda value, t: value > t, SpikeAndSlab),
        0.5,
        _check_probability,
    ),
}


def _ranked_masks(model, guide, keep_fraction: float, score: Callable) -> dict[str, torch.Tensor]:
    if not (isinstance(keep_fraction, (int, float)) and 0 < keep_fraction <= 1):
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction!r}")
    _check_trained(guide)
    with torch.no_grad():
        scores = {}
        for site in model.random_sites():
            if site in model.structured:
                raise ValueError(
                    f"{site} has a structured prior; rank the weights of a Gaussian posterior "
                    "(mean field) instead"
                )
            scores[site] = score(posterior_of(guide, site, dist.Normal))
        flat = torch.cat([value.flatten() for value in scores.values()])
        kept = max(1, round(keep_fraction * flat.numel()))
        cut = flat.topk(kept).values.min()
        return {layer_name(site): value >= cut for site, value in scores.items()}


def signal_to_noise_masks(model, guide, keep_fraction: float) -> dict[str, torch.Tensor]:
    """Keep the fraction of weights with the largest ``|mu| / sigma`` over the whole network
    (seed 003's pruning by signal-to-noise ratio); ``{layer: bool mask}``."""
    return _ranked_masks(model, guide, keep_fraction, lambda fn: fn.loc.abs() / fn.scale)


def magnitude_masks(model, guide, keep_fraction: float) -> dict[str, torch.Tensor]:
    """Keep the fraction of weights with the largest posterior-mean magnitude ``|mu|`` (seed
    003's baseline); ``{layer: bool mask}``."""
    return _ranked_masks(model, guide, keep_fraction, lambda fn: fn.loc.abs())


__all__ = [
    "layer_name",
    "layer_posteriors",
    "magnitude_masks",
    "signal_to_noise_masks",
]
