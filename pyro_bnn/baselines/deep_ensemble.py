"""Deep ensembles (Lakshminarayanan, Pritzel & Blundell, 2017).

``size`` copies of a network, each initialized and shuffled with its own seed and trained
independently as the deterministic baseline; the predictive is the uniform mixture of the
members' predictives.

Two choices differ from the paper and are deliberate:

- **No adversarial training.**  The paper optionally adds fast-gradient-sign examples to each
  member's loss (the thesis's baselines used it); these members train on the data alone, so the
  ensemble's diversity comes from the random initialization and data order only.
- **Homoscedastic regression noise.**  The paper's regression members output a mean and a
  variance per input (a heteroscedastic two-output network).  Here every member outputs the
  mean and learns one noise variance of its own by maximum likelihood
  (:class:`~pyro_bnn.baselines.GaussianNoise`), the likelihood of every other baseline, so the
  ensemble differs from them in its posterior approximation only.  The mixture's moments are
  the paper's: the mean of the members' means, and the mean of their noise variances plus the
  spread of their means (:class:`~pyro_bnn.infer.RegressionPrediction`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ._checks import (
    TASKS,
    check_network,
    check_non_negative,
    check_non_negative_int,
    check_positive,
    check_positive_int,
    check_task,
)
from ._prediction import (
    check_prediction_arguments,
    classification_prediction,
    in_chunks,
    regression_prediction,
)
from .deterministic import network_outputs, train_deterministic
from .gaussian_noise import GaussianNoise


@dataclass
class EnsembleMember:
    """One trained member: its network, its noise (regression only), the seed that initialized
    and shuffled it, and its training history (:func:`train_deterministic`'s records)."""

    net: nn.Module
    noise: GaussianNoise | None = None
    seed: int | None = None
    history: list[dict] = field(default_factory=list)


def train_deep_ensemble(
    make_net: Callable[[], nn.Module],
    data: Iterable,
    size: int = 5,
    *,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    task: str = "classification",
    noise_variance: float = 1.0,
    scheduler: Callable | None = None,
    progress: bool = True,
) -> list[EnsembleMember]:
    """Train a deep ensemble of ``size`` members.

    Member ``k`` seeds torch's global generator with ``seed + k``, then calls ``make_net()``
    (its initialization) and :func:`train_deterministic` (its data order when ``data`` shuffles,
    and any dropout masks), so members differ and a CPU run is repeatable.

    :param make_net: a function returning a freshly initialized network.
    :param data: the training batches ``(inputs, targets)``, iterated once per epoch per member.
    :param size: the number of members, at least 1 (the paper uses 5).
    :param epochs, lr, weight_decay, scheduler, progress: :func:`train_deterministic`'s, for
        every member.
    :param seed: the first member's seed.
    :param task: ``"classification"`` or ``"regression"``.
    :param noise_variance: for regression, the initial noise variance of every member (each
        learns its own).
    :returns: the trained :class:`EnsembleMember` s, for :func:`predict_ensemble`.
    """
    if not callable(make_net) or isinstance(make_net, nn.Module):
        raise TypeError(
            "make_net must be a function returning a new network (a module would make every "
            "member the same network)"
        )
    check_positive_int("size", size)
    check_non_negative_int("epochs", epochs)
    check_positive("lr", lr)
    check_non_negative("weight_decay", weight_decay)
    check_positive("noise_variance", noise_variance)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if task not in TASKS:
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    members = []
    for k in range(size):
        torch.manual_seed(seed + k)
        net = make_net()
        check_network(net)
        if any(net is member.net for member in members):
            raise ValueError("make_net returned the same network twice; it must build a new one")
        noise = GaussianNoise(noise_variance) if task == "regression" else None
        history = train_deterministic(
            net,
            data,
            epochs=epochs,
            lr=lr,
            scheduler=scheduler,
            progress=progress,
            weight_decay=weight_decay,
            task=task,
            noise=noise,
        )
        members.append(EnsembleMember(net=net, noise=noise, seed=seed + k, history=history))
    return members


@torch.no_grad()
def predict_ensemble(
    members: Sequence[EnsembleMember | nn.Module],
    x: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    batch_size: int = 1000,
):
    """The ensemble's per-member predictions, each member in evaluation mode (its mode restored
    afterwards); a loop over members, each running every chunk of ``batch_size`` inputs.

    :param members: :class:`EnsembleMember` s (:func:`train_deep_ensemble`), or plain
        classification networks.  All classify, or all regress (every member with a noise).
    :param x: inputs ``(N, ...)``.
    :param y: targets ``(N,)``; gives the prediction's ``log_likelihood``, ``(S, N)``.
    :returns: a :class:`~pyro_bnn.infer.ClassificationPrediction` (``probs_samples``
        ``(S, N, C)``, ``S`` the ensemble size) or a
        :class:`~pyro_bnn.infer.RegressionPrediction` (``mean_samples`` and
        ``variance_samples`` ``(S, N)``).
    """
    if isinstance(members, (nn.Module, EnsembleMember)) or not isinstance(members, Sequence):
        raise TypeError("members must be a list of ensemble members or networks")
    if not members:
        raise ValueError("the ensemble has no member")
    members = [m if isinstance(m, EnsembleMember) else EnsembleMember(net=m) for m in members]
    for member in members:
        check_network(member.net)
    regression = [member.noise is not None for member in members]
    if any(regression) and not all(regression):
        raise ValueError("the members mix classifiers and regression networks (with a noise)")
    task = "regression" if regression[0] else "classification"
    for member in members:
        check_task(task, member.noise)
    check_prediction_arguments(task, x, y, batch_size)

    per_member = []
    for member in members:
        net = member.net
        was_training = net.training
        net.eval()
        try:
            per_member.append(
                in_chunks(
                    lambda chunk, net=net, noise=member.noise: tuple(
                        t.unsqueeze(0) for t in network_outputs(net, chunk, noise)
                    ),
                    x,
                    batch_size,
                )
            )
        finally:
            net.train(was_training)
    if len({outputs[0].shape for outputs in per_member}) != 1:
        raise ValueError("the members' outputs differ in shape (numbers of classes)")
    outputs = [torch.cat(parts) for parts in zip(*per_member, strict=True)]
    if task == "classification":
        return classification_prediction(outputs[0], y)
    return regression_prediction(*outputs, y)
