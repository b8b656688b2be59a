import math

import numpy as np
import pytest
import sklearn.metrics
import torch

from pyro_bnn.metrics import (
    ReliabilityCurve,
    accuracy,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_curve,
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


# Four binary predictions of class 0 with confidences 0.6, 0.7, 0.8, 0.9; the second is wrong.
HAND_PROBS = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]], dtype=torch.float64)
HAND_LABELS = torch.tensor([0, 1, 0, 0])


@pytest.mark.parametrize("num_bins", [1, 5, 15])
def test_ece_matches_numpy_loop(num_bins):
    probs, labels = random_predictions()
    expected = numpy_ece(probs, labels, num_bins)
    assert expected > 0.01
    if num_bins == 15:
        assert expected_calibration_error(probs, labels) == pytest.approx(expected, rel=1e-9)
    actual = expected_calibration_error(probs, labels, num_bins=num_bins)
    assert actual == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("binning", ["equal_width", "adaptive"])
def test_ece_one_bin_is_the_gap_between_confidence_and_accuracy(binning):
    probs, labels = random_predictions()
    gap = probs.max(-1).values.double().mean().item() - accuracy(probs, labels)
    ece = expected_calibration_error(probs, labels, num_bins=1, binning=binning)
    assert ece == pytest.approx(abs(gap))


def test_ece_equal_width_and_adaptive_by_hand():
    # Equal width, 2 bins (0, 0.5] and (0.5, 1]: all four fall in the second bin, with mean
    # confidence (0.6 + 0.7 + 0.8 + 0.9) / 4 = 0.75 and accuracy 3/4 = 0.75: ECE = 0.
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS, num_bins=2) == pytest.approx(0.0)
    # Adaptive, 2 bins of 2: {0.6, 0.7} has confidence 0.65 and accuracy 1/2, a gap of 0.15;
    # {0.8, 0.9} has confidence 0.85 and accuracy 1, a gap of 0.15.
    # ECE = 2/4 * 0.15 + 2/4 * 0.15 = 0.15.
    ece = expected_calibration_error(HAND_PROBS, HAND_LABELS, num_bins=2, binning="adaptive")
    assert ece == pytest.approx(0.15)


def test_reliability_curve_by_hand():
    curve = reliability_curve(HAND_PROBS, HAND_LABELS, num_bins=2)
    assert isinstance(curve, ReliabilityCurve)
    assert curve.counts.tolist() == [0, 4]
    assert curve.counts.dtype == torch.int64
    assert math.isnan(curve.confidence[0]) and math.isnan(curve.accuracy[0])
    assert curve.confidence[1].item() == pytest.approx(0.75)
    assert curve.accuracy[1].item() == pytest.approx(0.75)

    confidence, accuracy_per_bin, counts = reliability_curve(
        HAND_PROBS, HAND_LABELS, num_bins=2, binning="adaptive"
    )
    assert counts.tolist() == [2, 2]
    assert confidence.tolist() == pytest.approx([0.65, 0.85])
    assert accuracy_per_bin.tolist() == pytest.approx([0.5, 1.0])


def test_adaptive_bins_of_nearly_equal_mass():
    # Five examples in two bins: sorted position i goes to bin floor(2 i / 5) = 0, 0, 0, 1, 1.
    probs = torch.tensor([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3], [0.95, 0.05], [0.6, 0.4]])
    labels = torch.zeros(5, dtype=torch.long)
    curve = reliability_curve(probs, labels, num_bins=2, binning="adaptive")
    assert curve.counts.tolist() == [3, 2]
    # The three least confident, 0.55, 0.6 and 0.7, then 0.9 and 0.95.
    assert curve.confidence.tolist() == pytest.approx([(0.55 + 0.6 + 0.7) / 3, (0.9 + 0.95) / 2])
    # More bins than examples: positions 0 and 1 of 2 go to bins floor(4 * 0 / 2) = 0 and
    # floor(4 * 1 / 2) = 2, leaving bins 1 and 3 empty.
    curve = reliability_curve(probs[:2], labels[:2], num_bins=4, binning="adaptive")
    assert curve.counts.tolist() == [1, 0, 1, 0]
    assert curve.confidence[[0, 2]].tolist() == pytest.approx([0.55, 0.9])
    assert torch.isnan(curve.accuracy[[1, 3]]).all()


