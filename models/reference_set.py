"""Choosing the reference set of a functional neural process from the training data.

The thesis draws ``|R|`` training points at random (300 for the image classifiers, 10 for the
toy regressions) and uses the others as the points ``M`` that mini-batches come from.  For
classification a stratified choice keeps every class in ``R`` in proportion, so that every
label has parents to pass on.
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from pyro_bnn.util import positive_integer

#: The ways :func:`choose_reference_set` can choose.
STRATEGIES = ("random", "stratified")


def choose_reference_set(
    targets: torch.Tensor, size: int, strategy: str = "random", seed: int = 0
) -> torch.Tensor:
    """Indices of ``size`` training points for the reference set.

    :param targets: the training targets ``(N, ...)``; class labels for ``"stratified"``.
    :param size: ``|R|``, at least 1 and smaller than ``N`` (points must remain outside).
    :param strategy: ``"random"``: uniformly without replacement; ``"stratified"``: each class
        gets ``round(size * n_c / N)`` points (largest remainders first, so the sizes add up),
        drawn uniformly within the class.
    :param seed: seed of a generator of its own (the global random state is left alone).
    :returns: sorted ``int64`` indices ``(size,)``.
    """
    size = positive_integer("size", size)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    total = len(targets)
    if size >= total:
        raise ValueError(
            f"a reference set of {size} points leaves none of the {total} training points "
            "outside it; choose fewer"
        )
    generator = torch.Generator().manual_seed(seed)
    if strategy == "random":
        return torch.randperm(total, generator=generator)[:size].sort().values
    if targets.dim() != 1 or targets.is_floating_point():
        raise ValueError("a stratified reference set needs 1-D integer class labels")
    classes, counts = targets.unique(return_counts=True)
    shares = counts.double() * size / total
    quotas = shares.floor().long()
    order = (shares - quotas).argsort(descending=True, stable=True)
    quotas[order[: size - int(quotas.sum())]] += 1
    chosen = []
    for label, quota in zip(classes, quotas, strict=True):
        members = (targets == label).nonzero().squeeze(-1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.cat(chosen).sort().values


def split_reference_set(
    dataset: TensorDataset, size: int, strategy: str = "random", seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], TensorDataset]:
    """``((x_R, y_R), the other points)`` of a dataset of inputs and targets.

    The other points are the ``M`` of the bound: train on them (their number is the model's
    ``num_data``) with the reference set held by the model.
    """
    x, y = dataset.tensors
    index = choose_reference_set(y, size, strategy, seed)
    outside = torch.ones(len(x), dtype=torch.bool)
    outside[index] = False
    return (x[index], y[index]), TensorDataset(x[outside], y[outside])
