"""
Quality of a classifier's predictive distribution: accuracy, log-likelihood, Brier score and
calibration.

Every metric takes class probabilities ``probs`` of shape ``(N, C)`` (for a Bayesian model, the
posterior predictive, i.e. the mean over posterior samples) and integer labels of shape
``(N,)`` in ``0..C-1``, and returns a Python float.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from pyro_bnn.util import positive_integer

BINNINGS = ("equal_width", "adaptive")
"""The ways :func:`reliability_curve` can bin the confidences."""

# Rows of float32 softmax outputs sum to one within a few units in the last place; a larger
# gap means the input is not a distribution (logits, unnormalized scores, a wrong axis).
_SUM_TOLERANCE = 1e-3


def _check_probabilities(probs: torch.Tensor, name: str = "probs") -> None:
    """Raise ValueError unless ``probs`` holds distributions over its last dimension."""
    if torch.isnan(probs).any():
        raise ValueError(f"{name} contains NaN")
    if (probs < 0).any() or (probs > 1).any():
        raise ValueError(f"{name} must lie in [0, 1]")
    sums = probs.double().sum(-1).flatten()
    if sums.numel() == 0:
        return
    worst = (sums - 1).abs().argmax()
    if (sums[worst] - 1).abs() > _SUM_TOLERANCE:
        raise ValueError(
            f"{name} must sum to one over the classes (the last dimension), but a row sums to "
            f"{sums[worst].item():.6g}"
        )


def _check(probs: torch.Tensor, labels: torch.Tensor, probabilities: bool = True) -> None:
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"probs must be (N, C) and labels (N,), got {tuple(probs.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if len(labels) == 0:
        raise ValueError("probs and labels hold no examples")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}")
    if probabilities:
        _check_probabilities(probs)
    elif torch.isnan(probs).any():
        raise ValueError("probs contains NaN")


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """
    Fraction of examples whose most probable class is the label::

        accuracy = (1/N) sum_n 1[argmax_c p_nc = y_n]

    Only the ranking of the classes matters, so ``probs`` may also be logits or any other
    scores; ties go to the first of the tied classes (``torch.argmax``).

    :param torch.Tensor probs: ``(N, C)`` class probabilities or scores.
    :param torch.Tensor labels: ``(N,)`` integer labels in ``0..C-1``.
    """
    _check(probs, labels, probabilities=False)
    return (probs.argmax(-1) == labels).double().mean().item()


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """
    Mean negative log probability of the labels, in nats::

        NLL = -(1/N) sum_n log p_{n, y_n}

    Probabilities are clamped at ``1e-12`` so that a confident mistake costs
    ``-log(1e-12) ~ 27.6`` nats instead of infinity.

    :param torch.Tensor probs: ``(N, C)`` class probabilities, each row summing to one.
    :param torch.Tensor labels: ``(N,)`` integer labels in ``0..C-1``.
    """
    _check(probs, labels)
    picked = probs.gather(1, labels[:, None].long()).squeeze(1).double()
    return -picked.clamp_min(1e-12).log().mean().item()


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """
    The Brier score (Brier, 1950), the mean squared distance between the predicted
    distribution and the one-hot label::

        BS = (1/N) sum_n sum_c (p_nc - 1[y_n = c])^2,

    between 0 (certain and right) and 2 (certain and wrong).  It is a proper scoring rule.  For
    two classes it is twice the binary form ``(1/N) sum_n (p_n1 - y_n)^2``.

    :param torch.Tensor probs: ``(N, C)`` class probabilities, each row summing to one.
    :param torch.Tensor labels: ``(N,)`` integer labels in ``0..C-1``.

    G. W. Brier, *Verification of forecasts expressed in terms of probability*, Monthly
    Weather Review 78(1), 1950.
    """
    _check(probs, labels)
    one_hot = torch.nn.functional.one_hot(labels.long(), probs.shape[1]).double()
    return (probs.double() - one_hot).square().sum(-1).mean().item()


class ReliabilityCurve(NamedTuple):
    """Accuracy against confidence, per bin of :func:`reliability_curve`.

    Empty bins have a count of zero and NaN confidence and accuracy (plots skip them).
    """

    confidence: torch.Tensor  #: (num_bins,) float64 mean confidence of the bin's examples
    accuracy: torch.Tensor  #: (num_bins,) float64 fraction of them classified correctly
    counts: torch.Tensor  #: (num_bins,) int64 number of examples in the bin


def reliability_curve(
    probs: torch.Tensor,
    labels: torch.Tensor,
    num_bins: int = 15,
    binning: str = "equal_width",
) -> ReliabilityCurve:
    """
    Bin the examples by confidence (their largest class probability) and report each bin's mean
    confidence, accuracy and size: the data of a reliability diagram.  A calibrated classifier
    has ``accuracy = confidence`` in every bin.

    Binnings:

    - ``"equal_width"``: bin ``b`` holds the confidences in ``(b/B, (b+1)/B]``, the first bin
      also confidence 0 (Guo et al., 2017).  Confidence is at least ``1/C``, so the lower bins
      of a ``C``-class problem stay empty.
    - ``"adaptive"``: equal-mass bins (Nguyen and O'Connor, 2015; Nixon et al., 2019).  The
      examples are sorted by confidence (a stable sort, so ties keep their order) and the
      ``i``-th of them goes to bin ``floor(i B / N)``: bins hold ``floor(N/B)`` or
      ``ceil(N/B)`` examples, and some are empty when ``B > N``.  Tied confidences may fall on
      both sides of a bin boundary.

    :param torch.Tensor probs: ``(N, C)`` class probabilities, each row summing to one.
    :param torch.Tensor labels: ``(N,)`` integer labels in ``0..C-1``.
    :param int num_bins: the number of bins ``B``, at least 1.
    :param str binning: ``"equal_width"`` or ``"adaptive"``.
    :returns: the per-bin ``confidence``, ``accuracy`` and ``counts``, each of shape ``(B,)``.

    C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger, *On calibration of modern neural
    networks*, ICML 2017.  K. Nguyen and B. O'Connor, *Posterior calibration and exploratory
    analysis for natural language processing models*, EMNLP 2015.  J. Nixon, M. Dusenberry,
    L. Zhang, G. Jerfel and D. Tran, *Measuring calibration in deep learning*, CVPR
    Workshops 2019.
    """
    _check(probs, labels)
    num_bins = positive_integer("num_bins", num_bins)
    if binning not in BINNINGS:
        raise ValueError(f"unknown binning {binning!r}; use one of {', '.join(BINNINGS)}")
    confidence, predicted = probs.double().max(-1)
    correct = (predicted == labels).double()
    num_examples = len(labels)
    if binning == "equal_width":
        bins = (confidence * num_bins).ceil().long().clamp(1, num_bins) - 1
    else:
        order = confidence.argsort(stable=True)
        bins = torch.empty_like(order)
        bins[order] = torch.arange(num_examples, device=order.device) * num_bins // num_examples
    counts = torch.bincount(bins, minlength=num_bins)
    zeros = confidence.new_zeros(num_bins)
    confidence_sum = zeros.index_add(0, bins, confidence)
    correct_sum = zeros.index_add(0, bins, correct)
    occupied = counts > 0
    nan = confidence.new_tensor(float("nan"))
    return ReliabilityCurve(
        confidence=torch.where(occupied, confidence_sum / counts.clamp_min(1), nan),
        accuracy=torch.where(occupied, correct_sum / counts.clamp_min(1), nan),
        counts=counts,
    )


def expected_calibration_error(
    probs: torch.Tensor,
    labels: torch.Tensor,
    num_bins: int = 15,
    binning: str = "equal_width",
) -> float:
    """
    Expected calibration error, from the bins of :func:`reliability_curve`::

        ECE = sum_b (|B_b| / N) |accuracy(B_b) - confidence(B_b)|

    where the confidence of an example is its largest class probability.  With
    ``binning="equal_width"`` this is the ECE of Guo et al. (2017); with ``"adaptive"`` the
    bins hold equal numbers of examples (the adaptive calibration error of Nixon et al., 2019,
    restricted to the top class).

    :param torch.Tensor probs: ``(N, C)`` class probabilities, each row summing to one.
    :param torch.Tensor labels: ``(N,)`` integer labels in ``0..C-1``.
    :param int num_bins: the number of bins, at least 1.
    :param str binning: ``"equal_width"`` or ``"adaptive"``.
    """
    curve = reliability_curve(probs, labels, num_bins=num_bins, binning=binning)
    occupied = curve.counts > 0
    gaps = (curve.accuracy[occupied] - curve.confidence[occupied]).abs()
    weights = curve.counts[occupied].double() / len(labels)
    return (weights * gaps).sum().item()


def classification_report(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``{"error", "accuracy", "nll", "ece"}``: the scores every classifier's evaluation
    reports (:func:`accuracy`, :func:`negative_log_likelihood`, equal-width
    :func:`expected_calibration_error` with 15 bins)."""
    correct = accuracy(probs, labels)
    return {
        "error": 1.0 - correct,
        "accuracy": correct,
        "nll": negative_log_likelihood(probs, labels),
        "ece": expected_calibration_error(probs, labels),
    }
