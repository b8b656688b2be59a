"""The deterministic baseline: the same network trained by maximum likelihood."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pyro_bnn.infer.fit import default_optimizer


def train_deterministic(
    net: nn.Module,
    data: Iterable,
    *,
    epochs: int,
    lr: float = 1e-3,
    seed: int | None = None,
    scheduler: Callable | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``net`` with Adam (as :func:`pyro_bnn.fit` does) on the cross-entropy, one pass
    over ``data`` per epoch.

    :param scheduler: optional factory ``optimizer -> LRScheduler``, stepped once per epoch
        (the same contract as :func:`pyro_bnn.fit`'s).
    :returns: one ``{"epoch", "loss", "lr"}`` record per epoch (mean training cross-entropy and
        the learning rate the epoch used).
    """
    if seed is not None:
        torch.manual_seed(seed)
    optimizer = default_optimizer(net.parameters(), lr)
    schedule = scheduler(optimizer) if scheduler is not None else None
    history = []
    net.train()
    total = epochs * len(data) if hasattr(data, "__len__") else None
    with tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True) as bar:
        for epoch in range(epochs):
            losses = []
            epoch_lr = optimizer.param_groups[0]["lr"]
            for x, y in data:
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(x), y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss.item()} at epoch {epoch + 1}")
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                bar.update(1)
            history.append({"epoch": epoch + 1, "loss": sum(losses) / len(losses), "lr": epoch_lr})
            if schedule is not None:
                schedule.step()
            bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]['loss']:.4f}")
    return history


@torch.no_grad()
def predict_deterministic(net: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities ``softmax(net(x))``, shape ``(N, C)``, in evaluation mode."""
    was_training = net.training
    net.eval()
    try:
        return torch.cat(
            [net(x[i : i + batch_size]).softmax(-1) for i in range(0, len(x), batch_size)]
        )
    finally:
        net.train(was_training)
