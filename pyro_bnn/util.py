"""Small helpers shared across the package: tensor checks and atomic file writes."""

from __future__ import annotations

import json
import math
import os
import tempfile

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


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and
    ``os.replace``: readers see the old file or the complete new one, never a partial one."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_json(path: str | os.PathLike, value) -> None:
    """:func:`atomic_write_text` of ``value`` as indented JSON."""
    atomic_write_text(path, json.dumps(value, indent=2))
