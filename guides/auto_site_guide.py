"""An autoguide that chooses a variational family per sample site."""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Callable, Mapping
from contextlib import ExitStack, nullcontext

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoGuide
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    ExpTransform,
    IndependentTransform,
)

from .family import (
    PRIORS_WITH_ATOMS,
    GuideFamily,
    GuideFamilyWarning,
    Site,
    as_family,
    default_family_name,
)
from .normal_family import DEFAULT_INIT_LOG_VARIANCE, NormalFamily

#: A family selection key: a glob pattern on site names (``"net.fc*.weight"``), a prior type
#: (``HardConcrete``, matched after removing ``Independent`` wrappers), or a predicate
#: ``(name, site) -> bool`` on the model's trace site.
Selector = str | type | Callable[[str, dict], bool]


def _elementwise_bijection(support: constraints.Constraint):
    """``biject_to(support)`` with any ``IndependentTransform`` wrapper removed (the guide
    reinterprets event dimensions itself), or ``None`` if it is not elementwise."""
    try:
        transform = biject_to(support)
    except NotImplementedError:
        return None
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    if transform.domain.event_dim or transform.codomain.event_dim:
        return None
    return _without_identity_shift(transform)


def _without_identity_shift(transform):
    """``exp`` for torch's bijection to the positive reals.

    ``constraints.positive`` and ``constraints.nonnegative`` (the support of ``Gamma``) share
    their class with ``greater_than(_eq)``, whose registered bijection is ``exp`` followed by
    ``AffineTransform(0, 1)``; dropping that identity step lets a positive site get a
    ``LogNormal``, for which the KLs against ``Gamma`` and ``InverseGamma`` are registered.
    """
    if not isinstance(transform, ComposeTransform):
        return transform
    parts = [
        part
        for part in transform.parts
        if not (
            isinstance(part, AffineTransform)
            and bool((torch.as_tensor(part.loc) == 0).all())
            and bool((torch.as_tensor(part.scale) == 1).all())
        )
    ]
    if len(parts) == 1 and isinstance(parts[0], ExpTransform):
        return parts[0]
    return transform


def _base_support(support: constraints.Constraint) -> constraints.Constraint:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def _unwrap(fn: dist.Distribution) -> dist.Distribution:
    while isinstance(fn, (dist.Independent, dist.MaskedDistribution)):
        fn = fn.base_dist
    return fn


def _init_to_feasible(site: dict) -> torch.Tensor:
    """A feasible value of the right shape, found without sampling: improper priors such as
    :class:`~pyro_bnn.distributions.ImproperLogUniform` have no samples."""
    fn = site["fn"]
    # Take the dtype and device from the prior's parameters (through its mean) where it has any,
    # so a float64 or GPU model gets a float64 or GPU guide; parameter-free priors such as
    # ImproperLogUniform fall back to torch's defaults.
    try:
        like = fn.mean
    except (NotImplementedError, ValueError):
        like = None
    if not (torch.is_tensor(like) and like.is_floating_point()):
        like = torch.zeros(())
    zeros = torch.zeros(fn.batch_shape + fn.event_shape, dtype=like.dtype, device=like.device)
    try:
        return biject_to(fn.support)(zeros).detach()
    except NotImplementedError:
        return fn.sample().detach()


def _kaiming_uniform_bound(shape: torch.Size) -> float:
    # torch's default for nn.Linear / nn.ConvNd: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which is
    # kaiming_uniform_ with a = sqrt(5) for the weight and the same bound for the bias.
    return 1.0 / math.sqrt(math.prod(shape[1:]))


def _initial_values(params: dict) -> list[tuple[str, torch.Tensor]]:
    """``(name, initial value)`` of a family's parameters, those of its modules included."""
    values = []
    for name, param in params.items():
        if isinstance(param, nn.Module):
            values += [(f"{name}.{key}", value) for key, value in param.named_parameters()]
        else:
            values.append((name, param.init_value))
    return values


class _SiteParameters(PyroModule):
    """The parameters of one site's family, as ``PyroParam`` attributes."""


