import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from pyro_bnn.metrics import (
    gaussian_negative_log_likelihood,
    predictive_log_likelihood,
    root_mean_squared_error,
)

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def test_gaussian_nll_matches_scipy():
    mean, target = torch.randn(50), torch.randn(50)
    variance = torch.rand(50) + 0.1
    expected = -scipy.stats.norm.logpdf(target, mean, variance.sqrt()).mean()
    actual = gaussian_negative_log_likelihood(mean, variance, target)
    assert actual == pytest.approx(expected, rel=1e-6)
    # Several outputs per example: the mean over all entries.
    mean, target, variance = torch.randn(8, 3), torch.randn(8, 3), torch.rand(8, 3) + 0.5
    expected = -scipy.stats.norm.logpdf(target, mean, variance.sqrt()).mean()
    actual = gaussian_negative_log_likelihood(mean, variance, target)
    assert actual == pytest.approx(expected, rel=1e-6)


def test_gaussian_nll_by_hand():
    # N(0 | 0, 1): NLL = 0.5 log(2 pi).
    one = torch.ones(1)
    assert gaussian_negative_log_likelihood(0 * one, one, 0 * one) == pytest.approx(HALF_LOG_2PI)
    # N(2 | 0, 4): NLL = 0.5 (log(2 pi) + log 4 + 2^2 / 4) = 0.5 log(2 pi) + log 2 + 0.5.
    expected = HALF_LOG_2PI + math.log(2) + 0.5
    assert gaussian_negative_log_likelihood(0 * one, 4 * one, 2 * one) == pytest.approx(expected)


def test_root_mean_squared_error():
    mean, target = torch.randn(40), torch.randn(40)
    expected = np.sqrt(np.mean((mean.double().numpy() - target.double().numpy()) ** 2))
    assert root_mean_squared_error(mean, target) == pytest.approx(expected, rel=1e-6)
    # Errors 1 - 4 = -3 and 2 - (-2) = 4: sqrt((9 + 16) / 2) = sqrt(12.5).
    assert root_mean_squared_error(torch.tensor([1.0, 2.0]), torch.tensor([4.0, -2.0])) == (
        pytest.approx(math.sqrt(12.5))
    )
    assert root_mean_squared_error(target, target) == 0.0


def test_predictive_log_likelihood_by_hand():
    # Two samples predicting N(0, 1) and N(2, 1) for y = 1: both densities are
    # exp(-1/2) / sqrt(2 pi), so is their mean, and LL = -1/2 - 0.5 log(2 pi).
    means, variances = torch.tensor([[0.0], [2.0]]), torch.ones(2, 1)
    expected = -0.5 - HALF_LOG_2PI
    assert predictive_log_likelihood(means, variances, torch.tensor([1.0])) == pytest.approx(
        expected
    )
    # Two samples predicting N(0, 1) and N(0, 4) for y = 0: densities 1 / sqrt(2 pi) and
    # 1 / (2 sqrt(2 pi)), mean 0.75 / sqrt(2 pi), so LL = log 0.75 - 0.5 log(2 pi).
    means, variances = torch.zeros(2, 1), torch.tensor([[1.0], [4.0]])
    expected = math.log(0.75) - HALF_LOG_2PI
    assert predictive_log_likelihood(means, variances, torch.zeros(1)) == pytest.approx(expected)


def test_predictive_log_likelihood_matches_scipy():
    means = torch.randn(7, 60)
    variances = torch.rand(7, 60) + 0.05
    target = torch.randn(60)
    log_density = scipy.stats.norm.logpdf(
        target.double().numpy(), means.double().numpy(), variances.double().sqrt().numpy()
    )
    expected = (scipy.special.logsumexp(log_density, axis=0) - math.log(7)).mean()
    actual = predictive_log_likelihood(means, variances, target)
    assert actual == pytest.approx(expected, rel=1e-12)


def test_predictive_log_likelihood_does_not_underflow():
    # Targets 10 standard deviations of 0.01 away from every mean: each density,
    # exp(-0.5 * 10^2 / 10^-4) ~ exp(-5e5), underflows in float64, its log does not.
    means = torch.zeros(3, 2)
    variances = torch.full((3, 2), 1e-4, dtype=torch.float64)
    target = torch.full((2,), 10.0)
    expected = -(HALF_LOG_2PI + 0.5 * math.log(1e-4) + 0.5 * 100 / 1e-4)
    actual = predictive_log_likelihood(means, variances, target)
    assert math.isfinite(actual)
    assert actual == pytest.approx(expected, rel=1e-12)


def test_one_sample_is_the_gaussian_log_likelihood():
    means, variances, target = torch.randn(1, 30), torch.rand(1, 30) + 0.1, torch.randn(30)
    nll = gaussian_negative_log_likelihood(means[0], variances[0], target)
    assert predictive_log_likelihood(means, variances, target) == pytest.approx(-nll, rel=1e-12)


