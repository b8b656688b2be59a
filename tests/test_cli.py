import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyro_bnn.infer
from pyro_bnn.cli import main
from pyro_bnn.infer import predict
from pyro_bnn.models import lenet_300_100

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUICK = [
    "train",
    "--data",
    "digits",
    "--epochs",
    "2",
    "--train-subset",
    "256",
    "--batch-size",
    "64",
    "--num-samples",
    "10",
    "--quiet",
]


def check_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > 5000, path


@pytest.fixture(scope="module")
def sparse_vd_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("cli") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([*QUICK, "--output", str(output)])
    return code, output, stdout.getvalue()


def test_train_sparse_vd(sparse_vd_run):
    code, output, stdout = sparse_vd_run
    assert code == 0
    assert stdout.startswith("sparse-vd lenet-300-100 on digits, 2 epochs")
    assert "pruned (log alpha > 3): error" in stdout and "|W|/|W!=0| = " in stdout
    assert sorted(p.name for p in output.iterdir()) == [
        "checkpoint.pt",
        "log_alpha_histogram.png",
        "metrics.json",
        "training_curves.png",
        "weight_mask.png",
    ]
    for name in ("training_curves.png", "log_alpha_histogram.png", "weight_mask.png"):
        check_png(output / name)


def test_train_sparse_vd_metrics(sparse_vd_run):
    _, output, _ = sparse_vd_run
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["method"] == "sparse-vd" and metrics["arch"] == "lenet-300-100"
    assert metrics["data"] == "digits"
    assert metrics["command"].startswith("pyro-bnn train --data digits --epochs 2")
    assert metrics["num_train"] == 256 and metrics["num_test"] == 449
    test = metrics["test"]
    assert set(test) == {"error", "accuracy", "nll", "ece"}
    assert test["error"] == pytest.approx(1 - test["accuracy"])
    assert 0 <= test["accuracy"] <= 1 and 0 <= test["ece"] <= 1 and test["nll"] > 0

    pruned = metrics["pruned"]
    assert pruned["threshold"] == 3.0
    layers = pruned["layers"]
    assert list(layers) == ["net.fc1.weight", "net.fc2.weight", "net.fc3.weight"]
    assert [layer["total"] for layer in layers.values()] == [64 * 300, 300 * 100, 100 * 10]
    assert pruned["total"] == 64 * 300 + 300 * 100 + 100 * 10
    assert pruned["nonzero"] == sum(layer["nonzero"] for layer in layers.values())
    assert pruned["compression_ratio"] == pytest.approx(pruned["total"] / pruned["nonzero"])
    sparsity = [float(s) for s in pruned["sparsity_per_layer"].split(" - ")]
    assert sparsity == pytest.approx(
        [100 * layer["sparsity"] for layer in layers.values()], abs=0.051
    )
    assert 0 <= pruned["error"] <= 1

    history = metrics["history"]
    assert [record["epoch"] for record in history] == [1, 2]
    for record in history:
        assert math.isfinite(record["data"]) and record["data"] < 0
        assert math.isfinite(record["kl"]) and record["kl"] > 0


