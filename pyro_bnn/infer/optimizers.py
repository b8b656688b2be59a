"""The optimizers :func:`~pyro_bnn.infer.fit` accepts, behind one small interface.

``fit(..., optimizer=...)`` takes

- a ``torch.optim.Optimizer`` over parameters of the model and the guide (the guide's exist
  once it has seen a batch: ``guide(*batch)``);
- a factory ``parameters -> torch.optim.Optimizer``, called with the model's and the guide's
  parameters once the guide is set up;
- a ``pyro.optim`` optimizer (:class:`pyro.optim.PyroOptim`: ``pyro.optim.Adam({"lr": 1e-2})``,
  ``pyro.optim.ClippedAdam(...)``, or a :class:`pyro.optim.PyroLRScheduler` such as
  ``pyro.optim.StepLR(...)``).  It keeps one torch optimizer per parameter, created the first
  time it steps that parameter, and names parameters as Pyro's parameter store does
  (``pyro.get_param_store().param_name(p)``): callable ``optim_args`` receive those names, and
  its state (``get_state()``) is keyed by them.  Inside ``fit``'s private parameter store every
  ``PyroModule`` parameter is registered under its usual name by the time the first step runs,
  so both work as with ``pyro.infer.SVI``.

Everything that can be checked is checked before the first step, so a refused optimizer leaves
every parameter as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import torch
from pyro.optim import PyroOptim
from pyro.optim.lr_scheduler import PyroLRScheduler
from torch import nn

_KINDS = (
    "a torch.optim.Optimizer over the model's and the guide's parameters, a factory "
    "parameters -> torch.optim.Optimizer, or a pyro.optim optimizer such as "
    "pyro.optim.Adam({'lr': 1e-3})"
)


def check_optimizer_argument(optimizer, scheduler) -> None:
    """Refuse what cannot be an optimizer, before anything is set up.

    :raises TypeError: ``optimizer`` is a class, an uncalled ``pyro.optim`` wrapper or not
        callable at all.
    :raises ValueError: a torch ``scheduler`` factory given with a ``pyro.optim`` optimizer, or
        a ``pyro.optim`` optimizer under ``module_local_params``.
    """
    if optimizer is None or isinstance(optimizer, torch.optim.Optimizer):
        return
    if isinstance(optimizer, PyroOptim):
        if scheduler is not None:
            raise ValueError(
                "scheduler= builds a torch scheduler on a torch optimizer; a pyro.optim optimizer "
                "holds one optimizer per parameter. Use a pyro.optim scheduler instead (e.g. "
                "optimizer=pyro.optim.StepLR({'optimizer': torch.optim.Adam, 'optim_args': "
                "{'lr': 1e-3}, 'step_size': 10, 'gamma': 0.5})), which fit steps once per epoch"
            )
        if pyro.settings.get("module_local_params"):
            raise ValueError(
                "optimizer: a pyro.optim optimizer finds parameters by name in Pyro's parameter "
                "store, but pyro.settings module_local_params=True keeps them out of it; pass a "
                "torch.optim optimizer or a factory parameters -> Optimizer instead"
            )
        return
    if isinstance(optimizer, type):
        raise TypeError(
            f"optimizer is the class {optimizer.__module__}.{optimizer.__qualname__}, not an "
            "optimizer: pass an instance, a factory such as lambda parameters: "
            f"{optimizer.__name__}(parameters, lr=1e-3), or a pyro.optim optimizer"
        )
    if callable(optimizer) and getattr(optimizer, "__module__", "").startswith("pyro.optim"):
        name = getattr(optimizer, "__name__", "optimizer")
        raise TypeError(
            f"optimizer is the function pyro.optim.{name} itself; call it with the optimizer's "
            f"arguments: optimizer=pyro.optim.{name}({{'lr': 1e-3}})"
        )
    if not callable(optimizer):
        raise TypeError(f"optimizer must be {_KINDS}; got a {type(optimizer).__name__}")


def _describe(parameter: torch.Tensor) -> str:
    return f"a tensor of shape {tuple(parameter.shape)}"


class TrainingOptimizer:
    """What the training loop needs of an optimizer: clear the gradients, take a step over the
    parameters that have one, say its learning rate, and step a per-epoch schedule.

    :attr:`checkpointed` is the object whose ``state_dict()`` / ``load_state_dict()`` and
    ``param_groups`` :func:`~pyro_bnn.infer.save_checkpoint` and
    :func:`~pyro_bnn.infer.load_checkpoint` use.
    """

    def __init__(self, parameters: Sequence[nn.Parameter]):
        self.parameters = list(parameters)

    def zero_grad(self) -> None:
        # Every trained tensor, not only the optimizer's: gradients of the others would pile up
        # across steps and inflate the norm the NaN guard and clipping look at.
        for parameter in self.parameters:
            parameter.grad = None

    def step(self) -> None:
        raise NotImplementedError

    @property
    def lr(self) -> float:
        raise NotImplementedError

    def end_epoch(self, loss: float) -> None:
        """Called once after every epoch with its mean loss."""

    @property
    def checkpointed(self):
        raise NotImplementedError


class TorchOptimizer(TrainingOptimizer):
    """A ``torch.optim.Optimizer``; a checkpoint holds its own ``state_dict()``."""

    def __init__(self, optimizer: torch.optim.Optimizer, parameters: Sequence[nn.Parameter]):
        super().__init__(parameters)
        ours = {id(p) for p in self.parameters}
        own = [p for group in optimizer.param_groups for p in group["params"]]
        foreign = [p for p in own if id(p) not in ours]
        if foreign:
            raise ValueError(
                f"optimizer updates {len(foreign)} tensor(s) that are not parameters of the model "
                f"or the guide (the first is {_describe(foreign[0])}); build it over "
                "list(model.parameters()) + list(guide.parameters()) after the guide has seen a "
                "batch, or pass a factory parameters -> Optimizer"
            )
        self.optimizer = optimizer

    def step(self) -> None:
        self.optimizer.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def checkpointed(self) -> torch.optim.Optimizer:
        return self.optimizer


def _torch_optimizer(optim_obj) -> torch.optim.Optimizer:
    # A PyroLRScheduler keeps a torch scheduler per parameter, the optimizer under it.
    return getattr(optim_obj, "optimizer", optim_obj)


class PyroOptimizer(TrainingOptimizer):
    """A ``pyro.optim.PyroOptim``, called with the parameters that have a gradient after each
    backward pass, as ``pyro.infer.SVI`` does.

    Its checkpoint state is ``{"param_groups": [{"params": [name]}, ...], "state":
    optim.get_state()}``: one group per parameter, as the wrapper keeps one optimizer per
    parameter (so a checkpoint written with a torch optimizer, one group over all of them, fails
    :func:`~pyro_bnn.infer.load_checkpoint`'s size check before anything is loaded), and the
    per-parameter states keyed by parameter-store name, Pyro's own format.  Loading hands them to
    ``optim.set_state``; each is consumed when its parameter is next stepped.

    A :class:`pyro.optim.PyroLRScheduler` is stepped once per epoch (``ReduceLROnPlateau`` with
    the epoch's mean loss).
    """

    def __init__(self, optim: PyroOptim, parameters: Sequence[nn.Parameter]):
        super().__init__(parameters)
        ours = set(self.parameters)
        foreign = [p for p in optim.optim_objs if p not in ours]
        if foreign:
            raise ValueError(
                f"optimizer has already stepped {len(foreign)} tensor(s) that are not parameters "
                f"of this model or guide (the first is {_describe(foreign[0])}); its saved state "
                "would mix both. Pass a fresh pyro.optim optimizer"
            )
        self.optim = optim

    def step(self) -> None:
        stepped = [p for p in self.parameters if p.grad is not None]
        # The wrapper looks a parameter's name up when it first steps it.  The ELBO has run model
        # and guide by now, so every PyroModule parameter they read is in the store; one that is
        # not (of a model that is a plain nn.Module) would be nameless, its state unsaveable.
        store = pyro.get_param_store()
        nameless = [
            p for p in stepped if p not in self.optim.optim_objs and store.param_name(p) is None
        ]
        if nameless:
            self.zero_grad()
            raise TypeError(
                f"optimizer: a pyro.optim optimizer names parameters by Pyro's parameter store, "
                f"which does not know {len(nameless)} of the trained tensors (the first is "
                f"{_describe(nameless[0])}; parameters reach it through PyroModules). Make the "
                "model a PyroModule, or pass a torch.optim optimizer or a factory "
                "parameters -> Optimizer"
            )
        self.optim(stepped)

    @property
    def lr(self) -> float:
        """The largest of the per-parameter learning rates (they differ only with callable
        ``optim_args``), as they stand after the latest step."""
        ours = set(self.parameters)
        rates = [
            _torch_optimizer(optim_obj).param_groups[0]["lr"]
            for p, optim_obj in self.optim.optim_objs.items()
            if p in ours
        ]
        return max(rates) if rates else float("nan")

    def end_epoch(self, loss: float) -> None:
        if not isinstance(self.optim, PyroLRScheduler):
            return
        constructor = self.optim.pt_scheduler_constructor
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
        if isinstance(constructor, type) and issubclass(constructor, plateau):
            self.optim.step(loss)
        else:
            self.optim.step()

    @property
    def checkpointed(self) -> PyroOptimizer:
        return self

    # The interface of load_checkpoint / save_checkpoint.

    @property
    def param_groups(self) -> list[dict]:
        return [{"params": [p]} for p in self.parameters]

    def state_dict(self) -> dict:
        store = pyro.get_param_store()
        names = [store.param_name(p) for p in self.parameters]
        return {
            "param_groups": [{"params": [name]} for name in names],
            "state": self.optim.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        # Per-parameter optimizers made before (a reused optimizer object) would never consume
        # the waiting state: drop them, the checkpoint's state replaces theirs.
        self.optim.optim_objs.clear()
        self.optim.grad_clip.clear()
        self.optim.set_state(state["state"])


def make_optimizer(
    optimizer, parameters: Sequence[nn.Parameter], guide: nn.Module
) -> TrainingOptimizer:
    """Wrap ``optimizer`` for the training loop, after :func:`check_optimizer_argument`;
    ``parameters`` are the model's and the guide's.

    :raises TypeError: a factory that returned something other than a torch optimizer.
    :raises ValueError: an optimizer over tensors that are not the model's or guide's, or over
        none of the guide's parameters (usually built before the guide had any).
    """
    if isinstance(optimizer, PyroOptim):
        return PyroOptimizer(optimizer, parameters)
    if not isinstance(optimizer, torch.optim.Optimizer):
        factory: Callable = optimizer
        optimizer = factory(parameters)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                "optimizer: the factory must return a torch.optim.Optimizer, it returned a "
                f"{type(optimizer).__name__} (a pyro.optim optimizer is passed as optimizer= "
                "itself)"
            )
    wrapped = TorchOptimizer(optimizer, parameters)
    guide_parameters = {id(p) for p in guide.parameters()}
    own = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if guide_parameters and not guide_parameters & own:
        raise ValueError(
            "optimizer updates none of the guide's parameters, so the posterior would never "
            "change; the guide creates them when it first sees a batch. Pass a factory "
            "parameters -> Optimizer, or build the optimizer after calling guide(*batch)"
        )
    return wrapped
