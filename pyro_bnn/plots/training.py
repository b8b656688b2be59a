"""The training curves of a run."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._figure import _check_path, _figure, _finish


def _records(history) -> list[Mapping]:
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise ValueError(
            "history must be a sequence of per-epoch records (mappings or EpochRecord), got "
            f"{type(history).__name__}"
        )
    if not history:
        raise ValueError("history is empty: there is no epoch to plot")
    records = []
    for index, record in enumerate(history):
        if not isinstance(record, Mapping):
            if not hasattr(record, "__dict__"):
                raise ValueError(
                    f"history[{index}] must be a mapping or an EpochRecord, got "
                    f"{type(record).__name__}"
                )
            record = vars(record)
        records.append(record)
    return records


def _column(records: list[Mapping], key: str) -> list[float]:
    column = []
    for index, record in enumerate(records):
        if key not in record:
            raise ValueError(
                f"history[{index}] has no {key!r} (its keys: {', '.join(map(repr, record))})"
            )
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"history[{index}][{key!r}] must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"history[{index}][{key!r}] is {value}, not a finite number")
        column.append(float(value))
    return column


def training_curves(history: Sequence[Mapping], path: str | os.PathLike | None = None) -> Figure:
    """The loss per epoch.  For variational inference (records with ``"kl"``) two panels: the
    negative expected log-likelihood ``-E_q[log p(y | x, w)]`` and ``KL(q || p)``, separately,
    since the ELBO hides which of the two moves; otherwise one panel of the training loss.
    Curves whose values are all positive are drawn on a log scale.

    :param history: one record per epoch, in order: the :class:`~pyro_bnn.infer.EpochRecord`
        list of :func:`~pyro_bnn.infer.fit` (or their ``vars``, with ``"epoch"``, ``"data"``
        and ``"kl"``), or the ``{"epoch", "loss", ...}`` records of
        :func:`~pyro_bnn.baselines.train_deterministic`.
    :param path: also save the figure there (PNG unless the suffix names another format).
    :returns: the figure: two axes for variational inference, one otherwise.
    """
    path = _check_path(path)
    records = _records(history)
    epochs = _column(records, "epoch")
    if "kl" in records[0]:
        curves = [
            ([-value for value in _column(records, "data")], "negative expected log-likelihood"),
            (_column(records, "kl"), "KL(q || p)"),
        ]
        ylabel, fig = "nats", _figure(9, 3.4)
    else:
        curves = [(_column(records, "loss"), "training negative log-likelihood")]
        ylabel, fig = "nats per example", _figure(4.5, 3.4)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for index, (axis, (values, title)) in enumerate(zip(axes, curves, strict=True)):
        axis.plot(epochs, values, marker="o", color=f"C{index}")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(ylabel)
        if min(values) > 0:
            axis.set_yscale("log")
    return _finish(fig, path)
