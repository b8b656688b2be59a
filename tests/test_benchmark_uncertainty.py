"""benchmarks/uncertainty.py: its scores and verdicts, and a tiny run end to end on a fake
Fashion-MNIST (random images in the IDX layout)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from pyro_bnn.infer import ClassificationPrediction

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "uncertainty.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("benchmark_uncertainty", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up while the class is made.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


uncertainty = _load_script()


def _prediction(probs_samples) -> ClassificationPrediction:
    return ClassificationPrediction.from_samples(torch.as_tensor(probs_samples))


def _labelled(num: int, num_classes: int = 10) -> TensorDataset:
    images = torch.rand(num, 1, 28, 28)
    return TensorDataset(images, torch.arange(num) % num_classes)


def test_evaluate_separates_confident_inputs_from_uniform_predictions():
    labels = torch.tensor([0, 1, 2, 0])
    confident = torch.full((2, 4, 3), 0.05)
    confident[:, torch.arange(4), labels] = 0.9
    confident[1, 3] = torch.tensor([0.3, 0.65, 0.05])  # the samples disagree on one input
    # The two samples of each OOD input are confident in different classes: the mean is flat
    # (high entropy) and the samples disagree (high mutual information).
    outside = torch.full((2, 5, 3), 0.05)
    outside[0, :, 0], outside[1, :, 1] = 0.9, 0.9
    row = uncertainty.evaluate(_prediction(confident), labels, {"noise": _prediction(outside)})
    assert row["num_samples"] == 2
    assert row["error"] == pytest.approx(0.0)  # input 3 still has 0.6 on its label
    assert row["ood"]["noise"]["entropy"]["auroc"] == pytest.approx(1.0)
    assert row["ood"]["noise"]["mutual_information"]["auroc"] == pytest.approx(1.0)
    assert row["mean_auroc_entropy"] == pytest.approx(1.0)
    for key in ("nll", "brier", "ece", "ece_adaptive"):
        assert math.isfinite(row[key])

    single = uncertainty.evaluate(
        _prediction(confident[:1]), labels, {"noise": _prediction(outside[:1])}
    )
    assert "mutual_information" not in single["ood"]["noise"]
    assert single["mean_auroc_mutual_information"] is None
    with pytest.raises(ValueError, match="samples"):
        uncertainty.evaluate(_prediction(confident), labels, {"noise": _prediction(outside[:1])})


def test_predict_sets_uses_one_call_and_splits_it_back():
    calls = []

    def predictor(x):
        calls.append(len(x))
        return _prediction(torch.full((3, len(x), 4), 0.25))

    pieces = uncertainty.predict_sets(predictor, [torch.zeros(2, 1), torch.zeros(5, 1)])
    assert calls == [7]
    assert [piece.probs_samples.shape for piece in pieces] == [(3, 2, 4), (3, 5, 4)]


def test_uncertainty_verdict():
    def row(auroc, error):
        return {"mean_auroc_entropy": auroc, "error": error}

    holds, text = uncertainty.uncertainty_verdict(
        {"deterministic": row(0.7, 0.09), "mean-field": row(0.8, 0.10), "flow": row(0.9, 0.10)}
    )
    assert holds is True and text.startswith("HOLDS")
    holds, text = uncertainty.uncertainty_verdict(
        {"deep-ensemble": row(0.95, 0.08), "mean-field": row(0.8, 0.10), "flow": row(0.9, 0.09)}
    )
    assert holds is False and "deep-ensemble" in text
    holds, _ = uncertainty.uncertainty_verdict(
        {"mean-field": row(0.8, 0.10), "flow": row(0.9, 0.11)}
    )
    assert holds is False
    assert uncertainty.uncertainty_verdict({"flow": row(0.9, 0.1)})[0] is None


def test_random_label_verdict():
    rows = {"deterministic": {"train_accuracy": 0.6}, "flow": {"train_accuracy": 0.105}}
    holds, _ = uncertainty.random_label_verdict(rows, chance=0.1, num_train=10_000)
    assert holds is True
    rows["flow"]["train_accuracy"] = 0.2
    assert uncertainty.random_label_verdict(rows, chance=0.1, num_train=10_000)[0] is False
    assert uncertainty.random_label_verdict({"flow": {}}, chance=0.1, num_train=10)[0] is None
    assert uncertainty.chance_accuracy(torch.tensor([0, 0, 1, 2]), 3) == 0.5


def test_prepare_experiment_five_classes_and_random_labels():
    train, test = _labelled(100), _labelled(40)
    experiment = uncertainty.prepare_experiment(
        train, test, "five-classes", num_train=30, num_validation=10, num_ood=7
    )
    assert experiment.num_classes == 5
    assert len(experiment.x_train) == 30 and len(experiment.x_valid) == 10
    assert int(experiment.y_train.max()) < 5 and len(experiment.x_test) == 20
    assert set(experiment.ood) == {"gaussian-noise", "uniform-noise", "digits", "held-out-classes"}
    assert all(len(x) == 7 and x.shape[1:] == (1, 28, 28) for x in experiment.ood.values())
    # The validation images are the last ones kept, disjoint from the training images.
    kept = train.tensors[0][train.tensors[1] < 5]
    assert torch.equal(experiment.x_valid, kept[-10:])

    shuffled = uncertainty.prepare_experiment(
        train, test, num_validation=0, random_labels=True, seed=3
    )
    assert shuffled.ood == {} and len(shuffled.x_train) == 100
    assert not torch.equal(shuffled.y_train, train.tensors[1])
    assert torch.equal(shuffled.y_train.sort().values, train.tensors[1].sort().values)
    with pytest.raises(ValueError, match="num_train"):
        uncertainty.prepare_experiment(train, test, num_train=95, num_validation=10)
    with pytest.raises(ValueError, match="protocol"):
        uncertainty.prepare_experiment(train, test, "three-classes")


def test_smoke_run_end_to_end(tmp_path, write_mnist_files, capsys):
    root = write_mnist_files(tmp_path / "fashion", num_images=60)
    output = tmp_path / "results.jsonl"
    common = ["--smoke", "--data-root", str(root), "--num-train", "20", "--num-validation",
              "10", "--num-test", "20", "--num-samples", "2", "--output", str(output)]  # fmt: skip
    uncertainty.main([*common, "--num-ood", "8", "--protocol", "ten-classes", "five-classes"])
    printed = capsys.readouterr().out
    assert "| flow | 1 | 2 |" in printed
    assert "AUROC held-out-classes (H)" in printed
    assert printed.count("Target (flow: best mean AUROC") == 2
    records = [json.loads(line) for line in output.read_text().splitlines()]
    methods = list(uncertainty.METHODS)
    assert [(r["protocol"], r["method"]) for r in records] == [
        (protocol, method) for protocol in ("ten-classes", "five-classes") for method in methods
    ]
    first = records[0]
    assert first["settings"]["sizes"]["train"] == 20
    assert first["settings"]["weight_decay"] == pytest.approx(1 / 20)
    assert first["train_seconds_ratio_to_deterministic"] == pytest.approx(1.0)
    assert set(first["results"]["ood"]) == {"gaussian-noise", "uniform-noise", "digits"}
    assert records[3]["details"]["reused_deterministic_network"] is True

    output.unlink()
    uncertainty.main([*common, "--random-labels", "--methods", "flow", "deterministic"])
    printed = capsys.readouterr().out
    assert "Claim (flow at chance on random labels" in printed
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["method"] for r in records] == ["deterministic", "flow"]
    assert {"train_accuracy", "test_accuracy"} <= set(records[1]["results"])


def test_missing_data_is_reported_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        uncertainty.main(["--smoke", "--data-root", str(tmp_path)])
    assert raised.value.code == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
