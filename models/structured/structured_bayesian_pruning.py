r"""Structured Bayesian pruning (Neklyudov et al., 2017; seed 004).

A dropout-like layer multiplies every input neuron of a linear layer (every output channel of a
convolution) by a noise :math:`\theta_g` with a truncated log-uniform prior and a truncated
log-normal posterior (seed 004, Eq. 4):

.. math::
    y = (x \odot \theta) W, \qquad p(\theta_g) = \mathrm{LogU}_{[a, b]}(\theta_g), \qquad
    q(\theta_g) = \mathrm{LogN}_{[a, b]}(\theta_g \mid \mu_g, \sigma_g^2),

with :math:`a, b` bounds on :math:`\log\theta`.  The weights are point estimates.  The noise is
drawn per example at the layer call; a group is pruned when its signal-to-noise ratio
:math:`\mathbb{E}\theta / \sqrt{\mathbb{V}\theta}` falls below the threshold (1 in the
paper's code).
"""

from __future__ import annotations

import math

import pyro
import torch

from pyro_bnn.distributions import LogUniform, TruncatedLogNormal
from pyro_bnn.ops import scale_groups

from .base import GroupPosterior, WeightPrior, group_view, posterior_of

#: The bounds of log theta in the SBP paper's experiments.
DEFAULT_LOG_BOUNDS = (-20.0, 0.0)

#: Signal-to-noise threshold: a group is kept while E theta / sqrt(V theta) > 1.
DEFAULT_SNR_THRESHOLD = 1.0


class StructuredBayesianPruning(WeightPrior):
    """Log-normal multiplicative noise per group with a truncated log-uniform prior; site
    ``{name}.noise`` (``(groups,)``, drawn per example) over the point-estimate weight
    ``<name>_unscaled``.

    :param log_bounds: ``(a, b)``, the interval of ``log theta``.
    """

    method = "sbp"
    deterministic_weight = True
    default_threshold = DEFAULT_SNR_THRESHOLD

    def __init__(self, log_bounds: tuple[float, float] = DEFAULT_LOG_BOUNDS):
        low, high = log_bounds
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"log_bounds must be finite with a < b, got {log_bounds!r}")
        self.log_bounds = (float(low), float(high))

    def sample(self, name, init, group_dim, unscaled):
        groups = unscaled.shape[group_dim]
        low, high = (torch.full((groups,), bound).to(unscaled).exp() for bound in self.log_bounds)
        noise = pyro.sample(
            f"{name}.noise",
            LogUniform(low, high).to_event(1),
            infer={"per_example": True, "init_value": high.clone()},
        )
        return scale_groups(unscaled, noise, group_dim)

    def summarize(self, guide, name, shape, group_dim, unscaled, threshold):
        noise = posterior_of(guide, f"{name}.noise", TruncatedLogNormal)
        snr = noise.signal_to_noise
        return GroupPosterior(
            mean=unscaled * group_view(noise.mean, shape, group_dim),
            variance=unscaled.square() * group_view(noise.variance, shape, group_dim),
            statistic=snr,
            keep=snr > threshold,
            group_dim=group_dim,
        )

    def check_threshold(self, threshold):
        if not (
            isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0
        ):
            raise ValueError(
                f"the SBP threshold is a signal-to-noise ratio >= 0, got {threshold!r}"
            )

    def __repr__(self) -> str:
        return f"StructuredBayesianPruning(log_bounds={self.log_bounds})"
