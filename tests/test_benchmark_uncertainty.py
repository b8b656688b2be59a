"""benchmarks/uncertainty.py: its scores and verdicts, and a tiny run end to end on a fake
Fashion-MNIST (random images in the IDX layout)."""

import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from pyro_bnn.infer import ClassificationPrediction

from .benchmark_scripts import load_benchmark

uncertainty = load_benchmark("uncertainty")


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
              "10", "--num-test", "20", "--num-samples", "2", "--output", str(output),
              "--reference-size", "5"]  # fmt: skip
    uncertainty.main([*common, "--num-ood", "8", "--protocol", "ten-classes", "five-classes"])
    printed = capsys.readouterr().out
    assert "| flow | 1 | 2 |" in printed and "| fnp-plus | 1 | 2 |" in printed
    assert "AUROC held-out-classes (H)" in printed
    assert printed.count("Target (flow: best mean AUROC") == 2
    assert printed.count("| images | deterministic |") == 2  # the Table 6 form
    assert "| held-out-classes (entropy / AUROC %) |" in printed
    assert "| fnp | 5 |" in printed and "| fnp-plus | 5 |" in printed  # the Table 13 form
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
    assert set(first["results"]["mean_entropy"]) == {"test", *first["results"]["ood"]}
    fnps = [r for r in records if r["method"] in ("fnp", "fnp-plus")]
    assert [r["details"]["plus"] for r in fnps] == [False, True, False, True]
    for record in fnps:
        details = record["details"]
        assert record["settings"]["reference_size"] == 5
        assert details["reference_size"] == 5 and details["num_data"] == 15
        assert (details["dim_u"], details["dim_z"], details["free_bits"]) == (32, 64, 1.0)
        assert details["reference_gradient_size"] is None  # all of R by default
        assert sum(details["reference_class_counts"]) == 5
        assert math.isfinite(record["results"]["mean_ood_entropy"])
    # Stratified: the five-class protocol's reference set has one image of each class.
    assert fnps[2]["details"]["reference_class_counts"] == [1, 1, 1, 1, 1]

    output.unlink()
    uncertainty.main([*common, "--random-labels", "--methods", "flow", "deterministic"])
    printed = capsys.readouterr().out
    assert "Claim (flow at chance on random labels" in printed
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["method"] for r in records] == ["deterministic", "flow"]
    assert {"train_accuracy", "test_accuracy"} <= set(records[1]["results"])


def test_fnp_torso_and_tables():
    torso = uncertainty.fnp_torso(10)
    assert torso(torch.zeros(3, 1, 28, 28)).shape == (3, uncertainty.FNP_FEATURE_DIM)
    assert isinstance(torso[-1], torch.nn.ReLU)
    assert [name for name, _ in torso.named_children()][-2:] == ["fc1", "relu3"]

    labels = torch.tensor([0, 1, 2, 0])
    confident = torch.full((2, 4, 3), 0.05)
    confident[:, torch.arange(4), labels] = 0.9
    flat = _prediction(torch.full((2, 5, 3), 1 / 3))
    row = uncertainty.evaluate(_prediction(confident), labels, {"a": flat, "b": flat})
    assert row["mean_entropy"]["a"] == pytest.approx(math.log(3))
    assert row["mean_ood_entropy"] == pytest.approx(math.log(3))
    rows = {"deterministic": row, "fnp": row}
    table = uncertainty.table6(rows)
    assert "| test (entropy / error %) | 0.39 / 0.00 | 0.39 / 0.00 |" in table
    assert "| average OOD (entropy / AUROC %) | 1.10±0.00 / 100.00±0.00 |" in table
    table = uncertainty.reference_size_table(rows, 300)
    assert "| fnp | 300 | 0.00 | 1.10±0.00 | 100.00±0.00 |" in table
    assert "deterministic" not in table


def test_reference_size_must_leave_training_images(tmp_path, write_mnist_files, capsys):
    root = write_mnist_files(tmp_path / "fashion", num_images=60)
    arguments = ["--smoke", "--data-root", str(root), "--num-train", "20", "--num-validation",
                 "10", "--reference-size", "20"]  # fmt: skip
    with pytest.raises(SystemExit):
        uncertainty.main(arguments)
    assert "--reference-size (20) must be smaller than --num-train (20)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        uncertainty.parse_arguments([*arguments, "--fnp-reference-gradient-size", "0"])
    assert "--fnp-reference-gradient-size must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        uncertainty.parse_arguments([*arguments, "--fnp-reference-subsample-size", "0"])
    assert "--fnp-reference-subsample-size must be a positive integer" in capsys.readouterr().err
    parsed = uncertainty.parse_arguments(
        [*arguments[:-1], "5", "--fnp-reference-gradient-size", "2"]
    )
    assert parsed.fnp_reference_gradient_size == 2
    # Without the FNPs the size does not matter.
    assert uncertainty.parse_arguments([*arguments, "--methods", "flow"]).reference_size == 20
    experiment = uncertainty.prepare_experiment(_labelled(60), _labelled(20), num_validation=10)
    settings = uncertainty.Settings(reference_size=50)
    with pytest.raises(ValueError, match="leaves none of the 50"):
        uncertainty.check_reference_size(experiment, settings, ["fnp"])
    uncertainty.check_reference_size(experiment, settings, ["flow"])


