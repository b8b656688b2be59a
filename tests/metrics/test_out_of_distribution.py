import math

import numpy as np
import pytest
import sklearn.metrics
import torch

from pyro_bnn.metrics import (
    aupr,
    auroc,
    detection_report,
    fpr_at_tpr,
    mutual_information,
    predictive_entropy,
)

# In-distribution scores 0.1, 0.4, 0.4; out-of-distribution 0.4, 0.8: ties across the sets.
IN_SCORES = torch.tensor([0.1, 0.4, 0.4])
OUT_SCORES = torch.tensor([0.4, 0.8])


def test_predictive_entropy_by_hand():
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    # Uniform over 4: log 4.  One-hot: 0 (0 log 0 = 0).  Half and half: log 2.
    expected = [math.log(4), 0.0, math.log(2)]
    entropy = predictive_entropy(probs)
    assert entropy.shape == (3,)
    assert entropy.dtype == torch.float32
    assert entropy.tolist() == pytest.approx(expected)
    # Any leading shape: the entropy is over the last dimension.
    assert predictive_entropy(probs.expand(2, 3, 4)).shape == (2, 3)


def test_predictive_entropy_matches_scipy():
    import scipy.stats

    probs = torch.randn(20, 6, dtype=torch.float64).softmax(-1)
    expected = scipy.stats.entropy(probs.numpy(), axis=1)
    assert predictive_entropy(probs).numpy() == pytest.approx(expected, rel=1e-12)


def test_mutual_information_is_zero_when_samples_agree():
    probs = torch.randn(1, 10, 5).softmax(-1).expand(7, 10, 5)
    information = mutual_information(probs)
    assert information.shape == (10,)
    assert information.tolist() == pytest.approx([0.0] * 10, abs=1e-6)
    assert (information >= 0).all()


def test_mutual_information_of_confident_disagreeing_samples_is_log_2():
    # Two samples, certain of class 0 and of class 1: the mean (1/2, 1/2) has entropy log 2,
    # each sample entropy 0, so I = log 2 - 0.
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert mutual_information(probs).tolist() == pytest.approx([math.log(2)])


def test_mutual_information_by_hand():
    # Samples (1/2, 1/2) and (1, 0): the mean (3/4, 1/4) has entropy
    # -(0.75 log 0.75 + 0.25 log 0.25) = 0.5623; the mean entropy is (log 2 + 0) / 2 = 0.3466.
    probs = torch.tensor([[[0.5, 0.5]], [[1.0, 0.0]]], dtype=torch.float64)
    total = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = total - math.log(2) / 2
    assert mutual_information(probs).tolist() == pytest.approx([expected], rel=1e-12)
    # The decomposition: entropy of the mean = mean entropy + mutual information.
    probs = torch.randn(9, 15, 4, dtype=torch.float64).softmax(-1)
    mean_entropy = predictive_entropy(probs).mean(0)
    total = predictive_entropy(probs.mean(0))
    assert (mean_entropy + mutual_information(probs)).numpy() == pytest.approx(
        total.numpy(), rel=1e-12
    )


def test_detection_scores_by_hand():
    # AUROC: out 0.4 beats 0.1 and ties 0.4 twice: 1 + 0.5 + 0.5 = 2; out 0.8 beats all
    # three: 3.  (2 + 3) / (3 * 2) = 5/6.
    assert auroc(IN_SCORES, OUT_SCORES) == pytest.approx(5 / 6)
    # AUPR, thresholds 0.8, 0.4, 0.1 in turn:
    #   >= 0.8: 1 out, 0 in: precision 1, recall 1/2;
    #   >= 0.4: 2 out, 2 in: precision 1/2, recall 1;
    #   >= 0.1: recall stays 1, no area.
    # AP = (1/2 - 0) * 1 + (1 - 1/2) * 1/2 = 0.75.
    assert aupr(IN_SCORES, OUT_SCORES) == pytest.approx(0.75)
    # FPR at 95% TPR: flagging 95% of 2 needs both, threshold 0.4, which also flags 2 of the 3
    # in-distribution scores.  At 50% TPR the threshold is 0.8 and flags none.
    assert fpr_at_tpr(IN_SCORES, OUT_SCORES) == pytest.approx(2 / 3)
    assert fpr_at_tpr(IN_SCORES, OUT_SCORES, tpr=0.5) == 0.0
    report = detection_report(IN_SCORES, OUT_SCORES)
    assert report == pytest.approx({"auroc": 5 / 6, "aupr": 0.75, "fpr_at_tpr": 2 / 3})
    assert detection_report(IN_SCORES, OUT_SCORES, tpr=0.5)["fpr_at_tpr"] == 0.0


def test_fpr_at_tpr_counts_the_threshold_exactly():
    # Out-scores 1, ..., 20: flagging 95% = 19 of them needs the threshold 2, which flags the
    # in-score 3 but not 0.5 or 1.5: FPR 1/3.
    outside = torch.arange(1.0, 21.0)
    inside = torch.tensor([0.5, 1.5, 3.0])
    assert fpr_at_tpr(inside, outside) == pytest.approx(1 / 3)
    # At 96% (19.2 of 20) all 20 are needed, threshold 1, which flags 1.5 and 3: FPR 2/3.
    assert fpr_at_tpr(inside, outside, tpr=0.96) == pytest.approx(2 / 3)
    # 100% TPR: the threshold is the lowest out-score.
    assert fpr_at_tpr(inside, outside, tpr=1.0) == pytest.approx(2 / 3)
    assert fpr_at_tpr(inside, outside + 1, tpr=1.0) == pytest.approx(1 / 3)


