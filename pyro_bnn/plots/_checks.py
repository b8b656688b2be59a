"""Input checks shared by the plots: each names the argument and what is wrong with it."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch

from pyro_bnn.util import positive_integer  # noqa: F401 - re-exported for the plots


def as_tensor(name: str, value) -> torch.Tensor:
    """``value`` (a tensor, an array or nested lists of numbers) as a tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"{name} must be a tensor or an array of numbers, got {type(value).__name__}"
            ) from None
    if tensor.is_complex():
        raise ValueError(f"{name} must be real, got {tensor.dtype}")
    return tensor.detach().cpu()


def _first(mask: torch.Tensor) -> str:
    """Where the first true entry of ``mask`` is, for a message."""
    if mask.dim() == 0:
        return "its only entry"
    index = tuple(int(i) for i in mask.nonzero()[0])
    return f"index {index[0]}" if len(index) == 1 else f"index {index}"


def values(name: str, value, *, finite: bool = True) -> torch.Tensor:
    """``value`` as a float64 tensor of any shape, with at least one entry and no NaN (nor
    infinity, with ``finite``)."""
    tensor = as_tensor(name, value)
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)})")
    tensor = tensor.double()
    if torch.isnan(tensor).any():
        raise ValueError(f"{name} contains NaN (first at {_first(torch.isnan(tensor))})")
    if finite and torch.isinf(tensor).any():
        raise ValueError(
            f"{name} contains infinite values (first at {_first(torch.isinf(tensor))})"
        )
    return tensor


def vector(
    name: str, value, *, length: int | None = None, like: str = "", finite: bool = True
) -> torch.Tensor:
    """``value`` as a float64 tensor of shape ``(N,)``, ``N >= 1``, without NaN or infinity;
    with ``length``, ``N`` must equal it (the length of the argument named ``like``)."""
    tensor = as_tensor(name, value)
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional (N,), got shape {tuple(tensor.shape)}")
    if length is not None and len(tensor) != length:
        raise ValueError(
            f"{name} has {len(tensor)} entries but {like} has {length}; they must match"
        )
    return values(name, tensor, finite=finite)


def number(name: str, value, *, positive: bool = False) -> float:
    """``value`` as a finite float (positive, with ``positive``)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value:g}")
    return value


def mapping(name: str, value, what: str) -> dict:
    """``value`` as a dict, checking that it is a non-empty mapping of ``what``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of {what}, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} is an empty mapping; it needs at least one entry")
    return dict(value)
