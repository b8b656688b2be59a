"""choose_threshold(): the pruning threshold chosen on held-out data by the one-standard-error
rule."""

import math

import pytest
import torch

from pyro_bnn.compression import (
    ThresholdChoice,
    choose_threshold,
    compress,
    one_standard_error_index,
    prune,
    pruned_posterior_mean,
)
from pyro_bnn.models import lenet_300_100
from tests.compression.test_compress import trained


def test_the_rule_takes_the_most_compressing_candidate_within_one_standard_error():
    errors, sizes = [0.10, 0.11, 0.13], [0.5, 0.2, 0.1]
    # n = 400: SE = sqrt(0.1 * 0.9 / 400) = 0.015, so errors up to 0.115 qualify.
    assert one_standard_error_index(errors, sizes, 400) == 1
    # n = 100: SE = 0.03, up to 0.13 (0.13 itself, up to rounding) -- take n = 90 to be clear.
    assert one_standard_error_index(errors, sizes, 90) == 2
    # n = 10,000: SE = 0.003, only the best.
    assert one_standard_error_index(errors, sizes, 10_000) == 0
    # Equal sizes: the lower error, then the earlier candidate.
    assert one_standard_error_index([0.2, 0.1, 0.1], [0.3, 0.3, 0.3], 50) == 1
    # A perfect candidate has no noise band: only errors of 0 qualify.
    assert one_standard_error_index([0.0, 0.01], [0.9, 0.1], 100) == 0


@pytest.mark.parametrize(
    "errors, sizes, n, match",
    [
        ([], [], 10, "one error and one size per candidate"),
        ([0.1], [1.0, 2.0], 10, "one error and one size per candidate"),
        ([0.1], [1.0], 0, "at least 1 example"),
        ([1.5], [1.0], 10, r"rates in \[0, 1\]"),
    ],
)
def test_the_rule_refuses_bad_input(errors, sizes, n, match):
    with pytest.raises(ValueError, match=match):
        one_standard_error_index(errors, sizes, n)


@pytest.fixture(scope="module")
def sparse_vd():
    """A sparse-VD LeNet-300-100 whose log alphas spread over the candidate thresholds: one
    variance for every weight, so that log alpha ranks the weights by magnitude."""
    torch.manual_seed(0)
    model, guide, _ = trained(lenet_300_100(), None, (1, 28, 28))
    with torch.no_grad():
        for name, parameter in guide.named_parameters():
            if "log_variance" in name:
                parameter.fill_(-9.0)
    x = torch.randn(400, 1, 28, 28)
    # Labels the unpruned posterior mean gets right: the error then grows as pruning goes deeper.
    with torch.no_grad():
        y = compress(model, guide, thresholds=50.0).scenario_network("pruning")(x).argmax(-1)
    return model, guide, x, y


def test_held_out_errors_and_rates_are_those_of_the_pruned_network(sparse_vd):
    model, guide, x, y = sparse_vd
    candidates = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0]
    choice = choose_threshold(model, guide, candidates, x, y, batch_size=64)
    assert [c.threshold for c in choice.candidates] == candidates
    assert choice.num_held_out == 400
    kept = [c.kept_fraction for c in choice.candidates]
    assert kept == sorted(kept) and kept[0] < kept[-1]  # a lower threshold prunes more
    for candidate in choice.candidates:
        # Independently: sparse VD's own pruning (log alpha masks, masked means) in the
        # model's deterministic network.
        means = pruned_posterior_mean(guide, prune(guide, candidate.threshold))
        weights = {site.removeprefix("net."): mean for site, mean in means.items()}
        network = model.deterministic_network(weights).eval()
        with torch.no_grad():
            expected = (network(x).argmax(-1) != y).double().mean().item()
        assert candidate.error == pytest.approx(expected, abs=1e-12)
        compressed = compress(model, guide, thresholds=candidate.threshold)
        assert candidate.architecture == compressed.architecture()
        assert candidate.kept_fraction == compressed.ratios.kept_fraction
        assert candidate.pruning == compressed.ratios.pruning
    best = min(c.error for c in choice.candidates)
    assert choice.standard_error == pytest.approx(math.sqrt(best * (1 - best) / 400))
    index = one_standard_error_index([c.error for c in choice.candidates], kept, 400)
    assert choice.threshold == candidates[index]
    # Neither end: pruning deeper costs more than the noise, pruning less gains nothing.
    assert choice.threshold not in (0.0, 6.0), str(choice)
    # The record round-trips and names every candidate.
    assert ThresholdChoice.from_dict(choice.as_dict()) == choice
    text = str(choice)
    assert text.startswith(f"threshold {choice.threshold:g} chosen on 400 held-out examples")
    assert all(f"{c.threshold:g}: {100 * c.error:.2f}%" in text for c in choice.candidates)


def test_choose_threshold_refuses_bad_input(sparse_vd):
    model, guide, x, y = sparse_vd
    with pytest.raises(ValueError, match="at least one candidate"):
        choose_threshold(model, guide, [], x, y)
    with pytest.raises(ValueError, match="repeat"):
        choose_threshold(model, guide, [3.0, 3.0], x, y)
    with pytest.raises(ValueError, match="one label per input"):
        choose_threshold(model, guide, [3.0], x, y[:-1])
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9"):
        choose_threshold(model, guide, [3.0], x, y + 10)
    with pytest.raises(ValueError, match="integer"):
        choose_threshold(model, guide, [3.0], x, y.float())
    bad = x.clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        choose_threshold(model, guide, [3.0], bad, y)
    with pytest.raises(ValueError, match="candidate threshold inf: the log alpha threshold"):
        choose_threshold(model, guide, [3.0, float("inf")], x, y)
    with pytest.raises(ValueError, match="candidate threshold -5: .* removes all its 784 input"):
        choose_threshold(model, guide, [3.0, -5.0], x, y)
