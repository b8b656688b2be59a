import math

import numpy as np
import pytest
import scipy.stats
import torch

from pyro_bnn.metrics import (
    accuracy,
    expected_calibration_error,
    gaussian_negative_log_likelihood,
    negative_log_likelihood,
    root_mean_squared_error,
)


def random_predictions(num_examples=500, num_classes=4, sharpness=3.0):
    probs = (sharpness * torch.randn(num_examples, num_classes)).softmax(-1)
    labels = torch.distributions.Categorical(probs=probs).sample()
    # Mislabel a fifth of the examples, so the predictions are over-confident.
    flip = torch.rand(num_examples) < 0.2
    labels[flip] = torch.randint(0, num_classes, (int(flip.sum()),))
    return probs, labels


def numpy_ece(probs, labels, num_bins):
    probs, labels = probs.double().numpy(), labels.numpy()
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    ece = 0.0
    for b in range(num_bins):
        lower, upper = edges[b], edges[b + 1]
        in_bin = (confidence > lower) & (confidence <= upper)
        if b == 0:
            in_bin |= confidence == 0
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            ece += in_bin.mean() * gap
    return ece


@pytest.mark.parametrize("num_bins", [1, 5, 15])
def test_ece_matches_numpy_loop(num_bins):
    probs, labels = random_predictions()
    expected = numpy_ece(probs, labels, num_bins)
    assert expected > 0.01
    if num_bins == 15:
        assert expected_calibration_error(probs, labels) == pytest.approx(expected, rel=1e-9)
    actual = expected_calibration_error(probs, labels, num_bins=num_bins)
    assert actual == pytest.approx(expected, rel=1e-9)


def test_ece_one_bin_is_the_gap_between_confidence_and_accuracy():
    probs, labels = random_predictions()
    gap = probs.max(-1).values.double().mean().item() - accuracy(probs, labels)
    assert expected_calibration_error(probs, labels, num_bins=1) == pytest.approx(abs(gap))


def test_perfectly_confident_and_right():
    labels = torch.tensor([2, 0, 1, 1, 0])
    probs = torch.nn.functional.one_hot(labels, 3).float()
    assert accuracy(probs, labels) == 1.0
    assert negative_log_likelihood(probs, labels) == 0.0
    assert expected_calibration_error(probs, labels) == 0.0


def test_perfectly_confident_and_wrong():
    labels = torch.tensor([2, 0, 1, 1])
    probs = torch.nn.functional.one_hot((labels + 1) % 3, 3).float()
    assert accuracy(probs, labels) == 0.0
    # Zero probability is clamped at 1e-12, so the NLL stays finite.
    assert negative_log_likelihood(probs, labels) == pytest.approx(-math.log(1e-12))
    assert expected_calibration_error(probs, labels) == pytest.approx(1.0)


def test_calibrated_within_a_bin():
    # Ten predictions with confidence 0.7, seven of them right: calibrated.
    probs = torch.tensor([[0.7, 0.2, 0.1]]).expand(10, 3)
    labels = torch.tensor([0] * 7 + [1, 2, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-6)
    assert accuracy(probs, labels) == pytest.approx(0.7)
    # Same predictions, five right: a gap of 0.2.
    labels = torch.tensor([0] * 5 + [1] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.2)


def test_accuracy_and_nll_match_numpy():
    probs, labels = random_predictions(num_examples=300, num_classes=5)
    p, y = probs.double().numpy(), labels.numpy()
    assert accuracy(probs, labels) == pytest.approx(np.mean(p.argmax(1) == y))
    picked = p[np.arange(len(y)), y]
    assert negative_log_likelihood(probs, labels) == pytest.approx(-np.log(picked).mean(), rel=1e-6)
    assert accuracy(torch.tensor([[0.2, 0.8], [0.6, 0.4]]), torch.tensor([1, 1])) == 0.5


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


def test_root_mean_squared_error():
    mean, target = torch.randn(40), torch.randn(40)
    expected = np.sqrt(np.mean((mean.double().numpy() - target.double().numpy()) ** 2))
    assert root_mean_squared_error(mean, target) == pytest.approx(expected, rel=1e-6)
    assert root_mean_squared_error(torch.tensor([1.0, 2.0]), torch.tensor([4.0, -2.0])) == (
        pytest.approx(math.sqrt(12.5))
    )
    assert root_mean_squared_error(target, target) == 0.0


@pytest.mark.parametrize("metric", [accuracy, negative_log_likelihood, expected_calibration_error])
@pytest.mark.parametrize(
    "probs, labels, match",
    [
        (torch.full((4,), 0.25), torch.tensor([0, 1, 2, 3]), "probs must be"),
        (torch.full((4, 2), 0.5), torch.tensor([0, 1, 1]), "probs must be"),
        (torch.full((4, 2), 0.5), torch.zeros(4, 1, dtype=torch.long), "probs must be"),
        (torch.full((3, 2), 0.5), torch.tensor([0, 2, 1]), r"labels must lie in 0\.\.1"),
        (torch.full((3, 2), 0.5), torch.tensor([0, -1, 1]), r"labels must lie in 0\.\.1"),
    ],
)
def test_classification_metrics_reject_bad_input(metric, probs, labels, match):
    with pytest.raises(ValueError, match=match):
        metric(probs, labels)


def test_ece_needs_a_bin():
    with pytest.raises(ValueError, match="num_bins must be positive"):
        expected_calibration_error(torch.full((2, 2), 0.5), torch.tensor([0, 1]), num_bins=0)


def test_regression_metrics_reject_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        gaussian_negative_log_likelihood(torch.zeros(3), torch.ones(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="same shape"):
        gaussian_negative_log_likelihood(torch.zeros(3), torch.ones(2), torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        root_mean_squared_error(torch.zeros(3), torch.zeros(3, 1))
