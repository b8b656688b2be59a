"""Small helpers shared across the package: tensor checks and atomic file writes."""

from __future__ import annotations

import json
import math
import operator
import os
import tempfile
from collections.abc import Callable

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


def positive_integer(name: str, value) -> int:
    """``value`` as an ``int`` of at least 1, else a ``ValueError`` naming ``name``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp"
) -> None:
    """Have ``write(temporary)`` fill a temporary file next to ``path``, then rename it over
    ``path``: readers see the old file or the complete new one, and a failed write leaves
    neither a partial file nor the temporary one.

    :param write: writes the whole file at the path it is given.
    :param suffix: the temporary's ending (some writers choose the format by it).
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=directory)
    os.close(handle)
    try:
        write(temporary)
        # mkstemp creates the file readable by its owner only; give it the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of ``text``."""

    def write(temporary: str) -> None:
        with open(temporary, "w") as file:
            file.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, value) -> None:
    """:func:`atomic_write_text` of ``value`` as indented JSON."""
    atomic_write_text(path, json.dumps(value, indent=2))
