"""The protocol of a structured weight prior: a layer's weight built from several sample sites.

The structured sparsity methods of the seeds put a hierarchy on each layer: a random scale,
gate or noise per *group* of weights (an input neuron of a linear layer, an output channel of a
convolution) times a weight that is random (Bayesian compression, group spike-and-slab) or a
point estimate (L0 gates, structured Bayesian pruning).  A :class:`WeightPrior` issues those
sample sites inside the model and returns the layer's weight; :class:`BayesianNetwork` accepts
one wherever its ``prior`` factory may return a distribution.  The sites are named after the
weight (``net.fc1.weight.group_scale``, ``net.fc1.weight.standardized``), and the composed
weight is recorded as the deterministic site ``net.fc1.weight``.

Each prior also knows its method's pruning rule (:meth:`WeightPrior.summarize`): from the guide's
posterior it computes the test-time weights, the marginal variance of every weight (for the bit
precision) and a statistic per group with the threshold that keeps or removes the group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

#: Layers whose weights can be grouped, and the weight dimension that indexes their groups:
#: input neurons of a linear layer (its weight is (out, in)), output channels of a convolution.
GROUP_DIMS: dict[type, int] = {nn.Linear: 1, nn.Conv1d: 0, nn.Conv2d: 0, nn.Conv3d: 0}


def group_dim(module: nn.Module, name: str) -> int:
    """The weight dimension of ``module`` that indexes its groups, or a clear error."""
    for cls, dim in GROUP_DIMS.items():
        if isinstance(module, cls):
            if getattr(module, "groups", 1) != 1:
                raise ValueError(
                    f"{name} is a grouped convolution (groups={module.groups}); structured "
                    "priors group output channels of ordinary convolutions only"
                )
            return dim
    raise ValueError(
        f"{name} belongs to a {type(module).__name__}, which a structured prior cannot group: "
        "groups are input neurons of nn.Linear and output channels of nn.Conv1d/2d/3d"
    )


@dataclass(frozen=True)
class GroupPosterior:
    """What the pruning rule of a method says about one layer.

    :ivar mean: the test-time weights before pruning, in the layer's layout: the posterior mean
        (thesis Eq. 82 and 92) or the method's estimator (L0's Eq. 107).
    :ivar variance: the marginal posterior variance of every weight (Eq. 93-94), same shape.
    :ivar statistic: the method's statistic per group, shape ``(groups,)``.
    :ivar keep: the groups that stay, ``statistic`` compared with the threshold.
    :ivar group_dim: the weight dimension that indexes the groups.
    :ivar weight_keep: for unstructured methods, the individual weights that stay (a group is
        kept when any of its weights is); ``None`` for group methods.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    statistic: torch.Tensor
    keep: torch.Tensor
    group_dim: int
    weight_keep: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        """The kept weights, shape of :attr:`mean`."""
        shape = [1] * self.mean.dim()
        shape[self.group_dim] = -1
        mask = self.keep.reshape(shape).expand_as(self.mean)
        return mask if self.weight_keep is None else mask & self.weight_keep

    @property
    def masked_mean(self) -> torch.Tensor:
        """The masked test-time weights, ``diag(m) W`` (zero in removed groups)."""
        return self.mean * self.mask


def group_view(values: torch.Tensor, shape: torch.Size, dim: int) -> torch.Tensor:
    """``(groups,)`` values shaped to broadcast along ``dim`` of a weight of ``shape``."""
    view = [1] * len(shape)
    view[dim] = -1
    return values.reshape(view)


def group_rms(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """The root mean square of each group's weights, shape ``(groups,)``: the starting group
    scale of the non-centred priors.  The product ``z * w~`` does not fix how the weight's size
    splits between the scale and the standardized weight; starting ``z`` at the group's size
    puts ``w~ = w / z`` on the scale of its N(0, 1) prior from the first step, instead of
    leaving SVI to move the size over (the thesis starts ``z`` at 1 and trains 200 epochs)."""
    others = [d for d in range(weight.dim()) if d != dim]
    return weight.square().mean(others).sqrt().clamp_min(1e-3)


def per_layer(value, name: str, what: str):
    """``value``, or its entry for the layer of parameter ``name`` when it is a mapping keyed by
    layer (``"fc1"``) or parameter (``"fc1.weight"``) name."""
    if not isinstance(value, Mapping):
        return value
    for key in (name, name.rpartition(".")[0]):
        if key in value:
            return value[key]
    raise ValueError(
        f"the {what} mapping has no entry for {name!r} (nor its layer); its keys are "
        f"{', '.join(map(repr, value))}"
    )


class WeightPrior:
    """A prior over one layer's weight, written as Pyro sample sites (see the module docstring).

    Subclasses set :attr:`method` (the name reports and the command line use),
    :attr:`deterministic_weight`, :attr:`default_threshold`, and implement :meth:`sample`,
    :meth:`summarize` and :meth:`check_threshold`.
    """

    method: str = ""
    #: The layer keeps its weight as a point estimate (an ``nn.Parameter`` called
    #: ``<name>_unscaled``) that the random group variables multiply.
    deterministic_weight: bool = False
    default_threshold: float = 0.0

    def sample(
        self, name: str, init: torch.Tensor, group_dim: int, unscaled: torch.Tensor | None
    ) -> torch.Tensor:
        """Issue the sample sites of the weight ``name`` inside a model and return the weight.

        :param name: the weight's full site name (``"net.fc1.weight"``).
        :param init: the layer's initial weight (shape, dtype, device and initial values).
        :param group_dim: the weight dimension that indexes the groups.
        :param unscaled: the layer's point-estimate weight when :attr:`deterministic_weight`.
        """
        raise NotImplementedError

    def summarize(
        self,
        guide,
        name: str,
        shape: torch.Size,
        group_dim: int,
        unscaled: torch.Tensor | None,
        threshold: float,
    ) -> GroupPosterior:
        """The method's pruning rule for the weight ``name`` under ``guide``'s posterior
        (a guide with ``get_posterior(site)``, such as :class:`~pyro_bnn.guides.AutoSiteGuide`)."""
        raise NotImplementedError

    def check_threshold(self, threshold: float) -> None:
        """Raise a ``ValueError`` if ``threshold`` is not a valid threshold of the rule."""
        if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(
                f"the {self.method} threshold must be a finite number, got {threshold!r}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def posterior_of(guide, site: str, kind: type | tuple[type, ...] | None = None):
    """The guide's variational distribution at ``site``, with a clear error for guides that
    cannot say, sites that do not exist, and (when ``kind`` is given) a family the pruning rule
    cannot read: a rule computes its statistic from the parameters of one family."""
    if not hasattr(guide, "get_posterior"):
        raise TypeError(
            f"{type(guide).__name__} cannot report its posterior per site; structured pruning "
            "needs a guide with get_posterior(site), such as AutoSiteGuide"
        )
    if getattr(guide, "prototype_trace", None) is None:
        raise RuntimeError(
            "the guide has not been trained: train it (or call it once with the model's "
            "arguments) before pruning or exporting"
        )
    try:
        fn = guide.get_posterior(site)
    except KeyError:
        raise ValueError(f"the guide has no site {site!r}; was it built for this model?") from None
    if kind is not None and not isinstance(fn, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise ValueError(
            f"the guide's posterior of {site!r} is a {type(fn).__name__}; its pruning rule reads "
            f"a {' or '.join(k.__name__ for k in kinds)} (the default family of its prior)"
        )
    return fn
