"""
Uncertainty scores and out-of-distribution detection.

A classifier's predictive uncertainty gives a score per input: :func:`predictive_entropy` of
the posterior predictive (total uncertainty) or :func:`mutual_information` between the label and
the weights (epistemic uncertainty).  A detector flags an input as out of distribution when its
score is high; :func:`auroc`, :func:`aupr` and :func:`fpr_at_tpr` measure how well the scores of
in-distribution inputs (``in_scores``) and out-of-distribution inputs (``out_scores``) separate,
with out of distribution as the positive class and *higher scores meaning more likely out of
distribution* (Hendrycks and Gimpel, 2017).  Tied scores are handled exactly: a threshold never
separates equal scores.

D. Hendrycks and K. Gimpel, *A baseline for detecting misclassified and out-of-distribution
examples in neural networks*, ICLR 2017.
"""

from __future__ import annotations

import math

import torch

from .classification import _check_probabilities


def categorical_entropy(probs: torch.Tensor) -> torch.Tensor:
    """``-sum_c p_c log p_c`` along the last dimension, without checking ``probs`` (the
    prediction code's hot path; :func:`predictive_entropy` checks its input)."""
    # 0 log 0 = 0: a zero probability times the log of the smallest positive number is zero.
    return -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(-1)


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """
    Entropy of categorical distributions, in nats::

        H[p] = -sum_c p_c log p_c        (0 log 0 = 0)

    Applied to the posterior predictive ``p = E_w p(y | x, w)`` it is the total predictive
    uncertainty, between 0 and ``log C``.

    :param torch.Tensor probs: ``(N, C)`` class probabilities, each row summing to one; more
        generally ``(..., C)``.
    :returns: ``(N,)`` (generally ``(...)``) entropies, in the floating dtype of ``probs``.
    """
    if probs.dim() < 1 or probs.shape[-1] < 1:
        raise ValueError(f"probs must be (N, C) with C >= 1, got {tuple(probs.shape)}")
    _check_probabilities(probs)
    if not probs.is_floating_point():
        probs = probs.double()
    return categorical_entropy(probs)


def mutual_information(probs_samples: torch.Tensor) -> torch.Tensor:
    """
    Mutual information between the label and the weights, the epistemic part of the
    predictive entropy (Houlsby et al., 2011; Smith and Gal, 2018)::

        I(y; w | x) = H[ (1/S) sum_s p_s ] - (1/S) sum_s H[p_s]

    the entropy of the mean minus the mean entropy of the ``S`` posterior samples' predictions.
    It is zero when all samples agree and at most ``log min(S, C)``; it is clamped at zero
    against rounding.

    :param torch.Tensor probs_samples: ``(S, N, C)`` class probabilities under each posterior
        sample, each row summing to one.
    :returns: ``(N,)`` mutual information, nats, in the floating dtype of ``probs_samples``.

    N. Houlsby, F. Huszar, Z. Ghahramani and M. Lengyel, *Bayesian active learning for
    classification and preference learning*, arXiv:1112.5745, 2011.  L. Smith and Y. Gal,
    *Understanding measures of uncertainty for adversarial example detection*, UAI 2018.
    """
    if probs_samples.dim() != 3 or probs_samples.shape[-1] < 1 or len(probs_samples) < 1:
        raise ValueError(
            f"probs_samples must be (S, N, C) with S, C >= 1, got {tuple(probs_samples.shape)}"
        )
    _check_probabilities(probs_samples, "probs_samples")
    if not probs_samples.is_floating_point():
        probs_samples = probs_samples.double()
    expected_entropy = categorical_entropy(probs_samples).mean(0)
    return (categorical_entropy(probs_samples.mean(0)) - expected_entropy).clamp_min(0.0)


def _check_scores(in_scores, out_scores) -> tuple[torch.Tensor, torch.Tensor]:
    checked = []
    for name, scores in (("in_scores", in_scores), ("out_scores", out_scores)):
        scores = torch.as_tensor(scores, dtype=torch.float64)
        if scores.dim() != 1:
            raise ValueError(f"{name} must be one-dimensional (N,), got {tuple(scores.shape)}")
        if len(scores) == 0:
            raise ValueError(f"{name} holds no scores")
        if torch.isnan(scores).any():
            raise ValueError(f"{name} contains NaN")
        checked.append(scores)
    return checked[0], checked[1]


