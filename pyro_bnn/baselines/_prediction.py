"""The common prediction layout of the baselines.

Every baseline returns the dataclasses of :func:`pyro_bnn.predict`, so evaluation code treats a
baseline and a variational posterior alike: a
:class:`~pyro_bnn.infer.ClassificationPrediction` whose ``probs_samples`` are ``(S, N, C)``
class probabilities, or a :class:`~pyro_bnn.infer.RegressionPrediction` whose ``mean_samples``
and ``variance_samples`` are ``(S, N)`` each, ``S`` being the baseline's samples (dropout
masks, ensemble members, Laplace draws; 1 for the deterministic network).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pyro_bnn.infer import ClassificationPrediction, RegressionPrediction

from ._checks import check_inputs, check_positive_int, check_targets


def classification_prediction(
    probs_samples: torch.Tensor, y: torch.Tensor | None = None
) -> ClassificationPrediction:
    """The predictive of ``(S, N, C)`` per-sample class probabilities, with the split of its
    entropy into expected entropy and mutual information, and ``log p(y_i | sample s)`` of
    shape ``(S, N)`` when labels ``y`` are given."""
    log_likelihood = None
    if y is not None:
        if len(y) and y.max() >= probs_samples.shape[-1]:
            raise ValueError(
                f"label {y.max().item()} is out of range for {probs_samples.shape[-1]} classes"
            )
        index = y.long().reshape(1, -1, 1).expand(len(probs_samples), -1, 1)
        picked = probs_samples.gather(-1, index).squeeze(-1)
        log_likelihood = picked.clamp_min(torch.finfo(picked.dtype).tiny).log()
    return ClassificationPrediction.from_samples(probs_samples, log_likelihood)


def regression_prediction(
    mean_samples: torch.Tensor,
    variance_samples: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    mean: torch.Tensor | None = None,
    epistemic_variance: torch.Tensor | None = None,
) -> RegressionPrediction:
    """The predictive of ``(S, N)`` per-sample means and noise variances (by the law of total
    variance: the spread of the means plus the mean noise variance).

    ``mean`` and ``epistemic_variance`` replace the sample estimates where a baseline knows them
    exactly (the last-layer Laplace approximation of a regression network).
    """
    log_likelihood = None
    if y is not None:
        y = y.to(mean_samples)
        log_likelihood = -0.5 * (
            math.log(2 * math.pi)
            + variance_samples.log()
            + (y - mean_samples).square() / variance_samples
        )
    return RegressionPrediction.from_samples(
        mean_samples,
        variance_samples,
        log_likelihood,
        mean=mean,
        epistemic_variance=epistemic_variance,
    )


def check_prediction_arguments(task: str, x, y, batch_size, num_samples=1) -> None:
    """The checks every ``predict_*`` function makes before it runs a network."""
    check_inputs(x)
    if y is not None:
        check_targets(y, task, len(x))
    check_positive_int("batch_size", batch_size)
    check_positive_int("num_samples", num_samples)


def in_chunks(fn: Callable[[torch.Tensor], tuple], x: torch.Tensor, batch_size: int) -> tuple:
    """``fn`` on consecutive chunks of ``batch_size`` inputs; each of its outputs is an
    ``(S, chunk, ...)`` tensor, concatenated along the input dimension."""
    parts = [fn(x[start : start + batch_size]) for start in range(0, len(x), batch_size)]
    return tuple(torch.cat(pieces, dim=1) for pieces in zip(*parts, strict=True))
