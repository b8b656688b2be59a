"""Turn an ordinary ``nn.Module`` into a Bayesian Pyro model."""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyro_bnn.distributions import ImproperLogUniform
from pyro_bnn.util import all_finite

from .precision_prior import HierarchicalPrior
from .structured.base import WeightPrior, group_dim

#: Layers whose ``weight`` becomes random under the default selection.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

_NORMALIZATION = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)

#: ``select`` predicate signature: (module name, module, parameter name, parameter) -> bool.
Selector = Callable[[str, nn.Module, str, nn.Parameter], bool]


def log_uniform_prior(name: str, parameter: torch.Tensor) -> dist.TorchDistribution:
    """The scale-invariant prior p(w) ∝ 1/|w| of sparse variational dropout."""
    return ImproperLogUniform(parameter.shape)


def normal_prior(scale: float = 1.0) -> Callable[[str, torch.Tensor], dist.TorchDistribution]:
    """An isotropic ``Normal(0, scale)`` prior factory."""
    if not scale > 0:
        raise ValueError(f"the prior scale must be positive, got {scale}")

    def prior(name: str, parameter: torch.Tensor) -> dist.TorchDistribution:
        # One number broadcast to the weight's shape: nothing per weight is allocated or
        # validated on each step, and the registered KLs see a constant prior.
        zero = torch.zeros((), dtype=parameter.dtype, device=parameter.device)
        return dist.Normal(zero, zero + scale).expand(parameter.shape)

    return prior


def _selector(select, include_bias: bool) -> Selector:
    if select == "weights":

        def chosen(module_name, module, name, parameter):
            if isinstance(module, WEIGHT_LAYERS):
                return name == "weight" or (include_bias and name == "bias")
            return False

        return chosen
    if isinstance(select, type) or (
        isinstance(select, tuple) and all(isinstance(t, type) for t in select)
    ):

        def chosen(module_name, module, name, parameter):
            if isinstance(module, select):
                return name == "weight" or (include_bias and name == "bias")
            return False

        return chosen
    if callable(select):
        return select
    if isinstance(select, Iterable) and not isinstance(select, str):
        patterns = list(select)

        def chosen(module_name, module, name, parameter):
            full = f"{module_name}.{name}" if module_name else name
            return any(fnmatch.fnmatchcase(full, pattern) for pattern in patterns)

        return chosen
    raise TypeError(
        "select must be 'weights', a module type or tuple of types, a list of parameter "
        f"names or glob patterns, or a predicate; got {select!r}"
    )