def auroc(in_scores, out_scores) -> float:
    """
    Area under the ROC curve of the detector "out of distribution if score >= threshold".

    It equals the Mann-Whitney U statistic over the number of pairs: the probability that an
    out-of-distribution example scores higher than an in-distribution one, ties counting
    half (Hanley and McNeil, 1982)::

        AUROC = (1 / (N_in N_out)) sum_{i, j} (1[out_j > in_i] + 0.5 * 1[out_j = in_i])

    0.5 is chance, 1 a perfect separation.  Computed exactly from integer pair counts.

    :param in_scores: ``(N_in,)`` scores of in-distribution examples (tensor or array).
    :param out_scores: ``(N_out,)`` scores of out-of-distribution examples.

    J. A. Hanley and B. J. McNeil, *The meaning and use of the area under a receiver
    operating characteristic (ROC) curve*, Radiology 143(1), 1982.
    """
    inside, outside = _check_scores(in_scores, out_scores)
    inside = inside.sort().values
    below = torch.searchsorted(inside, outside, right=False)  # in-scores < each out-score
    at_or_below = torch.searchsorted(inside, outside, right=True)  # in-scores <= it
    twice_u = (below + at_or_below).sum().item()
    return twice_u / (2 * len(inside) * len(outside))


def aupr(in_scores, out_scores) -> float:
    """
    Area under the precision-recall curve with out of distribution as the positive class, as
    average precision (the estimator of ``sklearn.metrics.average_precision_score``)::

        AP = sum_k (R_k - R_{k-1}) P_k

    over the distinct score values ``t_k`` taken as thresholds in decreasing order, where
    ``P_k`` and ``R_k`` are the precision and recall of flagging the scores ``>= t_k``
    (``R_0 = 0``).  No interpolation; tied scores enter together.  Chance level is the share
    of out-of-distribution examples, ``N_out / (N_in + N_out)``.

    :param in_scores: ``(N_in,)`` scores of in-distribution examples (tensor or array).
    :param out_scores: ``(N_out,)`` scores of out-of-distribution examples.
    """
    inside, outside = _check_scores(in_scores, out_scores)
    thresholds = torch.cat([inside, outside]).unique().flip(0)  # distinct, decreasing
    true_positives = len(outside) - torch.searchsorted(outside.sort().values, thresholds)
    false_positives = len(inside) - torch.searchsorted(inside.sort().values, thresholds)
    precision = true_positives.double() / (true_positives + false_positives)
    new_positives = torch.diff(true_positives, prepend=true_positives.new_zeros(1))
    return (new_positives * precision).sum().item() / len(outside)


def fpr_at_tpr(in_scores, out_scores, tpr: float = 0.95) -> float:
    """
    False positive rate at a true positive rate: the fraction of in-distribution examples
    flagged by the highest threshold that flags at least ``tpr`` of the out-of-distribution
    examples::

        t   = the k-th largest out-score, k = min{k : k / N_out >= tpr}
        FPR = (1/N_in) sum_i 1[in_i >= t]

    the first point of the ROC curve whose true positive rate reaches ``tpr``.  Lower is
    better; ``tpr=0.95`` gives the common "FPR at 95% TPR".

    :param in_scores: ``(N_in,)`` scores of in-distribution examples (tensor or array).
    :param out_scores: ``(N_out,)`` scores of out-of-distribution examples.
    :param float tpr: the true positive rate to reach, in ``(0, 1]``.
    """
    inside, outside = _check_scores(in_scores, out_scores)
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    num_out = len(outside)
    # The smallest k with k / N_out >= tpr, in the same floating-point arithmetic as the rate.
    k = max(1, math.ceil(tpr * num_out))
    while k > 1 and (k - 1) / num_out >= tpr:
        k -= 1
    while k < num_out and k / num_out < tpr:
        k += 1
    threshold = outside.sort(descending=True).values[k - 1]
    return (inside >= threshold).double().mean().item()


def detection_report(in_scores, out_scores, tpr: float = 0.95) -> dict[str, float]:
    """
    The three detection metrics at once.

    :param in_scores: ``(N_in,)`` scores of in-distribution examples (tensor or array).
    :param out_scores: ``(N_out,)`` scores of out-of-distribution examples.
    :param float tpr: the true positive rate of :func:`fpr_at_tpr`.
    :returns: ``{"auroc": ..., "aupr": ..., "fpr_at_tpr": ...}``.
    """
    return {
        "auroc": auroc(in_scores, out_scores),
        "aupr": aupr(in_scores, out_scores),
        "fpr_at_tpr": fpr_at_tpr(in_scores, out_scores, tpr=tpr),
    }
