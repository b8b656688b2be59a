"""Quality of predictive distributions: accuracy, log-likelihood and calibration."""

from __future__ import annotations

import math

import torch


def _check(probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"probs must be (N, C) and labels (N,), got {tuple(probs.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}")


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of examples whose most probable class is the label."""
    _check(probs, labels)
    return (probs.argmax(-1) == labels).double().mean().item()


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean ``-log p(label)`` in nats (probabilities clamped at 1e-12 to stay finite)."""
    _check(probs, labels)
    picked = probs.gather(1, labels[:, None]).squeeze(1).double()
    return -picked.clamp_min(1e-12).log().mean().item()


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, num_bins: int = 15
) -> float:
    """ECE with equal-width confidence bins (Guo et al., 2017)::

        ECE = sum_b (|B_b| / N) |accuracy(B_b) - confidence(B_b)|

    where the confidence of an example is its largest class probability.
    """
    _check(probs, labels)
    if num_bins < 1:
        raise ValueError(f"num_bins must be positive, got {num_bins}")
    confidence, predicted = probs.double().max(-1)
    correct = (predicted == labels).double()
    bins = (confidence * num_bins).ceil().long().clamp(1, num_bins) - 1
    hits = torch.zeros(num_bins, dtype=torch.double).index_add_(0, bins, correct)
    conf = torch.zeros(num_bins, dtype=torch.double).index_add_(0, bins, confidence)
    return ((hits - conf).abs().sum() / max(len(labels), 1)).item()


def gaussian_negative_log_likelihood(
    mean: torch.Tensor, variance: torch.Tensor, target: torch.Tensor
) -> float:
    """Mean negative log density of ``target`` under ``Normal(mean, variance)``, nats."""
    if not (mean.shape == variance.shape == target.shape):
        raise ValueError("mean, variance and target must have the same shape")
    variance = variance.double()
    nll = 0.5 * (math.log(2 * math.pi) + variance.log() + (target - mean).double() ** 2 / variance)
    return nll.mean().item()


def root_mean_squared_error(mean: torch.Tensor, target: torch.Tensor) -> float:
    if mean.shape != target.shape:
        raise ValueError("mean and target must have the same shape")
    return (mean - target).double().square().mean().sqrt().item()