def test_missing_data_is_reported_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        uncertainty.main(["--smoke", "--data-root", str(tmp_path)])
    assert raised.value.code == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_matrix_normal_cap_reaches_the_guide(tmp_path, write_mnist_files, capsys):
    root = write_mnist_files(tmp_path / "fashion", num_images=40)
    output = tmp_path / "results.jsonl"
    arguments = ["--smoke", "--data-root", str(root), "--num-train", "20", "--num-validation",
                 "0", "--num-test", "10", "--num-ood", "4", "--num-samples", "2", "--output",
                 str(output), "--methods", "matrix-normal"]  # fmt: skip
    with pytest.raises(SystemExit):
        uncertainty.main([*arguments, "--matrix-normal-max-scale", "0"])
    assert "--matrix-normal-max-scale must be positive" in capsys.readouterr().err
    assert not output.exists()
    uncertainty.main([*arguments, "--matrix-normal-max-scale", "0.5"])
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert record["details"]["max_scale"] == 0.5
    assert record["settings"]["matrix_normal_max_scale"] == 0.5


def test_fnp_reference_gradient_and_subsample_sizes_reach_the_model(tmp_path, write_mnist_files):
    root = write_mnist_files(tmp_path / "fashion", num_images=40)
    output = tmp_path / "results.jsonl"
    uncertainty.main(["--smoke", "--data-root", str(root), "--num-train", "20",
                      "--num-validation", "0", "--num-test", "10", "--num-ood", "4",
                      "--num-samples", "2", "--reference-size", "5", "--output", str(output),
                      "--methods", "fnp-plus", "--fnp-reference-gradient-size", "2",
                      "--fnp-reference-subsample-size", "3"])  # fmt: skip
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert record["details"]["reference_gradient_size"] == 2
    assert record["settings"]["fnp_reference_gradient_size"] == 2
    assert record["details"]["reference_subsample_size"] == 3
    assert record["settings"]["fnp_reference_subsample_size"] == 3


def test_early_stopping_keeps_the_best_epoch_and_stops_after_its_patience():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    labels = torch.tensor([0, 1, 1, 0])
    scripted = iter([0.5, 0.75, 0.75, 0.5, 1.0])  # accuracy after epochs 1, 2, ...
    states = []

    def predictor(x):
        net.eval()  # as prediction functions may; training must go on in training mode
        right = round(4 * next(scripted))
        guesses = torch.where(torch.arange(4) < right, labels, 1 - labels)
        return _prediction(torch.nn.functional.one_hot(guesses, 2).float()[None])

    def run(callback):
        for epoch in range(1, 6):
            assert net.training
            with torch.no_grad():
                net[0].weight.fill_(epoch)  # "training": the weights record the epoch
            states.append(epoch)
            callback({"epoch": epoch})
        return ["unreached"]

    stopping = uncertainty.EarlyStopping([net], predictor, torch.zeros(4, 2), labels, patience=2)
    records = stopping.train(run)
    # Epoch 2 is best (epoch 3 only ties it); epochs 3 and 4 do not beat it, so epoch 5 never
    # runs and the network gets epoch 2's weights back.
    assert states == [1, 2, 3, 4]
    assert records == [{"epoch": e} for e in (1, 2, 3, 4)]
    assert stopping.details == {"patience": 2, "best_epoch": 2, "epochs_trained": 4,
                                "validation_accuracy": [0.5, 0.75, 0.75, 0.5]}  # fmt: skip
    assert torch.equal(net[0].weight, torch.full((2, 2), 2.0)) and net.training

    # A run that ends before the patience does keeps its best epoch too.
    scripted = iter([0.25, 0.5])
    stopping = uncertainty.EarlyStopping([net], predictor, torch.zeros(4, 2), labels, patience=3)
    assert stopping.train(lambda callback: [callback({"epoch": e}) for e in (1, 2)]) == [
        {"epoch": 1},
        {"epoch": 2},
    ]
    assert stopping.best_epoch == 2


def test_early_stopping_run_end_to_end_and_its_bad_arguments(tmp_path, write_mnist_files, capsys):
    root = write_mnist_files(tmp_path / "fashion", num_images=60)
    output = tmp_path / "results.jsonl"
    arguments = ["--smoke", "--data-root", str(root), "--num-train", "30", "--num-validation",
                 "10", "--num-test", "10", "--num-ood", "4", "--num-samples", "2",
                 "--reference-size", "5", "--output", str(output)]  # fmt: skip
    for extra, message in [
        (["--early-stopping", "0"], "--early-stopping must be a positive integer"),
        (["--early-stopping", "1", "--validation-samples", "0"], "--validation-samples must"),
        (["--early-stopping", "1", "--num-validation", "0"], "needs validation images"),
        (["--early-stopping", "1", "--random-labels"], "does not apply with --random-labels"),
        (["--early-stopping", "1", "--methods", "deep-ensemble"], "does not apply to deep-ens"),
    ]:
        with pytest.raises(SystemExit):
            uncertainty.main([*arguments, *extra])
        assert message in capsys.readouterr().err
    assert not output.exists()

    methods = ["deterministic", "mc-dropout", "last-layer-laplace", "mean-field", "fnp-plus"]
    uncertainty.main([*arguments, "--epochs", "3", "--early-stopping", "1",
                      "--validation-samples", "3", "--methods", *methods])  # fmt: skip
    printed = capsys.readouterr().out
    assert "3 epochs at most, early stopping after 1" in printed
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["method"] for r in records] == methods
    for record in records:
        stopping = record["details"]["early_stopping"]
        trained = stopping["epochs_trained"]
        assert record["epochs_trained"] == trained and 1 <= trained <= 3
        assert len(stopping["validation_accuracy"]) == trained
        assert stopping["best_epoch"] in (trained - 1, trained)  # patience 1
        accuracies = stopping["validation_accuracy"]
        assert accuracies[stopping["best_epoch"] - 1] == max(accuracies)
        assert record["settings"]["early_stopping"] == 1
        assert record["settings"]["validation_samples"] == 3
    # The Laplace approximation reuses the deterministic network, stopped early once.
    assert records[2]["details"]["early_stopping"] == records[0]["details"]["early_stopping"]
