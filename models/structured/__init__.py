"""Structured sparsity priors: a layer's weight as a hierarchy of Pyro sample sites whose groups
(input neurons, output channels) can be switched off, with each method's pruning rule.

:class:`~pyro_bnn.models.BayesianNetwork` takes them through its ``prior`` factory::

    model = BayesianNetwork(lenet_300_100(), CategoricalLikelihood(10, len(train)),
                            prior=structured_prior("group-horseshoe"))
    guide = AutoSiteGuide(model)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from .base import GROUP_DIMS, GroupPosterior, WeightPrior, group_dim, per_layer
from .group_horseshoe import GroupHorseshoe
from .group_normal_jeffreys import GroupNormalJeffreys
from .group_spike_and_slab import GroupSpikeAndSlab
from .l0_gates import L0Gates
from .structured_bayesian_pruning import StructuredBayesianPruning

#: Method name (as the command line spells it) -> prior class.
METHODS: dict[str, type[WeightPrior]] = {
    cls.method: cls
    for cls in (
        GroupNormalJeffreys,
        GroupHorseshoe,
        L0Gates,
        GroupSpikeAndSlab,
        StructuredBayesianPruning,
    )
}


def structured_prior(method: str, **options) -> Callable[[str, object], WeightPrior]:
    """A ``prior(name, parameter)`` factory for :class:`~pyro_bnn.models.BayesianNetwork` giving
    every selected weight the structured prior ``method`` (one of :data:`METHODS`).

    Each option is a value or a mapping from layer (``"fc1"``) or parameter (``"fc1.weight"``)
    names to values, for per-layer settings (L0's per-layer lambda of the thesis's "lambda
    sep." runs)::

        structured_prior("l0", penalty={"conv1": 10.0, "conv2": 0.5, "fc1": 0.1, "fc2": 0.1})
    """
    if method not in METHODS:
        raise ValueError(
            f"unknown structured method {method!r}; choose one of {', '.join(map(repr, METHODS))}"
        )
    cls = METHODS[method]
    accepted = set(inspect.signature(cls).parameters)
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(
            f"{method} takes the options {', '.join(sorted(accepted)) or 'none'}; got "
            f"{', '.join(sorted(unknown))}"
        )

    def prior(name: str, parameter) -> WeightPrior:
        return cls(**{key: per_layer(value, name, key) for key, value in options.items()})

    # Fail now, not at the first layer, on options the method refuses.
    cls(**{k: v for k, v in options.items() if not isinstance(v, dict)})
    return prior


__all__ = [
    "GROUP_DIMS",
    "METHODS",
    "GroupHorseshoe",
    "GroupNormalJeffreys",
    "GroupPosterior",
    "GroupSpikeAndSlab",
    "L0Gates",
    "StructuredBayesianPruning",
    "WeightPrior",
    "group_dim",
    "per_layer",
    "structured_prior",
]