def test_separations():
    low, high = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([5.0, 6.0])
    assert detection_report(low, high) == {"auroc": 1.0, "aupr": 1.0, "fpr_at_tpr": 0.0}
    assert auroc(high, low) == 0.0
    # Equal scores do not separate at all: AUROC one half, AUPR the share of positives, and
    # the threshold that flags the out-scores flags everything.
    same_in, same_out = torch.full((6,), 0.3), torch.full((2,), 0.3)
    assert detection_report(same_in, same_out) == {"auroc": 0.5, "aupr": 0.25, "fpr_at_tpr": 1.0}


def _sklearn_fpr_at_tpr(labels, scores, tpr):
    fpr, rates, _ = sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)
    return fpr[np.searchsorted(rates, tpr, side="left")]


@pytest.mark.parametrize("num_in, num_out", [(50, 50), (200, 37), (13, 120)])
@pytest.mark.parametrize("decimals", [0, 1, 6])
def test_detection_scores_match_scikit_learn(num_in, num_out, decimals):
    # Rounding to few decimals makes many ties, within and across the two sets.
    rng = np.random.default_rng(num_in + num_out + decimals)
    inside = np.round(rng.normal(0.0, 1.0, num_in), decimals)
    outside = np.round(rng.normal(0.7, 1.0, num_out), decimals)
    labels = np.concatenate([np.zeros(num_in), np.ones(num_out)])
    scores = np.concatenate([inside, outside])
    expected_auroc = sklearn.metrics.roc_auc_score(labels, scores)
    assert auroc(torch.from_numpy(inside), torch.from_numpy(outside)) == pytest.approx(
        expected_auroc, rel=1e-12
    )
    assert aupr(inside, outside) == pytest.approx(
        sklearn.metrics.average_precision_score(labels, scores), rel=1e-12
    )
    for tpr in (0.5, 0.8, 0.95, 1.0):
        expected = _sklearn_fpr_at_tpr(labels, scores, tpr)
        assert fpr_at_tpr(inside, outside, tpr=tpr) == pytest.approx(expected, rel=1e-12)


def test_scores_of_float32_tensors():
    inside, outside = torch.randn(40), torch.randn(30) + 1
    labels = np.concatenate([np.zeros(40), np.ones(30)])
    scores = torch.cat([inside, outside]).double().numpy()
    expected = sklearn.metrics.roc_auc_score(labels, scores)
    assert auroc(inside, outside) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("metric", [auroc, aupr, fpr_at_tpr, detection_report])
@pytest.mark.parametrize(
    "inside, outside, match",
    [
        (torch.zeros(3, 1), torch.zeros(3), r"in_scores must be one-dimensional \(N,\)"),
        (torch.zeros(3), torch.tensor(1.0), r"out_scores must be one-dimensional \(N,\)"),
        (torch.zeros(0), torch.zeros(3), "in_scores holds no scores"),
        (torch.zeros(3), torch.zeros(0), "out_scores holds no scores"),
        (torch.tensor([0.0, float("nan")]), torch.zeros(3), "in_scores contains NaN"),
        (torch.zeros(3), torch.tensor([float("nan")]), "out_scores contains NaN"),
    ],
)
def test_detection_scores_reject_bad_input(metric, inside, outside, match):
    with pytest.raises(ValueError, match=match):
        metric(inside, outside)


@pytest.mark.parametrize("tpr", [0.0, -0.5, 1.01, float("nan")])
def test_tpr_must_be_a_rate(tpr):
    with pytest.raises(ValueError, match=r"tpr must lie in \(0, 1\]"):
        fpr_at_tpr(IN_SCORES, OUT_SCORES, tpr=tpr)
    with pytest.raises(ValueError, match=r"tpr must lie in \(0, 1\]"):
        detection_report(IN_SCORES, OUT_SCORES, tpr=tpr)


@pytest.mark.parametrize(
    "probs, match",
    [
        (torch.tensor(0.5), r"probs must be \(N, C\)"),
        (torch.zeros(3, 0), r"probs must be \(N, C\)"),
        (torch.tensor([[0.5, float("nan")]]), "probs contains NaN"),
        (torch.tensor([[0.5, 0.6]]), "probs must sum to one"),
        (torch.tensor([[1.5, -0.5]]), r"probs must lie in \[0, 1\]"),
    ],
)
def test_predictive_entropy_rejects_bad_input(probs, match):
    with pytest.raises(ValueError, match=match):
        predictive_entropy(probs)


@pytest.mark.parametrize(
    "probs, match",
    [
        (torch.full((4, 2), 0.5), r"probs_samples must be \(S, N, C\)"),
        (torch.full((2, 4, 2, 1), 0.5), r"probs_samples must be \(S, N, C\)"),
        (torch.zeros(0, 4, 2), r"probs_samples must be \(S, N, C\)"),
        (torch.tensor([[[0.5, float("nan")]]]), "probs_samples contains NaN"),
        (torch.tensor([[[0.5, 0.5]], [[0.5, 0.4]]]), "probs_samples must sum to one.*0.9"),
    ],
)
def test_mutual_information_rejects_bad_input(probs, match):
    with pytest.raises(ValueError, match=match):
        mutual_information(probs)
