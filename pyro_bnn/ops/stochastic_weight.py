"""The weight protocol: a weight sample that remembers its distribution.

A guide family returns a :class:`StochasticWeight` at a weight's sample site.  The model's
layer calls ``F.linear`` or ``F.conv{1,2,3}d`` with it as usual, and ``__torch_function__``
dispatches the call, through one registry, to a *handler* of the weight's type, which samples
the pre-activation from its exact marginal where the family has one (local
reparameterization).  Any other use of the weight (a prior's ``log_prob``, a penalty, printing)
materializes one ordinary reparameterized sample, drawn once and reused, so every other
computation stays correct, only noisier.  Results of handlers and of every other operation are
plain tensors, except the products that a handler deliberately keeps stochastic (a Gaussian
weight times a tensor of scales, as in a non-centred prior); nothing global is patched.

A new kind of weight subclasses :class:`StochasticWeight`, implements :meth:`rsample`, and
registers its handlers::

    @register_handler(MyWeight, F.linear)
    def _linear(input, weight, bias=None): ...

A handler returns ``NotImplemented`` for arguments it does not cover; the call then runs on
materialized samples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch.utils._pytree import tree_map

from .batched import CONVOLUTIONS

# Functions that read only a tensor's metadata: answered from the subclass's own storage (a
# detached view of a tensor of the weight's shape, dtype and device) without drawing a sample.
_METADATA = {
    torch.Tensor.size,
    torch.Tensor.dim,
    torch.Tensor.numel,
    torch.Tensor.__len__,
    torch.Tensor.is_floating_point,
    torch.Tensor.is_complex,
    torch.Tensor.shape.__get__,
    torch.Tensor.ndim.__get__,
    torch.Tensor.dtype.__get__,
    torch.Tensor.device.__get__,
    torch.Tensor.layout.__get__,
    torch.Tensor.is_cuda.__get__,
}

#: ``{torch function: {weight type: handler}}``.
_HANDLERS: dict[Callable, dict[type, Callable]] = {}


def register_handler(weight_type: type, *functions: Callable) -> Callable:
    """Register ``handler(*args, **kwargs)`` for calls of ``functions`` whose first
    stochastic-weight argument is a ``weight_type`` (or a subclass without its own handler)."""
    if not (isinstance(weight_type, type) and issubclass(weight_type, StochasticWeight)):
        raise TypeError(f"handlers are registered for StochasticWeight types, not {weight_type}")

    def decorator(handler: Callable) -> Callable:
        for function in functions:
            _HANDLERS.setdefault(function, {})[weight_type] = handler
        return handler

    return decorator


def register_conv_handler(weight_type: type) -> Callable:
    """Register ``handler(spatial, input, weight, bias=None, stride=1, padding=0, dilation=1,
    groups=1)`` for ``F.conv1d``, ``F.conv2d`` and ``F.conv3d`` (``spatial`` = 1, 2, 3)."""

    def decorator(handler: Callable) -> Callable:
        for spatial, conv in CONVOLUTIONS.items():
            register_handler(weight_type, conv)(functools.partial(handler, spatial))
        return handler

    return decorator


def find_handler(function: Callable, weight_type: type) -> Callable | None:
    """The handler of ``function`` for ``weight_type``, following the type's MRO."""
    table = _HANDLERS.get(function)
    if table is None:
        return None
    for cls in weight_type.__mro__:
        if cls in table:
            return table[cls]
    return None


class StochasticWeight(torch.Tensor):
    """Base class of lazily sampled weights; see the module docstring.

    :param like: a tensor with the weight's shape, dtype and device (the mean, typically); the
        subclass's own storage is a detached view of it and is only used for its metadata.
    """

    @staticmethod
    def __new__(cls, like: torch.Tensor):
        weight = like.detach().as_subclass(cls)
        weight._sample = None
        return weight

    def rsample(self) -> torch.Tensor:
        """The one reparameterized sample of the weight (a plain tensor), drawn on first use."""
        if self._sample is None:
            self._sample = self._draw()
        return self._sample

    def _draw(self) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func in _HANDLERS:
            # As Python's binary operators: the first stochastic argument's handler, then the
            # next one's if it declines (a random scale times a Gaussian weight is the weight's
            # business).
            tried = set()
            for value in (*args, *kwargs.values()):
                if isinstance(value, StochasticWeight) and type(value) not in tried:
                    tried.add(type(value))
                    handler = find_handler(func, type(value))
                    if handler is not None:
                        out = handler(*args, **kwargs)
                        if out is not NotImplemented:
                            return out
        args, kwargs = tree_map(materialize, (args, kwargs))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def materialize(value):
    """``value.rsample()`` for a stochastic weight, ``value`` itself for anything else."""
    return value.rsample() if isinstance(value, StochasticWeight) else value
