"""Reliability diagrams: how well a classifier's confidence matches its accuracy."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pyro_bnn.metrics import expected_calibration_error, reliability_curve

from . import _checks
from ._figure import _axes_or_figure, _check_path, _figure, _finish

# Bins of adaptive binning narrower than this are drawn this wide, centred on their mean
# confidence, so that a bin of tied or nearly tied confidences stays visible.
_MIN_WIDTH = 0.01


class _Bins(NamedTuple):
    """The occupied bins of one model, as drawn."""

    left: torch.Tensor  # (K,) left edges
    right: torch.Tensor  # (K,) right edges
    confidence: torch.Tensor  # (K,) mean confidence
    accuracy: torch.Tensor  # (K,) accuracy
    counts: torch.Tensor  # (K,) number of examples
    shares: torch.Tensor  # (B,) share of the examples in each equal-width bin


def _bins(probs: torch.Tensor, labels: torch.Tensor, num_bins: int, binning: str) -> _Bins:
    """The occupied bins of :func:`~pyro_bnn.metrics.reliability_curve` with their edges:
    ``(b/B, (b+1)/B]`` for equal-width bins, and for adaptive ones the range of confidences
    each holds, from the largest confidence of the bin before (the smallest one for the first
    bin) to its own largest."""
    curve = reliability_curve(probs, labels, num_bins=num_bins, binning=binning)
    shares = curve.counts
    if binning != "equal_width":
        shares = reliability_curve(probs, labels, num_bins=num_bins).counts
    occupied = curve.counts > 0
    counts = curve.counts[occupied]
    if binning == "equal_width":
        index = occupied.nonzero().flatten().double()
        left, right = index / num_bins, (index + 1) / num_bins
    else:
        # Adaptive bins hold consecutive runs of the sorted confidences, in bin order.
        confidence = probs.double().max(-1).values.sort().values
        right = confidence[counts.cumsum(0) - 1]
        left = torch.cat([confidence[:1], right[:-1]])
        narrow = right - left < _MIN_WIDTH
        middle = curve.confidence[occupied]
        left = torch.where(narrow, middle - _MIN_WIDTH / 2, left)
        right = torch.where(narrow, middle + _MIN_WIDTH / 2, right)
    return _Bins(
        left=left,
        right=right,
        confidence=curve.confidence[occupied],
        accuracy=curve.accuracy[occupied],
        counts=counts,
        shares=shares.double() / len(labels),
    )


def reliability_diagram(
    probs: torch.Tensor | Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    num_bins: int = 15,
    binning: str = "equal_width",
    path: str | os.PathLike | None = None,
    *,
    ax: Axes | None = None,
) -> Figure:
    """A reliability diagram (DeGroot and Fienberg, 1983; Niculescu-Mizil and Caruana, 2005;
    Guo et al., 2017): the examples binned by confidence (their largest class probability),
    each bin's accuracy against its confidence, the diagonal ``accuracy = confidence`` of a
    calibrated classifier dashed; below, how the confidences are distributed: the share of the
    examples in each of ``num_bins`` equal-width bins (those of the diagram itself with
    ``binning="equal_width"``; adaptive bins hold equal shares by construction).

    The bins are those of :func:`~pyro_bnn.metrics.reliability_curve` (empty bins are not
    drawn) and the ECE that of :func:`~pyro_bnn.metrics.expected_calibration_error`, with the
    same ``num_bins`` and ``binning``.

    - One model (a tensor, or a mapping with one entry): a bar per bin spanning its
      confidences (``(b/B, (b+1)/B]`` for equal-width bins; for adaptive ones from the
      largest confidence of the bin before to its own largest, at least 0.01 wide) up to its
      accuracy, and the gap from the accuracy to the bin's mean confidence hatched in red
      (its bin-size-weighted mean is the ECE); the ECE in the title.
    - Several models (a mapping ``{name: probs}``): one line with markers per model through
      the bins' ``(mean confidence, accuracy)``, each model's ECE in the legend; below, one
      outline per model, in the same colours.

    :param probs: ``(N, C)`` class probabilities (the posterior predictive), each row summing
        to one, or a mapping ``{name: (N, C) probabilities}`` to overlay several models on the
        same examples.
    :param labels: ``(N,)`` integer labels in ``0..C-1``.
    :param num_bins: the number of bins, at least 1.
    :param binning: ``"equal_width"`` (Guo et al.'s ECE) or ``"adaptive"`` (equal-mass bins).
    :param path: also save the figure there (PNG unless the suffix names another format).
    :param ax: draw the diagram into this axes instead, without the panel of shares (a single
        model's bars are labelled with their numbers of examples then); the figure holding it
        is returned.
    :returns: the figure: two axes (the diagram, the shares below), or ``ax``'s figure.

    M. H. DeGroot and S. E. Fienberg, *The comparison and evaluation of forecasters*, The
    Statistician 32, 1983.  A. Niculescu-Mizil and R. Caruana, *Predicting good probabilities
    with supervised learning*, ICML 2005.  C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger, *On
    calibration of modern neural networks*, ICML 2017.
    """
    path = _check_path(path)
    if isinstance(probs, Mapping):
        models = _checks.mapping("probs", probs, "model names to probabilities")
    else:
        models = {None: probs}
    labels = _checks.as_tensor("labels", labels)
    bins, errors = {}, {}
    for name, model_probs in models.items():
        argument = "probs" if name is None else f"probs[{name!r}]"
        model_probs = _checks.as_tensor(argument, model_probs)
        try:
            bins[name] = _bins(model_probs, labels, num_bins, binning)
            errors[name] = expected_calibration_error(
                model_probs, labels, num_bins=num_bins, binning=binning
            )
        except ValueError as error:
            if name is None:
                raise
            raise ValueError(f"{argument}: {error}") from None
    if ax is None:
        fig = _figure(4.5, 5.2)
        axis, below = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        fig, axis = _axes_or_figure(ax, 4.5, 4.5)
        below = None
    axis.plot([0, 1], [0, 1], linestyle="--", color="0.5", label="calibrated")
    description = f"{num_bins} {binning.replace('_', '-')} bin{'s' if num_bins > 1 else ''}"
    if len(bins) == 1:
        ((name, model),) = bins.items()
        width = model.right - model.left
        bars = axis.bar(
            model.left.numpy(), model.accuracy.numpy(), width.numpy(), align="edge",
            color="C0", edgecolor="k", linewidth=0.5, label=name or "accuracy",
        )  # fmt: skip
        axis.bar(
            model.left.numpy(), (model.confidence - model.accuracy).numpy(), width.numpy(),
            bottom=model.accuracy.numpy(), align="edge", color="C3", alpha=0.3, hatch="//",
            edgecolor="C3", linewidth=0.5, label="gap",
        )  # fmt: skip
        if below is None:
            axis.bar_label(bars, labels=[str(int(n)) for n in model.counts], fontsize=6)
        axis.set_title(f"ECE {errors[name]:.4f} ({description})", fontsize=10)
    else:
        for index, (name, model) in enumerate(bins.items()):
            axis.plot(
                model.confidence.numpy(), model.accuracy.numpy(), marker="o", markersize=4,
                color=f"C{index}", label=f"{name} (ECE {errors[name]:.4f})",
            )  # fmt: skip
        axis.set_title(f"reliability ({description})", fontsize=10)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.legend(fontsize=7, loc="upper left")
    if below is None:
        axis.set_xlabel("confidence")
    else:
        edges = torch.linspace(0, 1, num_bins + 1).numpy()
        for index, model in enumerate(bins.values()):
            below.stairs(
                model.shares.numpy(), edges, fill=len(bins) == 1, color=f"C{index}",
                linewidth=1 if len(bins) == 1 else 1.5,
            )  # fmt: skip
        below.set_xlabel("confidence")
        below.set_ylabel("share of examples")
    return _finish(fig, path)
