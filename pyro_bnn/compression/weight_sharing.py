"""Weight sharing: K-means codebooks and their centre training (Han et al. 2016, Sec. 3).

The maximum-compression scenario of Table 9 of Louizos' thesis stores each kept weight of a
layer as an index into a codebook of ``K = 32`` shared values, "the scheme described at [65]"
(Han, Mao and Dally, *Deep Compression*).  That scheme has two steps:

1. **K-means** on the weights' values (:meth:`Codebook.kmeans`, :func:`kmeans_share`).  The
   centres start evenly spaced between the smallest and largest weight, Han et al.'s linear
   initialization, which keeps the rare large weights their own clusters.
2. **Centre training** (:func:`train_codebooks`).  The assignments stay fixed and the centres
   are trained on the data: the gradient of a centre is the sum of the gradients of the weights
   that share it,

   .. math:: \\frac{\\partial L}{\\partial c_k} = \\sum_{ij} \\frac{\\partial L}{\\partial W_{ij}}
             \\mathbb{1}[I_{ij} = k].

   It costs nothing in storage (the same indices, the same number of centres) and gives back
   most of what the rounding to ``K`` values lost.  It matters most where a posterior gives no
   tolerance for rounding: L0's weights are point estimates, and on LeNet-5-Caffe the rounding of
   its 225 first-layer weights alone costs 0.7 points of test error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .precision import DEFAULT_NUM_CLUSTERS, _check_values


@dataclass(frozen=True)
class Codebook:
    """A layer's shared weights: each kept weight is ``centres[assignment]``, the others 0.

    :ivar centres: the shared values, ``(K',)``, sorted after K-means.
    :ivar assignment: each weight's centre, ``long``, the weight's shape (0 where not kept).
    :ivar mask: which weights are stored (``bool``, the weight's shape).
    """

    centres: torch.Tensor
    assignment: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def kmeans(
        cls,
        weights: torch.Tensor,
        num_clusters: int = DEFAULT_NUM_CLUSTERS,
        mask: torch.Tensor | None = None,
        random_state: int = 0,
    ) -> Codebook:
        """K-means with Han et al.'s linear initialization on the values of ``weights[mask]``,
        refined by scikit-learn's ``KMeans`` with a fixed ``random_state``; each weight takes
        its nearest centre.  With at most ``num_clusters`` distinct values nothing is
        clustered: the centres are those values.

        :param weights: a layer's weights, any shape.
        :param mask: which of them to share (``bool``, same shape; default all); the others
            (pruned weights) are 0 and do not enter the codebook.
        """
        weights = _check_values("weights", weights)
        if not isinstance(num_clusters, int) or isinstance(num_clusters, bool) or num_clusters < 1:
            raise ValueError(f"num_clusters must be a positive integer, got {num_clusters!r}")
        if mask is None:
            mask = torch.ones_like(weights, dtype=torch.bool)
        if (
            not isinstance(mask, torch.Tensor)
            or mask.dtype != torch.bool
            or mask.shape != weights.shape
        ):
            raise ValueError(
                f"mask must be a bool tensor of the weights' shape {tuple(weights.shape)}, got "
                f"{getattr(mask, 'shape', mask)!r}"
            )
        if not mask.any():
            raise ValueError("the mask selects no weight to cluster")
        values = weights[mask].detach().cpu().double().numpy()
        distinct = np.unique(values)
        if distinct.size <= num_clusters:
            centres = distinct
        else:
            # Imported here: scikit-learn is slow to import, and only weight sharing needs it.
            from sklearn.cluster import KMeans

            start = np.linspace(values.min(), values.max(), num_clusters).reshape(-1, 1)
            kmeans = KMeans(num_clusters, init=start, n_init=1, random_state=random_state)
            centres = np.sort(kmeans.fit(values.reshape(-1, 1)).cluster_centers_.ravel())
        # Each weight takes its nearest centre (K-means' own assignment at convergence).
        nearest = np.searchsorted((centres[1:] + centres[:-1]) / 2, values)
        assignment = torch.zeros(weights.shape, dtype=torch.long, device=weights.device)
        assignment[mask] = torch.as_tensor(nearest, device=weights.device)
        centres = torch.as_tensor(centres, dtype=weights.dtype, device=weights.device)
        return cls(centres=centres, assignment=assignment, mask=mask.clone())

    def weight(self, centres: torch.Tensor | None = None) -> torch.Tensor:
        """The shared weights, the mask's shape: ``centres[assignment]`` where kept, else 0
        (``centres`` default the codebook's own; differentiable in them)."""
        centres = self.centres if centres is None else centres
        return torch.where(self.mask, centres[self.assignment], centres.new_zeros(()))


def kmeans_share(
    weights: torch.Tensor,
    num_clusters: int = DEFAULT_NUM_CLUSTERS,
    mask: torch.Tensor | None = None,
    random_state: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight sharing by K-means (:meth:`Codebook.kmeans`), without centre training.

    :returns: ``(shared, centres)``: the shared weights, shape and dtype of ``weights``, and the
        sorted centres ``(K',)`` with ``K' = min(num_clusters, distinct values)``.
    """
    codebook = Codebook.kmeans(weights, num_clusters, mask, random_state)
    return codebook.weight(), codebook.centres


class _SharedWeight(nn.Module):
    """A parametrization that makes a layer's weight ``centres[assignment]``: the module's
    trainable tensor becomes the ``(K',)`` centres (``right_inverse`` hands them over)."""

    def __init__(self, codebook: Codebook):
        super().__init__()
        self.codebook = codebook

    def forward(self, centres: torch.Tensor) -> torch.Tensor:
        return self.codebook.weight(centres)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self.codebook.centres.clone()


def train_codebooks(
    network: nn.Module,
    codebooks: Mapping[str, Codebook],
    data: Iterable,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    seed: int | None = 0,
    progress: bool = True,
    scheduler: Callable | None = None,
) -> tuple[dict[str, Codebook], list[dict]]:
    """Han et al.'s centre training: fit the centres of each layer's codebook to the data by
    Adam on the cross-entropy, with the assignments fixed (see the module docstring).

    Only the centres change: the biases and every other parameter of ``network`` keep their
    values.  The training runs on a copy of ``network`` in training mode, through
    :func:`~pyro_bnn.baselines.train_deterministic` (its checks, progress bar and errors), so
    batch-norm layers normalize with batch statistics while the centres train; their running
    statistics are not kept.

    :param network: the network whose layers the codebooks belong to (the masked posterior
        mean network of :class:`~pyro_bnn.compression.CompressedNetwork`); not modified.
    :param codebooks: ``{layer name: Codebook}``, names as in ``network.named_modules()``,
        each mask of the layer's weight shape.
    :param data: batches ``(inputs, labels)`` of a classification task (a ``DataLoader`` of
        the training set, not the test set).
    :param epochs: passes over ``data`` (at least 1).
    :param lr: Adam's learning rate.
    :param seed: seeds torch's global generator (the data order of a shuffling loader).
    :param scheduler: optional factory ``optimizer -> LRScheduler``, stepped once per epoch.
    :returns: ``(codebooks, history)``: the codebooks with trained centres (same assignments),
        and :func:`~pyro_bnn.baselines.train_deterministic`'s per-epoch records.
    """
    # Imported here: the baselines import pyro_bnn.infer, which imports this package.
    from pyro_bnn.baselines import train_deterministic
    from pyro_bnn.baselines._checks import check_positive_int

    from .export import masked_network

    check_positive_int("epochs", epochs)
    if not isinstance(codebooks, Mapping) or not codebooks:
        raise ValueError("codebooks must be a non-empty mapping from layer names to Codebooks")
    modules = dict(network.named_modules())
    for name, codebook in codebooks.items():
        if not isinstance(codebook, Codebook):
            raise TypeError(
                f"codebooks[{name!r}] must be a Codebook, got {type(codebook).__name__}"
            )
        layer = modules.get(name)
        if layer is None or not isinstance(getattr(layer, "weight", None), torch.Tensor):
            raise ValueError(f"the network has no layer {name!r} with a weight")
        if codebook.mask.shape != layer.weight.shape:
            raise ValueError(
                f"the codebook of {name!r} is for a weight of shape {tuple(codebook.mask.shape)}, "
                f"but the layer's is {tuple(layer.weight.shape)}"
            )
    shared = masked_network(network, {name: cb.weight() for name, cb in codebooks.items()})
    shared.requires_grad_(False)
    layers = dict(shared.named_modules())
    for name, codebook in codebooks.items():
        parametrize.register_parametrization(layers[name], "weight", _SharedWeight(codebook))
        # The centres inherit the frozen weight's requires_grad; they are what trains.
        layers[name].parametrizations.weight.original.requires_grad_(True)
    history = train_deterministic(
        shared, data, epochs=epochs, lr=lr, seed=seed, scheduler=scheduler, progress=progress
    )
    trained = {
        name: dataclasses.replace(
            codebook,
            centres=layers[name].parametrizations.weight.original.detach().clone(),
        )
        for name, codebook in codebooks.items()
    }
    return trained, history


__all__ = ["Codebook", "kmeans_share", "train_codebooks"]
