"""Checkpoints of model, guide and optimizer: written atomically, loaded without running code.

A checkpoint is a dictionary of tensors, numbers and strings saved with ``torch.save`` and read
back with ``torch.load(..., weights_only=True)``, so opening a file can never execute code.  It
records the name and shape of every model and guide tensor; loading it into a different
architecture fails with a message naming the first differences, before anything is changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from pyro_bnn.util import atomic_write

#: Written into every checkpoint; files without it are rejected.
CHECKPOINT_FORMAT = "pyro-bnn-checkpoint/1"


class CheckpointMismatchError(ValueError):
    """The checkpoint was written for another model or guide."""


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    return {name: list(value.shape) for name, value in state.items()}


def _describe_mismatch(kind: str, saved: dict, current: dict) -> list[str]:
    problems = []
    for name in sorted(saved.keys() - current.keys())[:3]:
        problems.append(f"{kind} tensor {name!r} is in the checkpoint but not in this {kind}")
    for name in sorted(current.keys() - saved.keys())[:3]:
        problems.append(f"{kind} tensor {name!r} of this {kind} is missing from the checkpoint")
    for name in sorted(saved.keys() & current.keys()):
        if saved[name] != current[name] and len(problems) < 6:
            problems.append(
                f"{kind} tensor {name!r} has shape {tuple(saved[name])} in the checkpoint but "
                f"{tuple(current[name])} here"
            )
    return problems


def _require_ready(guide: nn.Module) -> None:
    if getattr(guide, "prototype_trace", True) is None:
        raise RuntimeError(
            "the guide has not been set up: call it once with a batch of the model's arguments "
            "before loading a checkpoint into it"
        )


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same directory, flushed to
    disk before it replaces ``path`` (:func:`~pyro_bnn.util.atomic_write`): readers see the old
    file or the complete new one, never half of one."""
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)

    def write(temporary: str) -> None:
        with open(temporary, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())

    atomic_write(path, write)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    guide: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    epoch: int = 0,
    history: list[dict] | None = None,
    extra: dict | None = None,
) -> None:
    """Write a checkpoint to ``path`` atomically (a temporary file in the same directory, then
    ``os.replace``): a crash mid-write leaves the previous checkpoint intact.

    :param extra: more weights-only-safe data (numbers, strings, lists, dicts, tensors).
    """
    _require_ready(guide)
    model_state, guide_state = model.state_dict(), guide.state_dict()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": {"model": _shapes(model_state), "guide": _shapes(guide_state)},
        "model": model_state,
        "guide": guide_state,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "history": list(history or []),
        "rng_state": torch.get_rng_state(),
        "extra": dict(extra or {}),
    }
    atomic_save(payload, path)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    guide: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = False,
    check_extra: Callable[[dict], None] | None = None,
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model``, ``guide`` and,
    when given, ``optimizer`` and ``scheduler``.

    Everything is checked before anything is loaded: a file that is not a pyro-bnn checkpoint
    or one written for another architecture raises and leaves every object unchanged.

    :param check_extra: called with the checkpoint's ``extra`` after those checks and before
        anything is loaded; an error it raises leaves every object unchanged too.

    :returns: ``{"epoch", "history", "extra"}`` of the checkpoint.
    :raises CheckpointMismatchError: the checkpoint belongs to another model or guide.
    """
    _require_ready(guide)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {os.fspath(path)}")
    try:
        payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{os.fspath(path)} is not a readable pyro-bnn checkpoint: {error}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{os.fspath(path)} is not a pyro-bnn checkpoint (expected format "
            f"{CHECKPOINT_FORMAT!r})"
        )
    problems = []
    for kind, module in (("model", model), ("guide", guide)):
        problems += _describe_mismatch(
            kind, payload["architecture"][kind], _shapes(module.state_dict())
        )
    if problems:
        raise CheckpointMismatchError(
            f"{os.fspath(path)} was written for a different architecture:\n  - "
            + "\n  - ".join(problems)
        )
    if optimizer is not None:
        saved = payload["optimizer"]
        if saved is None:
            raise CheckpointMismatchError(f"{os.fspath(path)} holds no optimizer state")
        saved_sizes = [len(group["params"]) for group in saved["param_groups"]]
        sizes = [len(group["params"]) for group in optimizer.param_groups]
        if saved_sizes != sizes:
            raise CheckpointMismatchError(
                f"{os.fspath(path)} holds an optimizer over parameter groups of sizes "
                f"{saved_sizes}, this optimizer has {sizes}"
            )
    if check_extra is not None:
        check_extra(payload["extra"])
    model.load_state_dict(payload["model"])
    guide.load_state_dict(payload["guide"])
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload["scheduler"] is not None:
        scheduler.load_state_dict(payload["scheduler"])
    if restore_rng:
        torch.set_rng_state(payload["rng_state"])
    return {"epoch": payload["epoch"], "history": payload["history"], "extra": payload["extra"]}
