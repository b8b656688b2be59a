"""Figures of a training run and of its compression (matplotlib, PNG files without a display)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pyro_bnn.compression import CompressedNetwork


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


# ------------------------------------------------------------------ compression figures
#
# These two return their figure as well as saving it: a notebook shows the returned figure, a
# script saves it.  They build a `matplotlib.figure.Figure` without pyplot, so they neither
# switch the backend of a running notebook (the helpers above select Agg) nor leave the figure
# open in pyplot's list of figures.


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _write_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Save ``fig`` to ``path`` (format from the suffix, PNG without one) through a temporary
    file in the same directory, so that a failed save leaves neither a partial file nor the
    temporary one."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    os.close(handle)
    try:
        fig.savefig(temporary, format=suffix, dpi=110)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _layer_threshold(thresholds, layer: str) -> float | None:
    if thresholds is None:
        return None
    if isinstance(thresholds, Mapping):
        for key in (layer, f"{layer}.weight"):
            if key in thresholds:
                return float(thresholds[key])
        raise ValueError(
            f"thresholds has no entry for the layer {layer!r}; its keys are "
            f"{', '.join(map(repr, thresholds))}"
        )
    if isinstance(thresholds, bool) or not isinstance(thresholds, (int, float)):
        raise ValueError(
            f"thresholds must be a number, a mapping from layer names to numbers or None, got "
            f"{thresholds!r}"
        )
    return float(thresholds)


def _boundary(statistic: torch.Tensor, kept: torch.Tensor) -> float | None:
    """The midpoint between kept and removed values when a threshold separates them."""
    if kept.all() or not kept.any():
        return None
    inside, outside = statistic[kept], statistic[~kept]
    if inside.max() < outside.min():
        return 0.5 * float(inside.max() + outside.min())
    if outside.max() < inside.min():
        return 0.5 * float(outside.max() + inside.min())
    return None


def _kept_units(compressed: CompressedNetwork, layer: str) -> torch.Tensor:
    """The groups of ``layer`` left after the cascade: input neurons of a linear layer, output
    channels of a convolution (what ``architecture()`` counts)."""
    masks = compressed.unit_masks[layer]
    return masks.inputs if compressed.posteriors[layer].group_dim == 1 else masks.outputs


def group_statistics(
    compressed: CompressedNetwork,
    path: str | os.PathLike | None = None,
    *,
    thresholds: float | Mapping[str, float] | None = None,
    xlabel: str = "group statistic",
) -> Figure:
    """One histogram per layer of the pruning rule's statistic (``compressed.posteriors[layer]
    .statistic``: log alpha for group normal-Jeffreys, the negative log-mode for the horseshoe,
    the test-time gate for L0, the inclusion probability for spike-and-slab), the kept and the
    removed groups in two colours, titled with the kept/total count.

    :param compressed: the result of :func:`~pyro_bnn.compression.compress`.
    :param path: also save the figure there (PNG unless the suffix names another format).
    :param thresholds: the thresholds given to ``compress`` (a number for every layer or a
        mapping from layer names), drawn as dashed lines; without them the line is drawn where
        the kept and removed groups separate, if they do.
    :param xlabel: the name of the statistic.
    :returns: the figure, with one axes per layer.
    """
    layers = list(compressed.posteriors)
    if not layers:
        raise ValueError("the compressed network has no layers to plot")
    limits = {layer: _layer_threshold(thresholds, layer) for layer in layers}
    fig = _figure(3.2 * len(layers), 3.0)
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for axis, layer in zip(axes, layers, strict=True):
        post = compressed.posteriors[layer]
        statistic = post.statistic.detach().flatten().double().cpu()
        # Elementwise priors give a statistic per weight; colour each by its own decision.
        decision = post.weight_keep if post.statistic.shape != post.keep.shape else post.keep
        kept = decision.detach().flatten().cpu()
        finite = torch.isfinite(statistic)
        values = statistic[finite]
        low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
        threshold = limits[layer]
        if threshold is not None:
            low, high = min(low, threshold), max(high, threshold)
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        bins = torch.linspace(low, high, 41).numpy()
        axis.hist(
            [statistic[finite & kept].numpy(), statistic[finite & ~kept].numpy()],
            bins=bins, stacked=True, color=["C0", "0.65"], label=["kept", "removed"],
        )  # fmt: skip
        if threshold is not None:
            axis.axvline(threshold, color="C3", linestyle="--", label=f"threshold {threshold:g}")
        else:
            boundary = _boundary(statistic[finite], kept[finite])
            if boundary is not None:
                axis.axvline(boundary, color="C3", linestyle="--", label="boundary")
        total, groups = post.keep.numel(), int(post.keep.sum())
        title = f"{layer}: {groups}/{total} kept"
        after = int(_kept_units(compressed, layer).sum())
        if after != groups:
            title += f"\n({after} after the cascade)"
        axis.set_title(title, fontsize=9)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("groups" if decision is post.keep else "weights")
    axes[0].legend(fontsize=7)
    if path is not None:
        _write_figure(fig, path)
    return fig


def pruned_architecture(
    compressed: CompressedNetwork, path: str | os.PathLike | None = None
) -> Figure:
    """A bar chart per layer of the original and the kept groups (input neurons of linear
    layers, output channels of convolutions, after the cascade: ``original_architecture()``
    and ``architecture()``), each layer annotated with its bits per weight
    (``sign + exponent + mantissa``).

    :param compressed: the result of :func:`~pyro_bnn.compression.compress`.
    :param path: also save the figure there (PNG unless the suffix names another format).
    :returns: the figure, with one axes.
    """
    layers = list(compressed.unit_masks)
    if not layers:
        raise ValueError("the compressed network has no layers to plot")
    original = [_kept_units(compressed, layer).numel() for layer in layers]
    kept = [int(_kept_units(compressed, layer).sum()) for layer in layers]
    fig = _figure(max(4.0, 1.3 * len(layers) + 1.5), 3.4)
    axis = fig.subplots()
    positions = torch.arange(len(layers)).double().numpy()
    width = 0.38
    axis.bar(positions - width / 2, original, width, color="0.75", label="original")
    bars = axis.bar(positions + width / 2, kept, width, color="C0", label="kept")
    for bar, layer, count, total in zip(bars, layers, kept, original, strict=True):
        precision = compressed.precisions[layer]
        axis.annotate(
            f"{count}/{total}\n{precision.total} bits\n"
            f"({precision.sign}+{precision.exponent}+{precision.mantissa})",
            (bar.get_x() + bar.get_width() / 2, max(bar.get_height(), 1)),
            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7,
        )  # fmt: skip
    axis.set_yscale("log")
    axis.set_ylim(0.8, 8 * max(original))
    axis.set_xticks(positions, layers)
    axis.set_ylabel("groups (log scale)")
    axis.set_title(
        f"{compressed.original_architecture()} → {compressed.architecture()}, "
        f"bits {compressed.bits()}",
        fontsize=9,
    )
    axis.legend(fontsize=8, loc="upper left")
    if path is not None:
        _write_figure(fig, path)
    return fig