@pytest.mark.parametrize("binning", ["equal_width", "adaptive"])
@pytest.mark.parametrize("num_bins", [3, 10, 15])
def test_reliability_curve_accounts_for_every_example(binning, num_bins):
    probs, labels = random_predictions(num_examples=301)
    curve = reliability_curve(probs, labels, num_bins=num_bins, binning=binning)
    occupied = curve.counts > 0
    counts = curve.counts[occupied].double()
    confidence = probs.double().max(-1).values
    assert curve.counts.sum().item() == 301
    assert (counts * curve.confidence[occupied]).sum().item() == pytest.approx(
        confidence.sum().item()
    )
    assert (counts * curve.accuracy[occupied]).sum().item() == pytest.approx(
        301 * accuracy(probs, labels)
    )
    # Bins are ordered by confidence.
    means = curve.confidence[occupied]
    assert (means[1:] >= means[:-1]).all()
    if binning == "adaptive":
        assert set(curve.counts.tolist()) <= {301 // num_bins, -(-301 // num_bins)}
    # The ECE is the weighted gap of the curve.
    weights = counts / 301
    gaps = (curve.accuracy[occupied] - curve.confidence[occupied]).abs()
    ece = expected_calibration_error(probs, labels, num_bins=num_bins, binning=binning)
    assert ece == pytest.approx((weights * gaps).sum().item(), rel=1e-12)


def test_perfectly_confident_and_right():
    labels = torch.tensor([2, 0, 1, 1, 0])
    probs = torch.nn.functional.one_hot(labels, 3).float()
    assert accuracy(probs, labels) == 1.0
    assert negative_log_likelihood(probs, labels) == 0.0
    assert brier_score(probs, labels) == 0.0
    assert expected_calibration_error(probs, labels) == 0.0
    assert expected_calibration_error(probs, labels, binning="adaptive") == 0.0


def test_perfectly_confident_and_wrong():
    labels = torch.tensor([2, 0, 1, 1])
    probs = torch.nn.functional.one_hot((labels + 1) % 3, 3).float()
    assert accuracy(probs, labels) == 0.0
    # Zero probability is clamped at 1e-12, so the NLL stays finite.
    assert negative_log_likelihood(probs, labels) == pytest.approx(-math.log(1e-12))
    # Each example: (1 - 0)^2 for the predicted class plus (0 - 1)^2 for the label.
    assert brier_score(probs, labels) == 2.0
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


def test_nll_and_brier_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 1])
    # NLL = -(log 0.7 + log 0.5) / 2.
    expected = -(math.log(0.7) + math.log(0.5)) / 2
    assert negative_log_likelihood(probs, labels) == pytest.approx(expected)
    # First row: (0.7 - 1)^2 + 0.2^2 + 0.1^2 = 0.09 + 0.04 + 0.01 = 0.14.
    # Second row: 0.5^2 + (0.5 - 1)^2 + 0^2 = 0.25 + 0.25 = 0.5.  Mean (0.14 + 0.5) / 2 = 0.32.
    assert brier_score(probs, labels) == pytest.approx(0.32)


def test_accuracy_and_nll_match_numpy():
    probs, labels = random_predictions(num_examples=300, num_classes=5)
    p, y = probs.double().numpy(), labels.numpy()
    assert accuracy(probs, labels) == pytest.approx(np.mean(p.argmax(1) == y))
    picked = p[np.arange(len(y)), y]
    assert negative_log_likelihood(probs, labels) == pytest.approx(-np.log(picked).mean(), rel=1e-6)
    assert accuracy(torch.tensor([[0.2, 0.8], [0.6, 0.4]]), torch.tensor([1, 1])) == 0.5


def test_accuracy_takes_logits():
    logits = 3 * torch.randn(50, 4)
    labels = torch.randint(0, 4, (50,))
    assert accuracy(logits, labels) == accuracy(logits.softmax(-1), labels)


def test_brier_score_matches_scikit_learn():
    # Binary: scikit-learn's default form (p_1 - y)^2 is half of the sum over both classes.
    # Rows renormalized in float64: scikit-learn warns about float32 rounding.
    probs, labels = random_predictions(num_examples=200, num_classes=2)
    probs = probs.double() / probs.double().sum(-1, keepdim=True)
    p, y = probs.numpy(), labels.numpy()
    binary = sklearn.metrics.brier_score_loss(y, p[:, 1])
    assert brier_score(probs, labels) == pytest.approx(2 * binary, rel=1e-6)
    # Multiclass, unscaled.
    probs, labels = random_predictions(num_examples=200, num_classes=4)
    probs = probs.double() / probs.double().sum(-1, keepdim=True)
    p, y = probs.numpy(), labels.numpy()
    expected = sklearn.metrics.brier_score_loss(y, p, labels=[0, 1, 2, 3], scale_by_half=False)
    assert brier_score(probs, labels) == pytest.approx(expected, rel=1e-6)


