"""The posterior predictive of a one-dimensional regression."""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Mapping, Sequence

import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from . import _checks
from ._figure import _axes_or_figure, _check_path, _finish

Bounds = tuple[torch.Tensor, torch.Tensor]


def _interval_label(key) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, numbers.Real) and not isinstance(key, bool) and 0 < key < 1:
        return f"{100 * float(key):g}% interval"
    raise ValueError(
        f"the keys of intervals must be probabilities in (0, 1) or labels (strings), got {key!r}"
    )


def _std_bands(x: torch.Tensor, mean: torch.Tensor, std, num_std) -> list:
    std = _checks.vector("std", std, length=len(x), like="x")
    if (std < 0).any():
        index = int((std < 0).nonzero()[0])
        raise ValueError(f"std must be non-negative, but std[{index}] = {std[index].item():g}")
    if isinstance(num_std, Sequence) and not isinstance(num_std, str):
        if not num_std:
            raise ValueError("num_std is empty: give a number or a sequence of numbers")
        multiples = [
            _checks.number(f"num_std[{i}]", k, positive=True) for i, k in enumerate(num_std)
        ]
    else:
        multiples = [_checks.number("num_std", num_std, positive=True)]
    return [(f"mean ± {k:g} std", mean - k * std, mean + k * std) for k in multiples]


def _interval_bands(x: torch.Tensor, intervals) -> list:
    if isinstance(intervals, (tuple, list)):
        intervals = {"interval": intervals}
    intervals = _checks.mapping("intervals", intervals, "probabilities to (lower, upper)")
    bands = []
    for key, bounds in intervals.items():
        label, name = _interval_label(key), f"intervals[{key!r}]"
        try:
            if isinstance(bounds, (str, Mapping)):
                raise TypeError
            lower, upper = bounds
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a pair (lower, upper) of (N,) tensors") from None
        lower = _checks.vector(f"{name}'s lower bound", lower, length=len(x), like="x")
        upper = _checks.vector(f"{name}'s upper bound", upper, length=len(x), like="x")
        crossed = lower > upper
        if crossed.any():
            first = int(crossed.nonzero()[0])
            raise ValueError(
                f"{name}: the lower bound exceeds the upper bound at {int(crossed.sum())} of "
                f"{len(x)} points (first at x = {x[first].item():g})"
            )
        bands.append((label, lower, upper))
    return bands


def predictive_bands(
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor | None = None,
    path: str | os.PathLike | None = None,
    *,
    intervals: Mapping[float | str, Bounds] | Bounds | None = None,
    num_std: float | Sequence[float] = 3,
    x_train: torch.Tensor | None = None,
    y_train: torch.Tensor | None = None,
    truth: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | None = None,
    ax: Axes | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
) -> Figure:
    """The posterior predictive of a regression on one input: its mean as a line over shaded
    bands of uncertainty, the training points as dots and, when known, the true function
    dashed, as in the toy regressions of Hernández-Lobato and Adams (2015) and Louizos and
    Welling (2016).  The points are drawn in the order of ``x`` (they need not be sorted).

    The bands are either ``mean ± k std`` (``std`` with ``num_std = k``, or several ``k``) or
    given bounds (``intervals``), for instance posterior predictive quantiles::

        predictive_bands(x, mean, std, num_std=(1, 2, 3))      # three nested bands
        predictive_bands(x, mean, intervals={0.5: (q25, q75), 0.9: (q05, q95)})
        predictive_bands(x, mean, intervals=(lower, upper))    # one band, "interval"

    Several bands are drawn nested, the widest (by mean width) first and lightest, each
    narrower one over it in a darker shade.

    :param x: ``(N,)`` inputs.
    :param mean: ``(N,)`` predictive mean at ``x``.
    :param std: ``(N,)`` predictive standard deviation at ``x`` (non-negative), or ``None``
        with ``intervals``; exactly one of the two is given.
    :param path: also save the figure there (PNG unless the suffix names another format).
    :param intervals: a mapping from probabilities in ``(0, 1)`` (labelled "90% interval") or
        from labels (strings) to bounds ``(lower, upper)``, each ``(N,)`` with ``lower <=
        upper``; or a single pair ``(lower, upper)``.
    :param num_std: with ``std``, the half-width of the band in standard deviations, or a
        sequence of them for nested bands; positive.  Ignored with ``intervals``.
    :param x_train: ``(M,)`` training inputs, drawn as dots with ``y_train`` (both or neither).
    :param y_train: ``(M,)`` training targets.
    :param truth: the true function, dashed: a callable mapping the sorted ``x`` (a float64
        tensor of shape ``(N,)``) to ``(N,)`` values, or the ``(N,)`` values at ``x``.
    :param ax: draw into this axes instead of a new figure; the figure holding it is returned.
    :param xlabel: the x-axis label.
    :param ylabel: the y-axis label.
    :returns: the figure, with one axes (``ax``'s figure when given).

    All tensors may also be arrays; none may hold NaN or infinity.

    J. M. Hernández-Lobato and R. P. Adams, *Probabilistic backpropagation for scalable
    learning of Bayesian neural networks*, ICML 2015.  C. Louizos and M. Welling, *Structured
    and efficient variational deep learning with matrix Gaussian posteriors*, ICML 2016.
    """
    path = _check_path(path)
    x = _checks.vector("x", x)
    mean = _checks.vector("mean", mean, length=len(x), like="x")
    if (std is None) == (intervals is None):
        raise ValueError(
            "give either std (bands mean ± num_std std) or intervals (bands between given "
            "bounds), " + ("not both" if std is not None else "got neither")
        )
    if std is not None:
        bands = _std_bands(x, mean, std, num_std)
    else:
        bands = _interval_bands(x, intervals)
    if (x_train is None) != (y_train is None):
        raise ValueError("give x_train and y_train together, or neither")
    if x_train is not None:
        x_train = _checks.vector("x_train", x_train)
        y_train = _checks.vector("y_train", y_train, length=len(x_train), like="x_train")
    order = x.argsort()
    x, mean = x[order], mean[order]
    if callable(truth):
        truth = _checks.vector("truth(x)", truth(x), length=len(x), like="x")
    elif truth is not None:
        truth = _checks.vector("truth", truth, length=len(x), like="x")[order]
    bands = sorted(
        ((label, lower[order], upper[order]) for label, lower, upper in bands),
        key=lambda band: -(band[2] - band[1]).mean().item(),
    )
    fig, axis = _axes_or_figure(ax, 6.0, 3.6)
    blue, white = torch.tensor(to_rgb("C0")), torch.ones(3)
    for index, (label, lower, upper) in enumerate(bands):
        # Opaque shades of the mean's colour, darker inwards (and in the legend too).
        weight = 0.25 + 0.35 * index / max(len(bands) - 1, 1)
        colour = tuple((weight * blue + (1 - weight) * white).tolist())
        axis.fill_between(
            x.numpy(), lower.numpy(), upper.numpy(), color=colour, linewidth=0, label=label
        )
    axis.plot(x.numpy(), mean.numpy(), color="C0", linewidth=1.5, label="predictive mean")
    if truth is not None:
        axis.plot(x.numpy(), truth.numpy(), color="k", linestyle="--", linewidth=1, label="truth")
    if x_train is not None:
        axis.scatter(
            x_train.numpy(), y_train.numpy(), s=12, color="k", zorder=3, label="training data"
        )
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
    return _finish(fig, path)
