"""Argument checks shared by the baselines.

Each check raises a ``ValueError`` (a ``TypeError`` for an argument of the wrong kind) that names
the argument and what is wrong with it; the baselines call them before anything changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from pyro_bnn.util import all_finite

from .gaussian_noise import GaussianNoise

#: The two tasks every baseline supports.
TASKS = ("classification", "regression")


def check_task(task: str, noise: GaussianNoise | None) -> None:
    """``task`` is known, and ``noise`` is given exactly for regression."""
    if task not in TASKS:
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if task == "regression" and not isinstance(noise, GaussianNoise):
        raise ValueError(
            "task='regression' needs noise=GaussianNoise(...), which holds the noise variance "
            f"of the Gaussian likelihood; got {type(noise).__name__}"
        )
    if task == "classification" and noise is not None:
        raise ValueError("noise= is for task='regression'; classification has no noise variance")


def check_network(net) -> None:
    if not isinstance(net, nn.Module):
        raise TypeError(f"the network must be an nn.Module, got {type(net).__name__}")


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_non_negative_int(name: str, value) -> None:
    if isinstance(value, bool) or not (isinstance(value, int) and value >= 0):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def check_positive(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def check_non_negative(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")


def check_inputs(x, name: str = "x") -> None:
    """A non-empty tensor with a batch dimension and finite values."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() == 0 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty tensor with a batch dimension")
    if not all_finite(x):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_targets(y, task: str, num_rows: int, name: str = "y") -> None:
    """Integer labels ``(N,)`` for classification, finite real targets ``(N,)`` for
    regression, with as many rows as the inputs."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(y).__name__}")
    if y.dim() != 1:
        raise ValueError(f"{name} must have shape (N,), got {tuple(y.shape)}")
    if len(y) != num_rows:
        raise ValueError(f"{name} has {len(y)} rows but the inputs have {num_rows}")
    if task == "classification":
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"class labels {name} must be an integer tensor, got {y.dtype}")
        if len(y) and y.min() < 0:
            raise ValueError(f"class labels {name} must be non-negative, got {y.min().item()}")
    else:
        if not y.is_floating_point():
            raise ValueError(f"regression targets {name} must be floating point, got {y.dtype}")
        if not all_finite(y):
            raise ValueError(f"{name} contains NaN or infinite values")


def check_logits(logits: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """The network's classification output is ``(N, C)`` with ``C >= 2`` covering the labels."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(
            "a classification network must output (N, C) logits with C >= 2 classes, got "
            f"shape {tuple(logits.shape)}"
        )
    if y is not None and len(y) and y.max() >= logits.shape[1]:
        raise ValueError(
            f"label {y.max().item()} is out of range for a network with {logits.shape[1]} outputs"
        )


def regression_mean(output: torch.Tensor) -> torch.Tensor:
    """The ``(N,)`` predicted means from a regression network's ``(N, 1)`` or ``(N,)`` output."""
    if output.dim() == 2 and output.shape[1] == 1:
        return output.squeeze(1)
    if output.dim() == 1:
        return output
    raise ValueError(
        "a regression network must output one mean per example, shape (N, 1) or (N,), got "
        f"{tuple(output.shape)}"
    )


def batch_tensors(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, targets)`` from a batch that is ``(x, y)``, ``[x, y]`` or a lone ``x``."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 2:
        return batch[0], (batch[1] if len(batch) == 2 else None)
    raise TypeError(
        f"the data must yield (inputs, targets) pairs or input tensors, got {type(batch).__name__}"
    )


def check_names(name: str, given: Iterable[str], known: Iterable[str]) -> set[str]:
    given, known = set(given), list(known)
    unknown = given - set(known)
    if unknown:
        raise ValueError(
            f"{name}: no such layer {', '.join(sorted(unknown))}; the layers are {', '.join(known)}"
        )
    return given