class BayesianNetwork(PyroModule):
    """A Pyro model ``y ~ likelihood(net(x))`` with priors on selected parameters of ``net``.

    The network is deep-copied and converted in place to ``PyroModule`` s; each selected
    parameter (``"fc1.weight"``) is replaced by a ``PyroSample`` site named after it under the
    model's ``net`` attribute (``"net.fc1.weight"``) whose prior is ``prior(name, parameter)``
    (``name`` without the ``net.`` prefix, as in ``select``) with the parameter's shape as
    batch shape, reinterpreted as one event.  Everything else stays an ordinary parameter,
    point-estimated by the same optimizer:

    - **biases** are deterministic unless ``include_bias=True`` (a sparsity prior on a bias
      prunes nothing that matters, and Louizos et al. and Molchanov et al. keep them
      deterministic);
    - **normalization layers** (BatchNorm, LayerNorm, GroupNorm) are never made random: their
      scale and shift are point estimates and BatchNorm's running statistics are buffers that
      update in training mode and are used in evaluation mode (:func:`pyro_bnn.predict`
      switches to evaluation mode).  Selecting one of their parameters raises an error.

    :param net: the network; it is copied, the original is left untouched.
    :param likelihood: a likelihood module from :mod:`pyro_bnn.models.likelihoods`.
    :param prior: ``prior(name, parameter) -> distribution`` with batch shape
        ``parameter.shape``, a :class:`~pyro_bnn.models.HierarchicalPrior` (a prior with
        hyper-parameters of its own, such as :func:`~pyro_bnn.models.gamma_precision_prior`'s
        learned precisions), or a :class:`~pyro_bnn.models.structured.WeightPrior` (a structured
        prior whose groups are input neurons of linear layers and output channels of
        convolutions, see :func:`~pyro_bnn.models.structured.structured_prior`); default
        :func:`log_uniform_prior`.
    :param select: which parameters get a prior: ``"weights"`` (the weights of linear and
        convolutional layers), a module type or tuple of types, a list of parameter names or
        glob patterns (``["fc*.weight"]``), or a predicate
        ``(module_name, module, param_name, param) -> bool``.
    :param include_bias: with ``select="weights"`` or module types, also make biases random.
    :param input_shape: the shape of one input example; when given, inputs of another shape are
        rejected with a clear error.

    ``initial_values`` keeps the network's own initialization of the random parameters, which
    :class:`~pyro_bnn.guides.AutoMeanFieldNormal` takes as ``pretrained`` means.
    """

    def __init__(
        self,
        net: nn.Module,
        likelihood: nn.Module,
        prior: Callable[[str, torch.Tensor], dist.TorchDistribution] = log_uniform_prior,
        select="weights",
        include_bias: bool = False,
        input_shape: tuple[int, ...] | None = None,
    ):
        super().__init__()
        chosen = _selector(select, include_bias)
        net = copy.deepcopy(net)
        # The plain architecture, for deterministic networks with chosen weights (the pruned
        # posterior mean); kept out of the module tree so that it adds no parameters.
        self.__dict__["_architecture"] = copy.deepcopy(net)
        targets = []
        for module_name, module in net.named_modules():
            for name, parameter in module.named_parameters(recurse=False):
                if not chosen(module_name, module, name, parameter):
                    continue
                full = f"{module_name}.{name}" if module_name else name
                if isinstance(module, _NORMALIZATION):
                    raise ValueError(
                        f"{full} belongs to a normalization layer ({type(module).__name__}); "
                        "its parameters stay deterministic, exclude it from `select`"
                    )
                targets.append((module_name, name, full, parameter.detach().clone()))
        if not targets:
            raise ValueError(f"select={select!r} chose no parameter of the network")
        modules = dict(net.named_modules())
        priors = {}
        for module_name, _, full, value in targets:
            fn = prior(full, value)
            if isinstance(fn, WeightPrior):
                fn = (fn, group_dim(modules[module_name], full))
            priors[full] = fn
        to_pyro_module_(net)
        modules = dict(net.named_modules())
        self.initial_values: dict[str, torch.Tensor] = {}
        #: The weights with a structured prior: ``{weight site: StructuredLayer}``.
        self.structured: dict[str, StructuredLayer] = {}
        #: The elementwise priors of the other random parameters: ``{site: distribution}``
        #: (batch shape the parameter's, before ``to_event``), or a hierarchical prior.
        self.priors: dict[str, dist.TorchDistribution | HierarchicalPrior] = {}
        for module_name, name, full, value in targets:
            fn = priors[full]
            if isinstance(fn, tuple):
                weight_prior, dim = fn
                module = modules[module_name]
                if weight_prior.deterministic_weight:
                    setattr(module, f"{name}_unscaled", nn.Parameter(value.clone()))
                setattr(module, name, PyroSample(_StructuredWeight(name, weight_prior, dim, value)))
                self.structured[f"net.{full}"] = StructuredLayer(weight_prior, dim, value.shape)
                continue
            shapes = (fn.shape, ()) if isinstance(fn, HierarchicalPrior) else None
            batch_shape, event_shape = shapes or (fn.batch_shape, fn.event_shape)
            if batch_shape != value.shape or event_shape:
                raise ValueError(
                    f"the prior for {full} has batch shape {tuple(batch_shape)} and event "
                    f"shape {tuple(event_shape)}; it must have batch shape "
                    f"{tuple(value.shape)} (the parameter's) and no event shape"
                )
            self.initial_values[full] = value
            self.priors[f"net.{full}"] = fn
            if isinstance(fn, HierarchicalPrior):
                setattr(modules[module_name], name, PyroSample(_HierarchicalWeight(name, fn)))
                continue
            setattr(modules[module_name], name, PyroSample(fn.to_event(value.dim())))
        # The network is the model's `net` attribute, so its site names are prefixed.
        self.initial_values = {f"net.{k}": v for k, v in self.initial_values.items()}
        self.net = net
        self.likelihood = likelihood
        self.input_shape = tuple(input_shape) if input_shape is not None else None

    @property
    def task(self) -> str:
        return self.likelihood.task

    def check_inputs(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` for inputs of the wrong shape or with NaN/inf values."""
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"each input must have shape {self.input_shape}, got a batch of shape "
                f"{tuple(x.shape)}"
            )
        if not all_finite(x):
            raise ValueError("the inputs contain NaN or infinite values")

    def check_targets(self, y: torch.Tensor) -> None:
        self.likelihood.check_targets(y)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """:param x: inputs ``(batch, *input_shape)``; :param y: targets or ``None``."""
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            self.check_inputs(x)
        return self.likelihood(self.net(x), y)

    def random_sites(self) -> list[str]:
        """Names of the weights that carry a prior (for a structured prior, the composed
        weight, a deterministic site over the prior's own sample sites)."""
        return list(self.initial_values) + list(self.structured)

    @property
    def architecture(self) -> nn.Module:
        """The plain network the model was built from, as it was then (read it, do not train
        it: :meth:`deterministic_network` makes copies with chosen weights)."""
        return self.__dict__["_architecture"]

    def deterministic_network(self, weights: Mapping[str, torch.Tensor]) -> nn.Module:
        """A plain ``nn.Module`` copy of the network (evaluation mode) with the given weights
        for the random parameters and the model's own values for everything else (biases,
        normalization layers' parameters and statistics).

        :param weights: ``{parameter name: tensor}`` for every random parameter, named as in the
            network (``"fc1.weight"``).
        """
        net = copy.deepcopy(self.architecture)
        state = net.state_dict()
        own = self.net.state_dict()
        random = {site.removeprefix("net.") for site in self.random_sites()}
        missing = random - set(weights)
        unknown = set(weights) - random
        if missing or unknown:
            raise ValueError(
                "deterministic_network needs exactly the random parameters "
                f"{', '.join(sorted(random))}; "
                + (f"missing {', '.join(sorted(missing))}" if missing else "")
                + ("; " if missing and unknown else "")
                + (f"not random: {', '.join(sorted(unknown))}" if unknown else "")
            )
        for key in state:
            if key in weights:
                value = torch.as_tensor(weights[key])
                if value.shape != state[key].shape:
                    raise ValueError(
                        f"the weight for {key} has shape {tuple(value.shape)}, the network's "
                        f"has {tuple(state[key].shape)}"
                    )
                state[key] = value.detach()
            elif key in own:
                state[key] = own[key].detach()
        net.load_state_dict(state)
        return net.eval()

    def unscaled_weight(self, site: str) -> torch.Tensor | None:
        """The point-estimate weight under a structured prior's random groups (L0 gates,
        structured Bayesian pruning) of the weight ``site``, else ``None``."""
        if not self.structured[site].prior.deterministic_weight:
            return None
        module_name, _, name = site.removeprefix("net.").rpartition(".")
        module = self.net.get_submodule(module_name)
        return getattr(module, f"{name}_unscaled").detach()


@dataclass(frozen=True)
class StructuredLayer:
    """A weight with a structured prior: the prior, the weight dimension of its groups and
    the weight's shape."""

    prior: WeightPrior
    group_dim: int
    shape: torch.Size


class _HierarchicalWeight:
    """``PyroSample(fn)``'s ``fn(module)`` for a :class:`HierarchicalPrior`: issues its
    hyper-parameters' sites and returns the weight's conditional prior."""

    def __init__(self, name: str, prior: HierarchicalPrior):
        self.name = name
        self.prior = prior

    def __call__(self, module: nn.Module) -> dist.Distribution:
        like = next(module.parameters(), None)
        like = torch.zeros(()) if like is None else like.detach()
        fn = self.prior(module._pyro_get_fullname(self.name), like)
        return fn.to_event(len(self.prior.shape))


class _StructuredWeight:
    """``PyroSample(fn)``'s ``fn(module)``: issues a structured prior's sites and returns the
    layer's weight, which Pyro records as a deterministic site under the weight's name."""

    def __init__(self, name: str, prior: WeightPrior, group_dim: int, init: torch.Tensor):
        self.name = name
        self.prior = prior
        self.group_dim = group_dim
        self.init = init

    def __call__(self, module: nn.Module) -> torch.Tensor:
        unscaled = None
        if self.prior.deterministic_weight:
            unscaled = getattr(module, f"{self.name}_unscaled")
        fullname = module._pyro_get_fullname(self.name)
        like = next(module.parameters(), None)
        init = self.init if like is None else self.init.to(like)
        return self.prior.sample(fullname, init, self.group_dim, unscaled)