def test_target_scale_reports_in_original_units():
    # A model trained on y' = (y - loc) / scale predicts mean' and variance'; in the original
    # units the mean is loc + scale * mean' and the variance scale^2 * variance'.
    loc, scale = 3.0, 2.5
    means, variances = torch.randn(5, 40, dtype=torch.float64), torch.rand(5, 40) + 0.2
    target = torch.randn(40, dtype=torch.float64)
    original_means = loc + scale * means
    original_variances = scale**2 * variances.double()
    original_target = loc + scale * target

    expected = predictive_log_likelihood(original_means, original_variances, original_target)
    actual = predictive_log_likelihood(means, variances, target, target_scale=scale)
    assert actual == pytest.approx(expected, rel=1e-12)
    # The log-likelihood shifts by -log(scale).
    standardized = predictive_log_likelihood(means, variances, target)
    assert actual == pytest.approx(standardized - math.log(scale), rel=1e-12)

    mean, variance = means[0], variances[0]
    expected = gaussian_negative_log_likelihood(
        original_means[0], original_variances[0], original_target
    )
    actual = gaussian_negative_log_likelihood(mean, variance, target, target_scale=scale)
    assert actual == pytest.approx(expected, rel=1e-12)

    # RMSE multiplies by the scale.
    expected = root_mean_squared_error(original_means.mean(0), original_target)
    actual = root_mean_squared_error(means.mean(0), target, target_scale=scale)
    assert actual == pytest.approx(expected, rel=1e-12)
    assert actual == pytest.approx(scale * root_mean_squared_error(means.mean(0), target))
    # A 0-d tensor works as the scale too.
    tensor_scale = torch.tensor(scale)
    assert root_mean_squared_error(means.mean(0), target, target_scale=tensor_scale) == actual


def test_regression_metrics_reject_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        gaussian_negative_log_likelihood(torch.zeros(3), torch.ones(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="same shape"):
        gaussian_negative_log_likelihood(torch.zeros(3), torch.ones(2), torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        root_mean_squared_error(torch.zeros(3), torch.zeros(3, 1))


@pytest.mark.parametrize(
    "means, variances, target",
    [
        (torch.zeros(4), torch.ones(4), torch.zeros(4)),
        (torch.zeros(2, 4), torch.ones(2, 3), torch.zeros(4)),
        (torch.zeros(2, 4), torch.ones(2, 4), torch.zeros(3)),
        (torch.zeros(2, 4), torch.ones(2, 4), torch.zeros(2, 4)),
        (torch.zeros(2, 4, 1), torch.ones(2, 4, 1), torch.zeros(4, 1)),
    ],
)
def test_predictive_log_likelihood_rejects_bad_shapes(means, variances, target):
    with pytest.raises(ValueError, match=r"means and variances must be \(S, N\) and target"):
        predictive_log_likelihood(means, variances, target)


NAN = float("nan")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: root_mean_squared_error(torch.tensor([NAN]), torch.zeros(1)), "mean contains"),
        (lambda: root_mean_squared_error(torch.zeros(1), torch.tensor([NAN])), "target contains"),
        (lambda: root_mean_squared_error(torch.zeros(0), torch.zeros(0)), "mean holds no values"),
        (
            lambda: gaussian_negative_log_likelihood(
                torch.zeros(2), torch.tensor([1.0, NAN]), torch.zeros(2)
            ),
            "variance contains NaN",
        ),
        (
            lambda: gaussian_negative_log_likelihood(
                torch.zeros(2), torch.tensor([1.0, 0.0]), torch.zeros(2)
            ),
            "variance must be positive",
        ),
        (
            lambda: predictive_log_likelihood(
                torch.zeros(2, 2), torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.zeros(2)
            ),
            "variances must be positive",
        ),
        (
            lambda: predictive_log_likelihood(
                torch.tensor([[0.0, NAN]]), torch.ones(1, 2), torch.zeros(2)
            ),
            "means contains NaN",
        ),
        (
            lambda: predictive_log_likelihood(
                torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([0.0, float("inf")])
            ),
            "target contains NaN or infinite",
        ),
        (
            lambda: predictive_log_likelihood(torch.zeros(0, 2), torch.ones(0, 2), torch.zeros(2)),
            "means holds no values",
        ),
    ],
)
def test_regression_metrics_reject_bad_values(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("scale", [0.0, -1.0, NAN, float("inf"), "two", None])
def test_target_scale_must_be_positive_and_finite(scale):
    mean, variance, target = torch.zeros(3), torch.ones(3), torch.zeros(3)
    with pytest.raises(ValueError, match="target_scale must be"):
        root_mean_squared_error(mean, target, target_scale=scale)
    with pytest.raises(ValueError, match="target_scale must be"):
        gaussian_negative_log_likelihood(mean, variance, target, target_scale=scale)
    with pytest.raises(ValueError, match="target_scale must be"):
        predictive_log_likelihood(mean[None], variance[None], target, target_scale=scale)