def test_train_sparse_vd_checkpoint(sparse_vd_run):
    _, output, _ = sparse_vd_run
    checkpoint = torch.load(output / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert len(checkpoint["history"]) == 2
    assert checkpoint["model"]["net.fc1.bias"].shape == (300,)
    assert any(key.endswith("fc1.weight") for key in checkpoint["guide"])


def test_train_deterministic(tmp_path, capsys):
    output = tmp_path / "run"
    assert main([*QUICK, "--method", "deterministic", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "deterministic lenet-300-100 on digits" in out and "test error" in out
    assert sorted(p.name for p in output.iterdir()) == [
        "checkpoint.pt",
        "metrics.json",
        "training_curves.png",
    ]
    check_png(output / "training_curves.png")
    metrics = json.loads((output / "metrics.json").read_text())
    assert "pruned" not in metrics
    assert set(metrics["test"]) == {"error", "accuracy", "nll", "ece"}
    assert [record["epoch"] for record in metrics["history"]] == [1, 2]
    assert all(record["loss"] > 0 for record in metrics["history"])

    checkpoint = torch.load(output / "checkpoint.pt", weights_only=True)
    assert checkpoint["format"] == "pyro-bnn-network/1"
    net = lenet_300_100(64, 10)
    net.load_state_dict(checkpoint["network"])


def test_pretraining_and_linear_schedule(tmp_path, capsys):
    output = tmp_path / "run"
    arguments = ["--pretrain-epochs", "1", "--lr-schedule", "linear", "--lr", "0.004"]
    assert main([*QUICK, "--output", str(output), *arguments]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["pretrain_epochs"] == 1 and metrics["lr_schedule"] == "linear"
    assert [record["epoch"] for record in metrics["pretrain_history"]] == [1]
    # Two epochs decaying linearly to zero: the full rate, then half of it.
    assert [record["lr"] for record in metrics["history"]] == pytest.approx([0.004, 0.002])


def test_convolutional_network_predicts_in_smaller_chunks(
    tmp_path, monkeypatch, capsys, write_mnist_files
):
    # A vectorized predictive pass holds num_samples x batch feature maps; for LeNet-5-Caffe
    # the command keeps that product at 10,000 images instead of the default 1,000 inputs.
    root = write_mnist_files(tmp_path / "fashion-mnist", num_images=250)
    batch_sizes = []

    def recording_predict(*args, **kwargs):
        batch_sizes.append(kwargs.get("batch_size"))
        return predict(*args, **kwargs)

    monkeypatch.setattr(pyro_bnn.infer, "predict", recording_predict)
    arguments = ["train", "--arch", "lenet-5-caffe", "--data", "fashion-mnist", "--data-root",
                 root, "--epochs", "1", "--train-subset", "32", "--batch-size", "16",
                 "--num-samples", "50", "--quiet", "--output", tmp_path / "run"]  # fmt: skip
    assert main(arguments) == 0, capsys.readouterr().err
    assert batch_sizes[0] == 200


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--lr", "inf"], "--lr must be positive and finite"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--num-samples", "0"], "--num-samples must be at least 1"),
        (["--train-subset", "0"], "--train-subset must be at least 1"),
        (["--threads", "-1"], "--threads must be at least 1"),
        (["--kl-warmup-epochs", "-2"], "--kl-warmup-epochs must be non-negative"),
        (["--threshold", "nan"], "--threshold must be finite"),
        (["--pretrain-epochs", "-1"], "--pretrain-epochs must be non-negative"),
        (
            ["--method", "deterministic", "--pretrain-epochs", "2"],
            "--pretrain-epochs applies to --method sparse-vd only",
        ),
        (["--arch", "lenet-5-caffe"], "needs images of at least 16x16"),
        (["--arch", "vgg-like"], "vgg-like needs 32x32 images"),
    ],
)
def test_bad_arguments(tmp_path, capsys, arguments, message):
    output = tmp_path / "run"
    assert main([*QUICK, "--output", str(output), *arguments]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("pyro-bnn: error: ")
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert not output.exists()


def test_output_is_a_file(tmp_path, capsys):
    output = tmp_path / "taken"
    output.write_text("not a directory")
    assert main([*QUICK, "--output", str(output)]) == 2
    assert "pyro-bnn: error:" in capsys.readouterr().err
    assert output.read_text() == "not a directory"


def test_diverging_training_is_a_clean_error(tmp_path, capsys):
    output = tmp_path / "run"
    arguments = ["--method", "deterministic", "--lr", "1e30", "--output", str(output)]
    assert main([*QUICK, *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-bnn: error: the loss became nan")
    assert "Traceback" not in err
    assert not (output / "metrics.json").exists()


def test_unknown_architecture_exits_through_argparse(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*QUICK, "--arch", "resnet", "--output", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'resnet'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_command_exits_through_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_missing_fashion_mnist(tmp_path, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    output = tmp_path / "run"
    code = main(["train", "--data", "fashion-mnist", "--data-root", str(root),
                 "--output", str(output), "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-bnn: error: Fashion-MNIST file")
    assert "dataset-fashion-mnist" in err and "Traceback" not in err
    assert not output.exists()


def test_python_dash_m_help():
    result = subprocess.run(
        [sys.executable, "-m", "pyro_bnn", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: pyro-bnn")
    assert "train" in result.stdout


def test_console_script_help():
    script = Path(sys.executable).with_name("pyro-bnn")
    if not script.exists():
        pytest.skip("the pyro-bnn console script is not installed")
    result = subprocess.run(
        [script, "train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: pyro-bnn train")
    for option in ("--method", "--arch", "--data", "--train-subset", "--threshold"):
        assert option in result.stdout