class AutoSiteGuide(AutoGuide):
    """A guide with one variational family per latent site, exposed at the model's own site.

    Unlike Pyro's ``AutoNormal`` there are no auxiliary ``_unconstrained`` sites: each site of
    the model gets its family's distribution (:class:`~pyro_bnn.guides.NormalFamily`,
    :class:`~pyro_bnn.guides.HardConcreteFamily`, :class:`~pyro_bnn.guides.DeltaFamily`, or
    your own :class:`~pyro_bnn.guides.GuideFamily`), so registered KL divergences apply, and a
    family's sample may be a :class:`~pyro_bnn.ops.StochasticWeight` that the layers use for
    local reparameterization.

    Families are chosen in this order: the first entry of ``families`` whose key selects the
    site (a glob pattern on the site name, a prior type, or a predicate ``(name, site) ->
    bool``), then the default registered for the prior's type
    (:data:`~pyro_bnn.guides.family.DEFAULT_FAMILIES`: hard-concrete gates for
    :class:`~pyro_bnn.distributions.HardConcrete` and :class:`~pyro_bnn.distributions.L0Prior`,
    a truncated log-normal for :class:`~pyro_bnn.distributions.LogUniform`, spike-and-slab for
    :class:`~pyro_bnn.distributions.SpikeAndSlab`, a relaxed Bernoulli for ``Bernoulli``), then
    the Normal family (Normal for real weights, LogNormal for positive scales).  A site the
    model marks with ``infer={"per_example": True}`` (a group scale, gate or noise) gets a
    family sample drawn afresh for every example where it scales a layer's weight.
    Hierarchical priors whose sites nest under a weight's name (``fc1.weight``,
    ``fc1.weight.global.scale``) are fine.

    Initial values: the matching entry of ``pretrained`` (site name -> tensor), else
    ``init_loc_fn(site)``, else the value the model suggests with ``infer={"init_value": ...}``
    (a group scale starts at 1), else torch's own layer initialization ``U(-1/sqrt(fan_in),
    1/sqrt(fan_in))`` for real sites with at least two dimensions (weights) and for a
    one-dimensional site whose sibling ``weight`` site exists (its bias), zero for other real
    sites and a feasible point (1 for positive scales) otherwise.  Each family documents what
    it does with the value (the Normal family starts its mean there with ``log sigma^2 =
    init_log_variance``; the hard-concrete family starts with open gates; the point mass
    starts at it).

    Parameters are ``PyroParam`` s: each read is a ``pyro.param`` statement, so the guide and
    Pyro's parameter store always agree.  As for Pyro's own modules, the store wins: a guide
    built again in a re-run notebook cell continues from the stored values
    (``pyro.clear_param_store()`` starts afresh), ``pyro.get_param_store().save/load``
    round-trips, and with ``pyro.settings.set(module_local_params=True)`` the parameters live
    in the guide alone.

    :param model: a Pyro model.  Its latent sites must be global (outside any subsampled
        plate).
    :param families: ``{selector: family}``, a family being a
        :class:`~pyro_bnn.guides.GuideFamily` or its name (``"normal"``, ``"hard_concrete"``,
        ``"delta"``).  Every selector must select at least one site, and its family must cover
        the site's support.
    :param pretrained: an ``nn.Module`` or a state dict whose entries, matched by site name,
        initialize the sites.
    :param init_loc_fn: Pyro's ``init_loc_fn(site) -> value`` for sites ``pretrained`` lacks.
    :param init_log_variance: initial ``log sigma^2`` of the default Normal family.
    :param max_scale: a cap on the Normal family's standard deviations: a number for every
        site, or a mapping from a site name or a module prefix (``"fc1"``) to a number.
        Louizos et al. clip sigma in multiplicative-flow and Bayesian-compression networks.
    :param local_reparameterization: let the default Normal family's real sites reach
        ``F.linear`` / ``F.convNd`` as Gaussian weights (sampling layer outputs, not weights).
    """

    def __init__(
        self,
        model: Callable,
        *,
        families: Mapping[Selector, GuideFamily | str] | None = None,
        pretrained: nn.Module | Mapping[str, torch.Tensor] | None = None,
        init_loc_fn: Callable | None = None,
        init_log_variance: float = DEFAULT_INIT_LOG_VARIANCE,
        max_scale: float | Mapping[str, float] | None = None,
        local_reparameterization: bool = True,
    ):
        self._normal = NormalFamily(init_log_variance, local_reparameterization)
        self._families = [(key, as_family(value)) for key, value in (families or {}).items()]
        for key, _ in self._families:
            if not isinstance(key, (str, type)) and not callable(key):
                raise TypeError(
                    f"a family selector must be a site-name pattern, a prior type or a "
                    f"predicate (name, site) -> bool; got {key!r}"
                )
        caps = max_scale.values() if isinstance(max_scale, Mapping) else [max_scale]
        for cap in caps:
            if cap is not None and not cap > 0:
                raise ValueError(f"max_scale must be positive, got {cap}")
        if isinstance(pretrained, nn.Module):
            pretrained = pretrained.state_dict()
        self._pretrained = dict(pretrained or {})
        self._init_loc_fn = init_loc_fn
        self.init_log_variance = self._normal.init_log_variance
        self.max_scale = max_scale
        self.local_reparameterization = local_reparameterization
        super().__init__(InitMessenger(_init_to_feasible)(model))

    # ----------------------------------------------------------------------------- set-up

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        try:
            self._create_parameters()
        except Exception:
            # Forget the trace: forward sets up only while prototype_trace is None, so a second
            # call after a bad-input error went on to fail with "no attribute '_sites'" instead
            # of raising the same clear error again.
            self.prototype_trace = None
            raise

    def _create_parameters(self) -> None:
        sites = dict(self.prototype_trace.iter_stochastic_nodes())
        plan = self._plan(sites)  # every check before any parameter exists
        parameters = {}
        for name, (site, family) in plan.items():
            init = self._initial_value(name, sites[name], sites).to(sites[name]["value"])
            if init.shape != site.shape:
                raise ValueError(
                    f"the initial value of {name!r} has shape {tuple(init.shape)}, but the "
                    f"model's site has shape {tuple(site.shape)}"
                )
            parameters[name] = family.parameters(site, init)
        self._check_store(parameters)
        self.params = PyroModule()
        self._sites: dict[str, Site] = {}
        self._site_families: dict[str, GuideFamily] = {}
        self._site_params: dict[str, _SiteParameters] = {}
        for name, (site, family) in plan.items():
            module = self._module_at(name)
            for param_name, value in parameters[name].items():
                setattr(module, param_name, value)
            self._sites[name] = site
            self._site_families[name] = family
            self._site_params[name] = module

    def _plan(self, sites: dict) -> dict[str, tuple[Site, GuideFamily]]:
        used = [False] * len(self._families)
        chosen_by = {}  # site name -> the selector that gave it its family
        plan = {}
        for name, trace_site in sites.items():
            for frame in trace_site["cond_indep_stack"]:
                if (frame.full_size or frame.size) != frame.size:
                    raise NotImplementedError(
                        f"site {name!r} is a local latent variable inside the subsampled plate "
                        f"{frame.name!r}; {type(self).__name__} covers global latent variables "
                        "only (if it is the model's observation, the guide was called without "
                        "its data: pass the targets too, guide(x, y))"
                    )
            fn = trace_site["fn"]
            support = _base_support(fn.support)
            site = Site(
                name=name,
                prior=_unwrap(fn),
                support=support,
                shape=trace_site["value"].shape,
                event_dim=fn.event_dim,
                transform=_elementwise_bijection(support),
                max_scale=self._cap(name),
                per_example=bool(trace_site["infer"].get("per_example", False)),
                init_log_variance=trace_site["infer"].get("init_log_variance"),
                init_log_alpha=trace_site["infer"].get("init_log_alpha"),
            )
            family, selector = self._default_family(site), "the default"
            for index, (key, candidate) in enumerate(self._families):
                if self._selects(key, name, site, trace_site):
                    used[index] = True
                    chosen_by[name] = key
                    family, selector = candidate, f"the selector {key!r}"
                    break
            reason = family.unsupported(site)
            if reason is not None:
                raise ValueError(
                    f"{selector} gives site {name!r} the {family.name!r} family, which cannot "
                    f"represent it: {reason}"
                )
            if isinstance(site.prior, PRIORS_WITH_ATOMS) and not family.has_atoms:
                warnings.warn(
                    f"site {name!r} has a {type(site.prior).__name__} prior, which puts "
                    f"probability on single points, but {selector} gives it the {family.name!r} "
                    "family, which has none: its posterior can never be exactly 0 (or an open "
                    "gate exactly 1), and pruning by it loses that meaning. Choose a family "
                    "with point masses for it, e.g. families={" + repr(name) + ': "hard_concrete"}'
                    " for a gate.",
                    GuideFamilyWarning,
                    stacklevel=4,
                )
            plan[name] = (site, family)
        for (key, family), was_used in zip(self._families, used, strict=True):
            if was_used:
                continue
            # A selector whose sites all went to earlier entries does nothing either; it used to
            # be reported as matching no site, while the listed sites included its matches.
            taken = [
                f"{name!r} by {chosen_by[name]!r}"
                for name, trace_site in sites.items()
                if self._selects(key, name, plan[name][0], trace_site)
            ]
            if taken:
                raise ValueError(
                    f"the family selector {key!r} (for {family.name!r}) selects no site: the "
                    f"first matching entry wins, and earlier selectors took its sites "
                    f"({', '.join(taken)})"
                )
            raise ValueError(
                f"the family selector {key!r} (for {family.name!r}) matches no latent site "
                f"of the model; its sites are {', '.join(map(repr, sites)) or 'none'}"
            )
        return plan

    @staticmethod
    def _selects(key: Selector, name: str, site: Site, trace_site: dict) -> bool:
        if isinstance(key, str):
            return fnmatch.fnmatchcase(name, key)
        if isinstance(key, type):
            return isinstance(site.prior, key)
        return bool(key(name, trace_site))

    def _default_family(self, site: Site) -> GuideFamily:
        name = default_family_name(site.prior)
        return self._normal if name is None else as_family(name)

    def _module_at(self, name: str) -> _SiteParameters:
        module = self.params
        for part in name.split("."):
            child = module._modules.get(part)
            if child is None:
                child = _SiteParameters()
                module.add_module(part, child)
            module = child
        return module

    def _check_store(self, parameters: dict[str, dict]) -> None:
        """Refuse stale entries of Pyro's parameter store with another shape: the store wins
        (as for every PyroModule), and a model whose layers changed size would silently train
        with the old shapes."""
        if pyro.settings.get("module_local_params"):
            return
        store = pyro.get_param_store()
        prefix = f"{self._pyro_name}.params." if self._pyro_name else "params."
        for name, params in parameters.items():
            for param_name, value in _initial_values(params):
                full = f"{prefix}{name}.{param_name}"
                if full in store and store[full].shape != value.shape:
                    raise ValueError(
                        f"Pyro's parameter store holds {full!r} with shape "
                        f"{tuple(store[full].shape)}, but site {name!r} needs "
                        f"{tuple(value.shape)}: it was left by another model. Call "
                        "pyro.clear_param_store() first."
                    )

    def _initial_value(self, name: str, site: dict, sites: dict) -> torch.Tensor:
        if name in self._pretrained:
            return torch.as_tensor(self._pretrained[name]).detach()
        if self._init_loc_fn is not None:
            return self._init_loc_fn(site)
        if "init_value" in site["infer"]:
            return torch.as_tensor(site["infer"]["init_value"]).detach()
        value = site["value"].detach()
        if _base_support(site["fn"].support) is not constraints.real:
            return value
        shape = value.shape
        if value.dim() >= 2:
            bound = _kaiming_uniform_bound(shape)
        else:
            sibling = name.rpartition(".")[0] + ".weight" if "." in name else "weight"
            if sibling not in sites or sites[sibling]["value"].dim() < 2:
                return torch.zeros_like(value)
            bound = _kaiming_uniform_bound(sites[sibling]["value"].shape)
        return torch.empty_like(value).uniform_(-bound, bound)

    def _cap(self, name: str) -> float | None:
        if not isinstance(self.max_scale, Mapping):
            return self.max_scale
        prefix = name
        while prefix:
            if prefix in self.max_scale:
                return self.max_scale[prefix]
            prefix = prefix.rpartition(".")[0]
        return None

    # ----------------------------------------------------------------------------- posterior

    def family(self, name: str) -> GuideFamily:
        """The family chosen for site ``name``."""
        self._check_ready()
        return self._site_families[name]

    def get_posterior(self, name: str) -> dist.Distribution:
        """The variational distribution of site ``name``, without the event reinterpretation."""
        return self._site_families[name].posterior(self._sites[name], self._site_params[name])

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Sample every latent site; the arguments are the model's."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for name, site in self._sites.items():
            with ExitStack() as stack:
                for frame in self.prototype_trace.nodes[name]["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                family = self._site_families[name]
                result[name] = family.sample(site, self._site_params[name])
        return result

    def _reading(self):
        # Outside a call, reading a PyroParam returns the module's own tensor; inside the
        # guide's context it is a pyro.param statement that picks up what the store holds
        # (after get_param_store().load, say), as a call would.
        return nullcontext() if self._pyro_context.active else self._pyro_context

    @torch.no_grad()
    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """A point estimate of each site: the posterior median (the mean for real sites)."""
        self._check_ready()
        with self._reading():
            return {
                name: family.median(self._sites[name], self._site_params[name]).detach()
                for name, family in self._site_families.items()
            }

    @torch.no_grad()
    def log_alpha(self) -> dict[str, torch.Tensor]:
        """``log alpha = log sigma^2 - log mu^2`` of every real weight site whose family has
        one (the Normal, matrix-normal and flow families), clamped to
        :data:`~pyro_bnn.distributions.kl.LOG_ALPHA_RANGE` as in the KL.

        alpha is the noise-to-signal ratio of the weight; a large value means the weight can be
        set to zero without changing the network (sparse variational dropout).
        """
        self._check_ready()
        result = {}
        with self._reading():
            for name, family in self._site_families.items():
                value = family.log_alpha(self._sites[name], self._site_params[name])
                if value is not None:
                    result[name] = value.detach()
        return result

    def _check_ready(self) -> None:
        if self.prototype_trace is None:
            raise RuntimeError(
                "the guide has not seen the model yet: call it once with the model's arguments "
                "(training does this) before asking for its posterior"
            )