CLASSIFICATION_METRICS = [
    accuracy,
    negative_log_likelihood,
    brier_score,
    expected_calibration_error,
    reliability_curve,
]


@pytest.mark.parametrize("metric", CLASSIFICATION_METRICS)
@pytest.mark.parametrize(
    "probs, labels, match",
    [
        (torch.full((4,), 0.25), torch.tensor([0, 1, 2, 3]), "probs must be"),
        (torch.full((4, 2), 0.5), torch.tensor([0, 1, 1]), "probs must be"),
        (torch.full((4, 2), 0.5), torch.zeros(4, 1, dtype=torch.long), "probs must be"),
        (torch.full((3, 2), 0.5), torch.tensor([0, 2, 1]), r"labels must lie in 0\.\.1"),
        (torch.full((3, 2), 0.5), torch.tensor([0, -1, 1]), r"labels must lie in 0\.\.1"),
        (torch.full((2, 2), 0.5), torch.tensor([0.0, 1.0]), "labels must be integers"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), "no examples"),
        (torch.tensor([[0.5, float("nan")]]), torch.tensor([0]), "probs contains NaN"),
    ],
)
def test_classification_metrics_reject_bad_input(metric, probs, labels, match):
    with pytest.raises(ValueError, match=match):
        metric(probs, labels)


@pytest.mark.parametrize(
    "metric", [negative_log_likelihood, brier_score, expected_calibration_error, reliability_curve]
)
@pytest.mark.parametrize(
    "probs, match",
    [
        (torch.tensor([[0.5, 0.6], [0.5, 0.5]]), "must sum to one.*1.1"),
        (torch.tensor([[2.0, -1.0], [0.5, 0.5]]), r"must lie in \[0, 1\]"),
        (torch.tensor([[0.2, 0.3], [0.5, 0.5]]), "must sum to one.*0.5"),
    ],
)
def test_probability_metrics_reject_non_distributions(metric, probs, match):
    with pytest.raises(ValueError, match=match):
        metric(probs, torch.tensor([0, 1]))


def test_sums_within_rounding_are_accepted():
    probs = torch.tensor([[0.3, 0.3, 0.4 + 1e-5]])
    assert brier_score(probs, torch.tensor([2])) == pytest.approx(0.09 + 0.09 + 0.36, rel=1e-4)


@pytest.mark.parametrize("num_bins", [0, -3, 1.5, "15"])
@pytest.mark.parametrize("metric", [expected_calibration_error, reliability_curve])
def test_bins_must_be_a_positive_integer(metric, num_bins):
    with pytest.raises(ValueError, match="num_bins must be a positive integer"):
        metric(torch.full((2, 2), 0.5), torch.tensor([0, 1]), num_bins=num_bins)


@pytest.mark.parametrize("metric", [expected_calibration_error, reliability_curve])
def test_unknown_binning(metric):
    with pytest.raises(ValueError, match="unknown binning 'quantile'; use one of equal_width"):
        metric(torch.full((2, 2), 0.5), torch.tensor([0, 1]), binning="quantile")


def test_classification_report_gathers_the_scores_of_a_hand_computed_case():
    from pyro_bnn.metrics import classification_report

    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    labels = torch.tensor([0, 0, 0])
    report = classification_report(probs, labels)
    # Two of three right; NLL = -(log 0.9 + log 0.4 + log 0.7) / 3.
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["error"] == pytest.approx(1 / 3)
    expected_nll = -(math.log(0.9) + math.log(0.4) + math.log(0.7)) / 3
    assert report["nll"] == pytest.approx(expected_nll, rel=1e-6)
    # Equal-width bins of 15: confidences 0.9, 0.6, 0.7 each alone in a bin, correct, wrong,
    # correct: ECE = (0.1 + 0.6 + 0.3) / 3.
    assert report["ece"] == pytest.approx(1.0 / 3, rel=1e-6)
