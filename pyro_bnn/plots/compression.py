"""Figures of a network's compression: the per-weight and per-group statistics that decide
what is pruned, the masks, and the architecture that remains."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from matplotlib.figure import Figure

from . import _checks
from ._figure import _bin_edges, _check_path, _figure, _finish

if TYPE_CHECKING:
    from pyro_bnn.compression import CompressedNetwork


def _layer_values(name: str, layers) -> dict[str, torch.Tensor]:
    """``{layer: flattened float64 values}``, checking each layer holds values and no NaN."""
    layers = _checks.mapping(name, layers, "layer names to tensors")
    return {
        layer: _checks.values(f"{name}[{layer!r}]", value, finite=False).flatten()
        for layer, value in layers.items()
    }


def _threshold(threshold) -> float | None:
    return None if threshold is None else _checks.number("threshold", threshold)


def _layer_histograms(
    layers: dict[str, torch.Tensor],
    threshold: float | None,
    path: str | None,
    *,
    xlabel: str,
    keep_below: bool,
    threshold_label: str = "",
) -> Figure:
    """One histogram per layer of checked values (60 bins over the finite ones and the
    threshold, log counts), the threshold dashed, each layer titled with the share it keeps
    (values below the threshold with ``keep_below``, above it otherwise) and the number of
    infinite values, which no bin holds."""
    fig = _figure(3.2 * len(layers), 3.0)
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for axis, (layer, values) in zip(axes, layers.items(), strict=True):
        finite = values[torch.isfinite(values)]
        title = layer
        if threshold is not None:
            kept = values < threshold if keep_below else values > threshold
            title += f"\n{100 * kept.double().mean().item():.1f}% kept"
        if len(finite) < len(values):
            title += f" ({len(values) - len(finite)} infinite, not drawn)"
        if len(finite):
            bounds = [finite.min().item(), finite.max().item()]
            bounds += [] if threshold is None else [threshold]
            edges = _bin_edges(min(bounds), max(bounds), 60)
            axis.hist(finite.numpy(), bins=edges.numpy(), color="C0")
            axis.set_yscale("log")
        if threshold is not None:
            label = threshold_label or f"threshold {threshold:g}"
            axis.axvline(threshold, color="C3", linestyle="--", label=label)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("weights")
    if threshold is not None:
        axes[0].legend(fontsize=8)
    return _finish(fig, path)


def log_alpha_histogram(
    log_alpha: Mapping[str, torch.Tensor],
    threshold: float | None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One histogram per layer of sparse variational dropout's ``log alpha = log sigma^2 -
    log mu^2`` (Molchanov et al., 2017), with the pruning threshold dashed: the weights below
    it are kept.  A trained network shows two modes, the kept weights and the pruned ones
    piling up at large ``log alpha``.

    :param log_alpha: ``{layer: log alpha}``, tensors of any shape (the weight's), at least
        one entry each, no NaN; infinite values (``+inf`` where ``mu = 0``, a pruned weight)
        count in the share kept but no bin holds them (the title says how many).
    :param threshold: the pruning threshold (``log alpha < threshold`` is kept; 3 in Molchanov
        et al.), titling each layer with the share kept, or ``None`` for no line.
    :param path: also save the figure there (PNG unless the suffix names another format).
    :returns: the figure, with one axes per layer.

    D. Molchanov, A. Ashukha and D. Vetrov, *Variational dropout sparsifies deep neural
    networks*, ICML 2017.
    """
    path = _check_path(path)
    layers = _layer_values("log_alpha", log_alpha)
    threshold = _threshold(threshold)
    return _layer_histograms(layers, threshold, path, xlabel="log alpha", keep_below=True)


