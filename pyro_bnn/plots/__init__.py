"""
Figures of training, compression, calibration, uncertainty and regression, drawn with
matplotlib's object-oriented API (no pyplot state, no display needed).

Every plot checks its inputs before drawing (``ValueError`` naming the argument), returns its
:class:`matplotlib.figure.Figure` (a notebook shows it, a script saves it) and, given ``path``,
also saves it there atomically (PNG unless the suffix names another format).

* :mod:`~pyro_bnn.plots.training`: :func:`training_curves`, the loss per epoch (expected
  log-likelihood and KL separately for variational inference).
* :mod:`~pyro_bnn.plots.compression`: :func:`log_alpha_histogram` and
  :func:`signal_to_noise_histogram` (per-weight pruning statistics with the threshold),
  :func:`weight_masks` (the kept weights), :func:`group_statistics` (a structured method's
  per-group statistic, kept and removed) and :func:`pruned_architecture` (groups and bits per
  layer).
* :mod:`~pyro_bnn.plots.calibration`: :func:`reliability_diagram`, accuracy against
  confidence with the ECE, for one model or several.
* :mod:`~pyro_bnn.plots.uncertainty`: :func:`entropy_histograms`, an uncertainty score in and
  out of distribution (histograms and CDFs) with the AUROC, for one method or several.
* :mod:`~pyro_bnn.plots.regression`: :func:`predictive_bands`, a one-dimensional posterior
  predictive mean with nested bands, the training data and the true function.
* :mod:`~pyro_bnn.plots.arviz`: :func:`arviz_plot`, ArviZ's own plots (``arviz-plots``) as
  matplotlib figures.
"""

from .arviz import arviz_plot
from .calibration import reliability_diagram
from .compression import (
    group_statistics,
    log_alpha_histogram,
    pruned_architecture,
    signal_to_noise_histogram,
    weight_masks,
)
from .regression import predictive_bands
from .training import training_curves
from .uncertainty import entropy_histograms

__all__ = [
    "arviz_plot",
    "entropy_histograms",
    "group_statistics",
    "log_alpha_histogram",
    "predictive_bands",
    "pruned_architecture",
    "reliability_diagram",
    "signal_to_noise_histogram",
    "training_curves",
    "weight_masks",
]
