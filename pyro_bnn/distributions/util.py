"""Numerical helpers shared by the distributions."""

from __future__ import annotations

import functools

import numpy as np
import torch


@functools.lru_cache(maxsize=8)
def _leggauss(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    return (nodes + 1.0) / 2.0, weights / 2.0


def gauss_legendre(
    num_nodes: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Gauss-Legendre rule on the unit interval.

    Returns ``(nodes, weights)``, each of shape ``(num_nodes,)``, such that
    :math:`\int_0^1 f(t)\,dt \approx \sum_k w_k f(t_k)`, exact for polynomials of
    degree ``2 * num_nodes - 1``.
    """
    nodes, weights = _leggauss(num_nodes)
    return (
        torch.as_tensor(nodes, dtype=dtype, device=device),
        torch.as_tensor(weights, dtype=dtype, device=device),
    )


def check_trailing_shape(name: str, value: torch.Tensor, expected: tuple[int, ...]) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` ends in ``expected``."""
    n = len(expected)
    if value.dim() < n or tuple(value.shape[value.dim() - n :]) != tuple(expected):
        raise ValueError(
            f"{name} must have trailing shape {tuple(expected)}, got shape {tuple(value.shape)}"
        )