def signal_to_noise_histogram(
    snr: Mapping[str, torch.Tensor],
    threshold: float | None,
    path: str | os.PathLike | None = None,
    *,
    decibels: bool = True,
) -> Figure:
    """One histogram per layer of the weights' signal-to-noise ratio ``|mu| / sigma`` under a
    Gaussian posterior, with the pruning threshold dashed: the weights above it are kept
    (Blundell et al., 2015, prune by it and plot it in decibels, ``10 log10(|mu| / sigma)``).
    The same figure as :func:`log_alpha_histogram`: for a Gaussian posterior ``log alpha =
    -2 log(snr)``.

    :param snr: ``{layer: signal-to-noise ratio}``, non-negative tensors of any shape, at least
        one entry each, no NaN.  Zeros (``mu = 0``) are ``-inf`` decibels: they count as
        pruned but no bin holds them (the title says how many).
    :param threshold: the pruning threshold in the units of ``snr`` (not in decibels; ``snr >
        threshold`` is kept), titling each layer with the share kept, or ``None`` for no line.
    :param path: also save the figure there (PNG unless the suffix names another format).
    :param decibels: draw ``10 log10(snr)``; ``False`` draws ``snr`` itself.
    :returns: the figure, with one axes per layer.

    C. Blundell, J. Cornebise, K. Kavukcuoglu and D. Wierstra, *Weight uncertainty in neural
    networks*, ICML 2015.
    """
    path = _check_path(path)
    layers = _layer_values("snr", snr)
    for layer, values in layers.items():
        if (values < 0).any():
            raise ValueError(
                f"snr[{layer!r}] must be non-negative (|mu| / sigma), but its smallest entry is "
                f"{values.min().item():g}"
            )
    threshold = _threshold(threshold)
    if not decibels:
        return _layer_histograms(layers, threshold, path, xlabel="|mu| / sigma", keep_below=False)
    label = ""
    if threshold is not None:
        if threshold <= 0:
            raise ValueError(
                f"threshold must be positive to be drawn in decibels, got {threshold:g}"
            )
        label = f"threshold {threshold:g} ({10 * math.log10(threshold):.3g} dB)"
        threshold = 10 * math.log10(threshold)
    layers = {layer: 10 * values.log10() for layer, values in layers.items()}
    return _layer_histograms(
        layers, threshold, path, xlabel="10 log10(|mu| / sigma) (dB)", keep_below=False,
        threshold_label=label,
    )  # fmt: skip


def weight_masks(
    masks: Mapping[str, torch.Tensor], path: str | os.PathLike | None = None
) -> Figure:
    """Each layer's mask of kept weights as an image (black = kept), outputs (rows) by the
    flattened inputs (columns: a convolution's ``in_channels x kernel`` positions), titled with
    the share kept.

    :param masks: ``{layer: mask}``, boolean (or 0/1) tensors with the weight's shape
        ``(out, ...)``, at least one dimension and one entry each; a ``(out,)`` mask draws as a
        single column.
    :param path: also save the figure there (PNG unless the suffix names another format).
    :returns: the figure, with one axes per layer.
    """
    path = _check_path(path)
    images = {}
    for layer, mask in _checks.mapping("masks", masks, "layer names to tensors").items():
        name = f"masks[{layer!r}]"
        mask = _checks.values(name, mask)
        if mask.dim() == 0:
            raise ValueError(f"{name} must have the weight's shape (out, ...), got a scalar")
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"{name} must hold booleans (or 0 and 1) only")
        images[layer] = mask.reshape(mask.shape[0], -1)
    fig = _figure(3.2 * len(images), 3.2)
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for axis, (layer, image) in zip(axes, images.items(), strict=True):
        axis.imshow(
            image.numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest", aspect="auto"
        )
        axis.set_title(f"{layer}\n{100 * image.mean().item():.1f}% kept", fontsize=9)
        axis.set_xlabel("input")
        axis.set_ylabel("output")
    return _finish(fig, path)


def _layer_threshold(thresholds, layer: str) -> float | None:
    if thresholds is None:
        return None
    if isinstance(thresholds, Mapping):
        for key in (layer, f"{layer}.weight"):
            if key in thresholds:
                return _checks.number(f"thresholds[{key!r}]", thresholds[key])
        raise ValueError(
            f"thresholds has no entry for the layer {layer!r}; its keys are "
            f"{', '.join(map(repr, thresholds))}"
        )
    if isinstance(thresholds, bool) or not isinstance(thresholds, (int, float)):
        raise ValueError(
            f"thresholds must be a number, a mapping from layer names to numbers or None, got "
            f"{thresholds!r}"
        )
    return _checks.number("thresholds", thresholds)


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
    path = _check_path(path)
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
        bins = _bin_edges(low, high, 40).numpy()
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
    return _finish(fig, path)


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
    path = _check_path(path)
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
    return _finish(fig, path)
