"""The protocol of a variational family for one sample site, and the registry of families.

A per-site autoguide (:class:`~pyro_bnn.guides.AutoSiteGuide`) asks each site's family for its
parameters once, when it first sees the model, and for the site's distribution on every call.
The distribution is exposed at the model's own site, so KL divergences registered for the
(family, prior) pair apply, and its sample may be a
:class:`~pyro_bnn.ops.StochasticWeight` that the layers can see.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import Transform, constraints


@dataclass
class Site:
    """What a family needs to know about a latent site of the model.

    :ivar name: the site's name (``"net.fc1.weight"``).
    :ivar prior: the model's distribution at the site, with ``Independent`` and masking
        wrappers removed (so ``isinstance(site.prior, HardConcrete)`` works).
    :ivar support: the site's support (without the event reinterpretation).
    :ivar shape: the shape of one value (batch and event dimensions of the prior).
    :ivar event_dim: the prior's number of event dimensions.
    :ivar transform: the elementwise bijection from the reals onto the support, or ``None``
        where none exists (a simplex, a correlation matrix).
    :ivar max_scale: a cap on the standard deviation that the guide was asked to apply here.
    :ivar init_log_variance: a starting log-variance the model suggests for the site
        (``infer={"init_log_variance": ...}``, a number or a tensor of the site's shape), used
        by families that have one instead of their default.
    :ivar init_log_alpha: a starting gate ``log alpha`` the model suggests
        (``infer={"init_log_alpha": ...}``), used by the hard-concrete family.
    :ivar per_example: the model asked for the site's sample to be drawn afresh for every
        example where it scales a layer's weight (``infer={"per_example": True}``): a group
        scale, gate or noise, locally reparameterized (:func:`~pyro_bnn.ops.per_example`).
    """

    name: str
    prior: dist.Distribution
    support: constraints.Constraint
    shape: torch.Size
    event_dim: int
    transform: Transform | None
    max_scale: float | None = None
    per_example: bool = False
    init_log_variance: float | torch.Tensor | None = None
    init_log_alpha: float | torch.Tensor | None = None


class GuideFamily:
    """A variational family for one site; subclasses are registered under :attr:`name`.

    Parameters live on a per-site ``PyroModule`` created by the guide (so they are
    ``pyro.param`` statements, the guide's ``nn.Parameter`` s and entries of Pyro's parameter
    store at once).
    """

    #: The name users select the family by (``families={"net.*.weight": "normal"}``).
    name: str = ""

    #: Whether the family can put probability on single points (exact zeros, open gates).  A
    #: prior with such atoms (:data:`PRIORS_WITH_ATOMS`) given a family without them trains,
    #: but its posterior can never say "exactly zero": the guide warns.
    has_atoms: bool = False

    def unsupported(self, site: Site) -> str | None:
        """Why the family cannot represent ``site``'s support, or ``None`` if it can."""
        return None

    def parameters(self, site: Site, init: torch.Tensor) -> dict[str, PyroParam | PyroModule]:
        """The family's parameters for ``site``, starting from ``init``, an initial value of
        the site (in its support, shape :attr:`Site.shape`): ``PyroParam`` s, or
        ``PyroModule`` s for families with networks of their own (a flow's coupling layers),
        whose parameters Pyro's parameter store then holds too."""
        raise NotImplementedError

    def posterior(self, site: Site, params: PyroModule) -> dist.Distribution:
        """The variational distribution of ``site``, batch shape :attr:`Site.shape`, no event
        dimensions (the guide reinterprets them); ``params`` holds the family's parameters as
        attributes."""
        raise NotImplementedError

    def sample(self, site: Site, params: PyroModule) -> torch.Tensor:
        """Issue the site's sample statement inside the guide and return its value.

        Most families sample their :meth:`posterior` at the site; a family with auxiliary
        variables (a flow over multiplicative noise) first samples those at sites of its own
        and conditions the site's distribution on them.
        """
        return pyro.sample(site.name, self.posterior(site, params).to_event(site.event_dim))

    def median(self, site: Site, params: PyroModule) -> torch.Tensor:
        """A point estimate of the site: the posterior median where the family has one."""
        raise NotImplementedError

    def log_alpha(self, site: Site, params: PyroModule) -> torch.Tensor | None:
        """``log sigma^2 - log mu^2`` per entry of a real weight site, the noise-to-signal ratio
        that sparse variational dropout prunes by, or ``None`` where the family has none."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GuideFamilyWarning(UserWarning):
    """A site's family cannot represent a feature of its prior (its point masses)."""


def _priors_with_atoms() -> tuple[type, ...]:
    from pyro_bnn.distributions import HardConcrete, SpikeAndSlab

    return (HardConcrete, SpikeAndSlab)


#: Priors that put probability on single points: a spike at zero, closed gates.
PRIORS_WITH_ATOMS = _priors_with_atoms()

#: Family name -> class; a family class registers itself by subclassing with a name.
FAMILIES: dict[str, type[GuideFamily]] = {}


def register_family(cls: type[GuideFamily]) -> type[GuideFamily]:
    """Class decorator: make ``cls`` selectable by its :attr:`~GuideFamily.name`."""
    if not cls.name or cls.name in FAMILIES:
        raise ValueError(f"a guide family needs a new, non-empty name; got {cls.name!r}")
    FAMILIES[cls.name] = cls
    return cls


#: Prior type -> the name of the family a guide gives its sites by default (the first match in
#: the prior's MRO); the Normal family covers every prior not listed.
DEFAULT_FAMILIES: dict[type, str] = {}


def register_default_family(prior_type: type, family_name: str) -> None:
    """Give sites with a ``prior_type`` prior the family ``family_name`` unless the guide's
    ``families`` say otherwise."""
    DEFAULT_FAMILIES[prior_type] = family_name


def default_family_name(prior) -> str | None:
    for cls in type(prior).__mro__:
        if cls in DEFAULT_FAMILIES:
            return DEFAULT_FAMILIES[cls]
    return None


def as_family(value) -> GuideFamily:
    """A family instance from an instance or a registered name."""
    if isinstance(value, GuideFamily):
        return value
    if isinstance(value, str) and value in FAMILIES:
        return FAMILIES[value]()
    raise ValueError(
        f"unknown guide family {value!r}; use a GuideFamily instance or one of "
        f"{', '.join(map(repr, sorted(FAMILIES)))}"
    )
