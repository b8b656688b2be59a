"""Pruning by the variational dropout rate (sparse variational dropout, Molchanov et al. 2017).

A weight with noise-to-signal ratio ``alpha = sigma^2 / mu^2`` above ``exp(threshold)`` carries
no information the network can use: its posterior is almost all noise around a mean near zero.
Setting it to zero changes the predictions very little, and the trained network becomes sparse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

#: Default pruning threshold on log alpha.  Molchanov et al.'s code uses 3 (alpha > 20, an
#: equivalent binary dropout rate above 95%); the thesis reports sparsity with 5.
DEFAULT_LOG_ALPHA_THRESHOLD = 3.0


def prune(guide, threshold: float = DEFAULT_LOG_ALPHA_THRESHOLD) -> dict[str, torch.Tensor]:
    """Masks of the weights to keep: ``log_alpha < threshold``, per site.

    :param guide: a guide with a ``log_alpha()`` method returning ``{site: log alpha}``
        (:class:`~pyro_bnn.guides.AutoMeanFieldNormal`).
    :returns: ``{site: bool tensor}``, ``True`` where the weight is kept.
    """
    if not isinstance(threshold, (int, float)) or threshold != threshold:
        raise ValueError(f"threshold must be a number, got {threshold!r}")
    return {name: log_alpha < threshold for name, log_alpha in guide.log_alpha().items()}


def pruned_posterior_mean(guide, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The deterministic test-time weights: the posterior mean with pruned weights set to zero
    (sites without a mask are returned as their posterior median)."""
    values = guide.median()
    for name, mask in masks.items():
        if name not in values:
            raise ValueError(
                f"there is a mask for {name!r} but the guide has no such site; its sites are "
                f"{', '.join(map(repr, values))}"
            )
        if values[name].shape != mask.shape:
            raise ValueError(
                f"the mask of {name!r} has shape {tuple(mask.shape)}, the site has shape "
                f"{tuple(values[name].shape)}"
            )
        values[name] = values[name] * mask
    return values


class PointGuide(torch.nn.Module):
    """A guide that puts a point mass on fixed values: ``predict(model, PointGuide(values), x,
    num_samples=1)`` evaluates the deterministic network with those weights."""

    def __init__(self, values: Mapping[str, torch.Tensor]):
        super().__init__()
        self.values = dict(values)

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        for name, value in self.values.items():
            pyro.sample(name, dist.Delta(value, event_dim=value.dim()))
        return self.values


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    total: int
    nonzero: int

    @property
    def sparsity(self) -> float:
        """Fraction of weights removed."""
        return 1.0 - self.nonzero / self.total


@dataclass(frozen=True)
class CompressionReport:
    """Per-layer sparsity and the compression ratio ``|W| / |W != 0|``."""

    layers: tuple[LayerSparsity, ...]

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def nonzero(self) -> int:
        return sum(layer.nonzero for layer in self.layers)

    @property
    def compression_ratio(self) -> float:
        """``|W| / |W != 0|``; infinite when every weight was pruned."""
        return self.total / self.nonzero if self.nonzero else float("inf")

    def sparsity_per_layer(self) -> str:
        """The per-layer sparsity in percent, ``"98.9 - 97.2 - 62.0"`` as in the papers' tables."""
        return " - ".join(f"{100 * layer.sparsity:.1f}" for layer in self.layers)

    def as_dict(self) -> dict:
        return {
            "layers": {
                layer.name: {
                    "total": layer.total,
                    "nonzero": layer.nonzero,
                    "sparsity": layer.sparsity,
                }
                for layer in self.layers
            },
            "total": self.total,
            "nonzero": self.nonzero,
            "compression_ratio": self.compression_ratio,
        }

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'weights':>9}  {'nonzero':>9}  {'sparsity':>8}"]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<{width}}  {layer.total:>9}  {layer.nonzero:>9}  "
                f"{100 * layer.sparsity:>7.2f}%"
            )
        lines.append(
            f"{'total':<{width}}  {self.total:>9}  {self.nonzero:>9}  "
            f"|W|/|W!=0| = {self.compression_ratio:.1f}"
        )
        return "\n".join(lines)


def compression_report(masks: Mapping[str, torch.Tensor]) -> CompressionReport:
    """Summarize pruning masks (``True`` = kept) layer by layer."""
    if not masks:
        raise ValueError("there are no masks to report on")
    return CompressionReport(
        tuple(
            LayerSparsity(name, mask.numel(), int(mask.sum().item()))
            for name, mask in masks.items()
        )
    )
