"""Figures of a training run (matplotlib, written as PNG files without a display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def training_curves(history: Sequence[Mapping], path: str) -> None:
    """Loss per epoch; for SVI also the expected log-likelihood and the KL, separately."""
    plt = _pyplot()
    epochs = [record["epoch"] for record in history]
    if history and "kl" in history[0]:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        axes[0].plot(epochs, [-record["data"] for record in history], marker="o")
        axes[0].set_title("negative expected log-likelihood")
        axes[1].plot(epochs, [record["kl"] for record in history], marker="o", color="C1")
        axes[1].set_title("KL(q || p)")
        for axis in axes:
            axis.set_xlabel("epoch")
            axis.set_ylabel("nats")
            axis.set_yscale("log")
    else:
        fig, axis = plt.subplots(figsize=(4.5, 3.4))
        axis.plot(epochs, [record["loss"] for record in history], marker="o")
        axis.set_title("training cross-entropy")
        axis.set_xlabel("epoch")
        axis.set_ylabel("nats per example")
    _save(fig, path)


def log_alpha_histogram(log_alpha: Mapping[str, torch.Tensor], threshold: float, path: str) -> None:
    """Histogram of log alpha per layer with the pruning threshold."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(log_alpha), figsize=(3.2 * len(log_alpha), 3), squeeze=False)
    for axis, (name, values) in zip(axes[0], log_alpha.items(), strict=True):
        axis.hist(values.flatten().numpy(), bins=60, color="C0")
        axis.axvline(threshold, color="C3", linestyle="--", label=f"threshold {threshold:g}")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("log alpha")
        axis.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    _save(fig, path)


def weight_masks(masks: Mapping[str, torch.Tensor], path: str) -> None:
    """Each layer's mask of kept weights (black = kept), outputs by flattened inputs."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(masks), figsize=(3.2 * len(masks), 3.2), squeeze=False)
    for axis, (name, mask) in zip(axes[0], masks.items(), strict=True):
        image = mask.reshape(mask.shape[0], -1).float().numpy()
        axis.imshow(image, cmap="Greys", interpolation="nearest", aspect="auto")
        kept = mask.float().mean().item()
        axis.set_title(f"{name}\n{100 * kept:.1f}% kept", fontsize=9)
        axis.set_xlabel("input")
        axis.set_ylabel("output")
    _save(fig, path)
