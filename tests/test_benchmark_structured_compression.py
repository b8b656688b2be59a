"""benchmarks/structured_compression.py: L0's per-layer lambda, and runs trained elsewhere
reported without training them again, but only when they were trained with its options."""

import json
import os

import pytest
import torch

from tests.benchmark_scripts import load_benchmark

QUICK = ["--arch", "lenet-300-100", "--data", "digits", "--epochs", "1", "--pretrain-epochs",
         "1", "--methods", "l0", "--num-samples", "2", "--l0-penalty", "fc1=2",
         "--l0-penalty", "0.5"]  # fmt: skip


@pytest.fixture
def benchmark():
    threads = torch.get_num_threads()
    yield load_benchmark("structured_compression")
    torch.set_num_threads(threads)


def test_reused_runs_are_reported_not_retrained(benchmark, tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results.jsonl"
    arguments = [*QUICK, "--output", str(runs), "--results", str(results)]
    benchmark.main_benchmark(arguments)
    l0 = runs / "lenet-300-100" / "l0"
    metrics = json.loads((l0 / "metrics.json").read_text())
    assert metrics["penalty"] == {"fc1": 2.0, "fc2": 0.5, "fc3": 0.5}
    trained = {path: os.stat(path).st_mtime_ns for path in runs.rglob("metrics.json")}

    reuse = [*arguments, "--reuse-baseline", "--reuse-runs", "--codebook-epochs", "1"]
    benchmark.main_benchmark(reuse)
    assert {path: os.stat(path).st_mtime_ns for path in runs.rglob("metrics.json")} == trained
    first, second = map(json.loads, results.read_text().splitlines())
    assert second["results"] == first["results"] | {"l0": second["results"]["l0"]}
    assert second["results"]["l0"]["architecture"] == first["results"]["l0"]["architecture"]
    assert "--l0-penalty fc1=2 --l0-penalty 0.5" in second["command"]
    assert "--reuse-runs" in second["command"] and "None" not in second["command"]
    # The codebooks' centre training changes the maximum-compression error alone.
    errors = second["results"]["l0"]["errors"]
    assert (
        errors["maximum_compression_kmeans"]
        == first["results"]["l0"]["errors"]["maximum_compression"]
    )
    assert "| l0 | 64-" in capsys.readouterr().out

    # A run trained with other options is an error, not a row of the table.
    other = [*QUICK[:-4], "--l0-penalty", "0.1"]
    with pytest.raises(ValueError, match="trained with other options .*penalty"):
        reuse = ["--reuse-baseline", "--reuse-runs"]
        benchmark.main_benchmark([*other, "--output", str(runs), "--results", str(results), *reuse])


def test_held_out_images_choose_the_threshold(benchmark, tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results.jsonl"
    arguments = [*QUICK, "--output", str(runs), "--results", str(results)]
    with pytest.raises(SystemExit):
        benchmark.main_benchmark([*arguments, "--choose-threshold", "0", "0.5"])
    assert "--choose-threshold needs --train-subset" in capsys.readouterr().err
    benchmark.main_benchmark(
        [*arguments, "--train-subset", "300", "--choose-threshold", "0", "0.5"]
    )
    for method in ("deterministic", "l0"):
        metrics = json.loads((runs / "lenet-300-100" / method / "metrics.json").read_text())
        assert metrics["num_train"] == 300
    (record,) = map(json.loads, results.read_text().splitlines())
    row = record["results"]["l0"]
    choice = row["threshold_choice"]
    assert choice["num_held_out"] == 1348 - 300
    assert row["threshold"] == choice["threshold"] in (0.0, 0.5)
    assert "--train-subset 300 --choose-threshold 0.0 0.5" in record["command"]
    assert f"l0: threshold {choice['threshold']:g} chosen on 1048" in capsys.readouterr().out
    # Runs trained on another subset are not reused.
    with pytest.raises(ValueError, match="trained with other options .*train_subset"):
        benchmark.main_benchmark([*arguments, "--train-subset", "400", "--reuse-baseline",
                                  "--reuse-runs"])  # fmt: skip
