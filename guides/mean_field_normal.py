"""The mean-field Gaussian autoguide with transparent local reparameterization."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import ExitStack

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
    identity_transform,
)

from pyro_bnn.distributions.kl import LOG_ALPHA_RANGE

from .local_reparameterized_normal import LocalReparameterizedNormal

#: Initial log-variance of every site (Louizos' thesis initializes log sigma^2 around -9):
#: the guide starts almost at the point estimate and lets the data ask for noise.
DEFAULT_INIT_LOG_VARIANCE = -9.0


def _elementwise_bijection(support: constraints.Constraint):
    """``biject_to(support)`` with any ``IndependentTransform`` wrapper removed: the guide
    reinterprets event dimensions itself."""
    transform = biject_to(support)
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


def _init_to_feasible(site: dict) -> torch.Tensor:
    """A feasible value of the right shape, found without sampling: improper priors such as
    :class:`~pyro_bnn.distributions.ImproperLogUniform` cannot be sampled."""
    fn = site["fn"]
    # Take the dtype and device from the prior's parameters (through its mean) where it has any,
    # so a float64 or GPU model gets a float64 or GPU guide; parameter-free priors such as
    # ImproperLogUniform fall back to torch's defaults.
    try:
        like = fn.mean
    except NotImplementedError:
        like = None
    if not (torch.is_tensor(like) and like.is_floating_point()):
        like = torch.zeros(())
    zeros = torch.zeros(fn.batch_shape + fn.event_shape, dtype=like.dtype, device=like.device)
    return biject_to(fn.support)(zeros).detach()


def _kaiming_uniform_bound(shape: torch.Size) -> float:
    # torch's default for nn.Linear / nn.ConvNd: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which is
    # kaiming_uniform_ with a = sqrt(5) for the weight and the same bound for the bias.
    fan_in = math.prod(shape[1:])
    return 1.0 / math.sqrt(fan_in)


class _Container(PyroModule):
    """Holds parameters at dotted paths (``fc1.weight``).  Being a ``PyroModule``, reading a
    parameter is a ``pyro.param`` statement, so ``pyro.infer.SVI`` with a ``pyro.optim``
    optimizer trains the guide like any other Pyro guide."""

    def set(self, path: str, value: torch.Tensor) -> None:
        module = self
        *parents, leaf = path.split(".")
        for name in parents:
            if name not in module._modules:
                module.add_module(name, _Container())
            module = module._modules[name]
        module.register_parameter(leaf, nn.Parameter(value))

    def get(self, path: str) -> torch.Tensor:
        # Walks the children directly and reads the leaf once: nn.Module.get_parameter reads it
        # twice (hasattr, then getattr), and every read is a pyro.param statement.
        module = self
        *parents, leaf = path.split(".")
        for name in parents:
            module = module._modules[name]
        return getattr(module, leaf)


class AutoMeanFieldNormal(AutoGuide):
    """A fully factorized Gaussian guide ``q(w) = prod_i N(w_i | mu_i, sigma_i^2)`` that exposes
    the Gaussian itself at each of the model's sample sites.

    Unlike :class:`pyro.infer.autoguide.AutoNormal` there are no auxiliary ``_unconstrained``
    sites: a site with real support gets a :class:`LocalReparameterizedNormal`, a positive site
    a ``LogNormal`` and any other elementwise-constrained site the Normal pushed through
    ``biject_to(support)``.  Registered KL divergences therefore apply (``TraceMeanField_ELBO``
    uses the sparse variational dropout KL against
    :class:`~pyro_bnn.distributions.ImproperLogUniform`), and when the sample of a real site
    reaches ``F.linear`` / ``F.conv2d`` the layer output is sampled with the local
    reparameterization trick, without changing the model.

    The parameterization is additive (Molchanov et al., 2017): each site has a mean ``loc`` and a
    log-variance ``log_variance = log sigma^2``, so the noise never enters ``dw/dmu``; the
    variational dropout rate ``log alpha = log sigma^2 - log mu^2`` is derived
    (:meth:`log_alpha`).

    :param model: a Pyro model.  Its latent sites should be global (outside any subsampled plate).
    :param pretrained: an ``nn.Module`` or a state dict whose entries, matched by site name
        (``fc1.weight``), initialize the means; sites it does not have use the default.
    :param init_loc_fn: the per-site initializer for everything else, in Pyro's
        ``init_loc_fn(site) -> value`` form.  The default reproduces torch's own layer
        initialization, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, for real sites with at least two
        dimensions (weights) and for a one-dimensional site whose sibling ``weight`` site exists
        (its bias); other real sites start at 0 and constrained sites at a feasible point.
    :param init_log_variance: initial ``log sigma^2`` of every site.
    :param max_scale: cap on the standard deviation ``sigma``: a number for every site, or a
        mapping from a site name or a module prefix (``"fc1"``) to a number.  Louizos et al. clip
        sigma in multiplicative-flow and Bayesian-compression networks to stabilize training.
    :param local_reparameterization: sample layer outputs rather than weights when a real site's
        sample reaches ``F.linear`` / ``F.conv2d``.
    """

    def __init__(
        self,
        model: Callable,
        *,
        pretrained: nn.Module | Mapping[str, torch.Tensor] | None = None,
        init_loc_fn: Callable | None = None,
        init_log_variance: float = DEFAULT_INIT_LOG_VARIANCE,
        max_scale: float | Mapping[str, float] | None = None,
        local_reparameterization: bool = True,
    ):
        if not math.isfinite(init_log_variance):
            raise ValueError(f"init_log_variance must be finite, got {init_log_variance}")
        caps = max_scale.values() if isinstance(max_scale, Mapping) else [max_scale]
        for cap in caps:
            if cap is not None and not cap > 0:
                raise ValueError(f"max_scale must be positive, got {cap}")
        if isinstance(pretrained, nn.Module):
            pretrained = pretrained.state_dict()
        self._pretrained = dict(pretrained or {})
        self._init_loc_fn = init_loc_fn
        self.init_log_variance = float(init_log_variance)
        self.max_scale = max_scale
        self.local_reparameterization = local_reparameterization
        super().__init__(InitMessenger(_init_to_feasible)(model))

    # ----------------------------------------------------------------------------- set-up

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        self.locs = _Container()
        self.log_variances = _Container()
        self._event_dims = {}
        self._transforms = {}
        sites = dict(self.prototype_trace.iter_stochastic_nodes())
        for name, site in sites.items():
            for frame in site["cond_indep_stack"]:
                if (frame.full_size or frame.size) != frame.size:
                    raise NotImplementedError(
                        f"site {name!r} is a local latent variable inside the subsampled plate "
                        f"{frame.name!r}; AutoMeanFieldNormal covers global latent variables only"
                    )
            transform = _elementwise_bijection(site["fn"].support)
            if transform is None:
                raise NotImplementedError(
                    f"site {name!r} has support {site['fn'].support}, which needs a transform "
                    "that changes the event shape; AutoMeanFieldNormal handles supports with "
                    "an elementwise bijection to the real line"
                )
            self._event_dims[name] = site["fn"].event_dim
            self._transforms[name] = transform
            init = self._initial_value(name, site, sites).to(site["value"])
            if init.shape != site["value"].shape:
                raise ValueError(
                    f"the initial value of {name!r} has shape {tuple(init.shape)}, but the "
                    f"model's site has shape {tuple(site['value'].shape)}"
                )
            loc = transform.inv(init).detach().clone()
            self.locs.set(name, loc)
            self.log_variances.set(name, torch.full_like(loc, self.init_log_variance))

    def _initial_value(self, name: str, site: dict, sites: dict) -> torch.Tensor:
        if name in self._pretrained:
            return torch.as_tensor(self._pretrained[name]).detach()
        if self._init_loc_fn is not None:
            return self._init_loc_fn(site)
        value = site["value"].detach()
        if self._transforms[name] != identity_transform:
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

    def _site_names(self) -> list[str]:
        return list(self._event_dims)

    def get_posterior(self, name: str) -> dist.TorchDistribution:
        """The variational distribution of site ``name``, without the event reinterpretation."""
        loc = self.locs.get(name)
        log_variance = self.log_variances.get(name)
        cap = self._cap(name)
        if cap is not None:
            log_variance = log_variance.clamp(max=2 * math.log(cap))
        transform = self._transforms[name]
        # The scale is an exponential, positive by construction: skip the per-step validation
        # pass over every weight.
        if transform == identity_transform and self.local_reparameterization:
            return LocalReparameterizedNormal(loc, log_variance=log_variance, validate_args=False)
        scale = (0.5 * log_variance).exp()
        if transform == identity_transform:
            return dist.Normal(loc, scale, validate_args=False)
        if isinstance(transform, ExpTransform):
            return dist.LogNormal(loc, scale, validate_args=False)
        base = dist.Normal(loc, scale, validate_args=False)
        return dist.TransformedDistribution(base, [transform], validate_args=False)

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Sample every latent site; the arguments are the model's."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                fn = self.get_posterior(name).to_event(self._event_dims[name])
                result[name] = pyro.sample(name, fn)
        return result

    @torch.no_grad()
    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """The posterior median of each site (the mean for real sites)."""
        self._check_ready()
        return {name: self._transforms[name](self.locs.get(name)) for name in self._site_names()}

    @torch.no_grad()
    def log_alpha(self) -> dict[str, torch.Tensor]:
        """``log alpha = log sigma^2 - log mu^2`` of every real site, clamped to
        :data:`~pyro_bnn.distributions.kl.LOG_ALPHA_RANGE` as in the KL.

        alpha is the noise-to-signal ratio of the weight; a large value means the weight can be
        set to zero without changing the network (sparse variational dropout).
        """
        self._check_ready()
        result = {}
        for name in self._site_names():
            fn = self.get_posterior(name)
            if isinstance(fn, dist.Normal):
                log_alpha = 2 * fn.scale.log() - fn.loc.square().clamp_min(1e-30).log()
                result[name] = log_alpha.clamp(*LOG_ALPHA_RANGE)
        return result

    def _check_ready(self) -> None:
        if self.prototype_trace is None:
            raise RuntimeError(
                "the guide has not seen the model yet: call it once with the model's arguments "
                "(training does this) before asking for its posterior"
            )
