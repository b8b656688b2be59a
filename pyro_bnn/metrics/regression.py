r"""
Quality of a Gaussian regression model's predictions: root mean squared error, Gaussian
negative log-likelihood, and the posterior predictive log-likelihood of the UCI benchmark
protocol.

**Standardized targets.**  Regression networks are usually trained on standardized targets
``y' = (y - loc) / scale``, and their predictions ``(mean', variance')`` are in those units.
The metrics in the original units follow from the affine map ``y = loc + scale * y'``, under
which ``mean = loc + scale * mean'`` and ``variance = scale^2 * variance'``: the shift ``loc``
cancels, and::

    RMSE(y)              = scale * RMSE(y')
    log N(y | mean, var) = log N(y' | mean', var') - log(scale)

Every metric here takes ``target_scale=scale`` and inputs in standardized units, and reports in
the original units; the default ``target_scale=1`` leaves the inputs' units.
"""

from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2 * math.pi)


def _check_scale(target_scale: float) -> float:
    try:
        scale = float(target_scale)
    except (TypeError, ValueError):
        raise ValueError(f"target_scale must be a positive number, got {target_scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"target_scale must be positive and finite, got {scale}")
    return scale


def _check_values(positive: str | None = None, **tensors: torch.Tensor) -> None:
    """Raise ValueError if a tensor is empty or not finite, or the one named ``positive`` has
    an entry that is not positive."""
    for name, tensor in tensors.items():
        if tensor.numel() == 0:
            raise ValueError(f"{name} holds no values")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if positive is not None and (tensors[positive] <= 0).any():
        raise ValueError(f"{positive} must be positive")


def _gaussian_log_density(
    mean: torch.Tensor, variance: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Elementwise ``log N(target | mean, variance)`` in float64."""
    variance = variance.double()
    squared = (target.double() - mean.double()).square()
    return -0.5 * (_LOG_2PI + variance.log() + squared / variance)


def root_mean_squared_error(
    mean: torch.Tensor, target: torch.Tensor, target_scale: float = 1.0
) -> float:
    """
    Root mean squared error over all entries::

        RMSE = scale * sqrt( (1/N) sum_n (y_n - mean_n)^2 )

    :param torch.Tensor mean: predictive means, any shape.
    :param torch.Tensor target: targets, the shape of ``mean``.
    :param float target_scale: ``scale`` of standardized targets (see the module docstring);
        1 keeps the units of the inputs.
    """
    if mean.shape != target.shape:
        raise ValueError(
            f"mean and target must have the same shape, got {tuple(mean.shape)} and "
            f"{tuple(target.shape)}"
        )
    scale = _check_scale(target_scale)
    _check_values(mean=mean, target=target)
    return scale * (mean.double() - target.double()).square().mean().sqrt().item()


def gaussian_negative_log_likelihood(
    mean: torch.Tensor, variance: torch.Tensor, target: torch.Tensor, target_scale: float = 1.0
) -> float:
    """
    Mean negative log density of the targets under one Gaussian per entry, in nats::

        NLL = (1/N) sum_n 0.5 [log(2 pi var_n) + (y_n - mean_n)^2 / var_n] + log(scale)

    For the predictive of several posterior samples, which is a mixture of Gaussians, use
    :func:`predictive_log_likelihood` instead.

    :param torch.Tensor mean: predictive means, any shape.
    :param torch.Tensor variance: predictive variances, positive, the shape of ``mean``.
    :param torch.Tensor target: targets, the shape of ``mean``.
    :param float target_scale: ``scale`` of standardized targets (see the module docstring);
        1 keeps the units of the inputs.
    """
    if not (mean.shape == variance.shape == target.shape):
        raise ValueError(
            f"mean, variance and target must have the same shape, got {tuple(mean.shape)}, "
            f"{tuple(variance.shape)} and {tuple(target.shape)}"
        )
    scale = _check_scale(target_scale)
    _check_values("variance", mean=mean, variance=variance, target=target)
    log_density = _gaussian_log_density(mean, variance, target)
    return -log_density.mean().item() + math.log(scale)


def predictive_log_likelihood(
    means: torch.Tensor, variances: torch.Tensor, target: torch.Tensor, target_scale: float = 1.0
) -> float:
    """
    Test log-likelihood of the posterior predictive, the UCI benchmark protocol's metric
    (Hernandez-Lobato and Adams, 2015; Gal and Ghahramani, 2016).  Posterior sample ``s``
    predicts ``N(mean_sn, var_sn)`` for target ``n``; the predictive is their equal-weight
    mixture, and the metric is its mean log density::

        LL = (1/N) sum_n log( (1/S) sum_s N(y_n | mean_sn, var_sn) ) - log(scale)

    computed in float64 as ``logsumexp_s(log N(...)) - log S``, so that no density underflows.
    With ``S = 1`` it is ``-gaussian_negative_log_likelihood``.  Higher is better.

    :param torch.Tensor means: ``(S, N)`` the mean under each posterior sample (``S`` may be 1).
    :param torch.Tensor variances: ``(S, N)`` the noise variance under each sample, positive.
    :param torch.Tensor target: ``(N,)`` targets.
    :param float target_scale: ``scale`` of standardized targets (see the module docstring);
        1 keeps the units of the inputs.

    J. M. Hernandez-Lobato and R. P. Adams, *Probabilistic backpropagation for scalable
    learning of Bayesian neural networks*, ICML 2015.  Y. Gal and Z. Ghahramani, *Dropout as a
    Bayesian approximation: representing model uncertainty in deep learning*, ICML 2016.
    """
    if means.dim() != 2 or variances.shape != means.shape or target.shape != means.shape[1:]:
        raise ValueError(
            f"means and variances must be (S, N) and target (N,), got {tuple(means.shape)}, "
            f"{tuple(variances.shape)} and {tuple(target.shape)}"
        )
    scale = _check_scale(target_scale)
    _check_values("variances", means=means, variances=variances, target=target)
    log_density = _gaussian_log_density(means, variances, target)
    log_mixture = torch.logsumexp(log_density, dim=0) - math.log(len(means))
    return log_mixture.mean().item() - math.log(scale)
