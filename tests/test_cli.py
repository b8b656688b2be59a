import contextlib
import io
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyro_bnn.infer
from pyro_bnn.cli import main
from pyro_bnn.infer import fit, predict
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
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([*QUICK, "--output", str(output)])
    return code, output, stdout.getvalue(), stderr.getvalue()


def contents(directory):
    """Every file of ``directory`` with its bytes."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def copy_run(sparse_vd_run, tmp_path):
    return Path(shutil.copytree(sparse_vd_run[1], tmp_path / "run"))


def test_train_sparse_vd(sparse_vd_run):
    code, output, stdout, _ = sparse_vd_run
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
    _, output, _, _ = sparse_vd_run
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
    _, output, _, _ = sparse_vd_run
    checkpoint = torch.load(output / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert len(checkpoint["history"]) == 2
    assert checkpoint["model"]["net.fc1.bias"].shape == (300,)
    assert checkpoint["guide"]
    # The options of the run, for --resume and evaluate.
    run = checkpoint["extra"]["run"]
    assert run["command"] == "pyro-bnn " + " ".join([*QUICK, "--output", str(output)])
    assert (run["method"], run["arch"], run["data"], run["epochs"]) == (
        "sparse-vd", "lenet-300-100", "digits", 2
    )  # fmt: skip
    assert (run["batch_size"], run["lr"], run["kl_warmup_epochs"]) == (64, 3e-3, 10.0)
    assert run["num_train"] == 256 and run["train_subset"] == 256


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


def test_deterministic_weight_decay_is_the_l2_penalty_per_example(tmp_path, capsys):
    # --weight-decay is lambda_2 against the summed log-likelihood: with N = 256 examples,
    # 25.6 is Adam's weight_decay 0.1 on the mean loss, which shrinks the weights.
    norms = {}
    for decay in (None, "25.6"):
        output = tmp_path / f"run-{decay}"
        extra = [] if decay is None else ["--weight-decay", decay]
        arguments = [*QUICK, "--method", "deterministic", *extra, "--output", str(output)]
        assert main(arguments) == 0
        metrics = json.loads((output / "metrics.json").read_text())
        assert metrics["weight_decay"] == (None if decay is None else 25.6)
        network = torch.load(output / "checkpoint.pt", weights_only=True)["network"]
        norms[decay] = float(network["fc1.weight"].norm())
    assert norms["25.6"] < 0.9 * norms[None]


def test_ema_decay_is_recorded_and_resumed_only_with_the_same_value(tmp_path, capsys):
    for method in ("deterministic", "sparse-vd"):
        output = tmp_path / method
        arguments = [*QUICK, "--method", method, "--ema-decay", "0.9", "--output", str(output)]
        assert main(arguments) == 0, capsys.readouterr().err
        assert json.loads((output / "metrics.json").read_text())["ema_decay"] == 0.9
    resumed = [*QUICK, "--epochs", "3", "--resume", "--output", str(tmp_path / "sparse-vd")]
    assert main([*resumed, "--ema-decay", "0.5"]) == 2
    assert "--ema-decay is 0.5 here but 0.9 there" in capsys.readouterr().err
    assert main([*resumed, "--ema-decay", "0.9"]) == 0, capsys.readouterr().err


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
    # the command keeps that product at 2,500 images instead of the default 250 inputs.
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
    assert batch_sizes[0] == 50


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
            "--pretrain-epochs applies to the Bayesian methods only",
        ),
        (["--method", "l0", "--penalty", "-1"], "the L0 penalty must be a finite number >= 0"),
        (["--method", "group-nj", "--penalty", "0.1"], "--penalty applies to --method l0 only"),
        (["--method", "l0", "--penalty", "fc1=-1"], "the L0 penalty must be a finite number >= 0"),
        (["--method", "l0", "--penalty", "fc1"], "--penalty takes LAMBDA or LAYER=LAMBDA"),
        (["--method", "l0", "--init-drop-rate", "1"], "init_drop_rate is a dropout rate in (0, 1)"),
        (["--method", "sbp", "--init-drop-rate", "0.5"], "--init-drop-rate applies to --method l0"),
        (["--method", "l0", "--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
        (["--method", "deterministic", "--weight-decay", "inf"], "--weight-decay must be a finite"),
        (["--method", "sbp", "--weight-decay", "1"], "--weight-decay applies to --method l0 and"),
        (["--ema-decay", "1"], "--ema-decay must lie strictly between 0 and 1, got 1.0"),
        (["--method", "deterministic", "--ema-decay", "nan"], "--ema-decay must lie strictly"),
        (["--method", "fnp", "--ema-decay", "0.9"], "--ema-decay applies to the weight-space"),
        (["--method", "l0", "--penalty", "=1"], "no layer before '='"),
        (["--method", "l0", "--penalty", "fc1=nan"], "--penalty must be finite, got 'fc1=nan'"),
        (["--method", "l0", "--penalty", "1", "--penalty", "2"], "one bare LAMBDA"),
        (
            ["--method", "l0", "--penalty", "conv1=10"],
            "--penalty names 'conv1', which lenet-300-100 does not have; its layers are fc1, fc2",
        ),
        (
            ["--method", "group-nj", "--std-cap", "fc4=0.2"],
            "--std-cap names 'fc4', which lenet-300-100 does not have",
        ),
        (["--method", "sbp", "--threshold", "-1"], "the SBP threshold is a signal-to-noise"),
        (["--method", "spike-and-slab", "--threshold", "1.5"], "inclusion probability in (0, 1)"),
        (["--method", "l0", "--threshold", "1"], "test-time gate in [0, 1)"),
        (["--method", "group-nj", "--std-cap", "fc1"], "--std-cap takes LAYER=STD, got 'fc1'"),
        (["--method", "group-nj", "--std-cap", "fc1=-1"], "with a positive STD"),
        (["--std-cap", "fc1=0.2"], "--std-cap applies to the structured methods only"),
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


def test_warmup_longer_than_the_run_is_reported(sparse_vd_run):
    _, _, _, stderr = sparse_vd_run
    warning = (
        "pyro-bnn: warning: --epochs 2 is shorter than the KL warm-up of 10 epochs (the default "
        "for digits): the KL never reaches full weight, so the result is not the ELBO's "
        "posterior\n"
    )
    assert stderr == warning


def test_existing_run_is_refused_and_left_alone(sparse_vd_run, capsys):
    output = sparse_vd_run[1]
    before = contents(output)
    assert main([*QUICK, "--output", str(output)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"pyro-bnn: error: {output} already holds a run (metrics.json and checkpoint.pt); pass "
        "--overwrite to replace it or --resume to continue it, or choose another --output\n"
    )
    assert captured.out == ""
    assert contents(output) == before


def test_overwrite_removes_the_old_runs_files_only(sparse_vd_run, tmp_path, capsys):
    output = copy_run(sparse_vd_run, tmp_path)
    (output / "notes.txt").write_text("mine")
    (output / "evaluation.json").write_text("{}")
    arguments = ["--method", "deterministic", "--output", output, "--overwrite"]
    assert main([*QUICK, *arguments]) == 0
    assert capsys.readouterr().err == ""  # the deterministic baseline has no KL to warm up
    # No sparse-VD plots or evaluation of the old run are left next to the new run's files.
    assert sorted(p.name for p in output.iterdir()) == [
        "checkpoint.pt",
        "metrics.json",
        "notes.txt",
        "training_curves.png",
    ]
    assert (output / "notes.txt").read_text() == "mine"

    # evaluate gives the deterministic network's test metrics again, without touching them.
    metrics = (output / "metrics.json").read_bytes()
    assert main(["evaluate", "--output", output]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deterministic lenet-300-100 on digits, 2 epochs\ntest error ")
    assert out.endswith(f"wrote {output}/evaluation.json\n")
    evaluation = json.loads((output / "evaluation.json").read_text())
    assert evaluation["test"] == json.loads(metrics)["test"]
    assert (output / "metrics.json").read_bytes() == metrics


def test_evaluate_a_sparse_vd_run(sparse_vd_run, tmp_path, capsys):
    output = copy_run(sparse_vd_run, tmp_path)
    before = contents(output)
    # RUN_DIR, as compress and diagnose take it; two directories are refused first.
    assert main(["evaluate", output, "--output", tmp_path / "other"]) == 2
    assert "name two runs; give one of them" in capsys.readouterr().err
    assert contents(output) == before
    assert main(["evaluate", output, "--num-samples", "20"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sparse-vd lenet-300-100 on digits, 2 epochs"
    assert out[1].startswith("test error ") and out[2].startswith("pruned (log alpha > 3): ")
    assert out[3] == f"wrote {output}/evaluation.json"
    # Nothing of the run changed; evaluation.json is the one new file.
    assert contents(output).items() >= before.items()
    assert set(contents(output)) == set(before) | {"evaluation.json"}
    evaluation = json.loads((output / "evaluation.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    assert evaluation["num_samples"] == 20 and evaluation["epochs"] == 2
    assert set(evaluation["test"]) == {"error", "accuracy", "nll", "ece"}
    # The pruned network is deterministic: the rebuilt run gives the very same numbers.
    assert evaluation["pruned"] == metrics["pruned"]


def _torch_save(path, value):
    torch.save(value, path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


UNREADABLE = "is not a readable pyro-bnn checkpoint"


@pytest.mark.parametrize(
    "prepare, message",
    [
        (None, "holds no run: there is no checkpoint.pt in it"),
        (lambda path: path.write_bytes(b"not a checkpoint"), UNREADABLE),
        (lambda path: _torch_save(path, {"w": torch.zeros(2)}), "is not a pyro-bnn checkpoint"),
        (lambda path: path.write_bytes(pickle.dumps(_RunsCode())), UNREADABLE),
        (lambda path: _torch_save(path, {"format": "pyro-bnn-network/1", "network": {}}),
         "does not record the options of its run"),
    ],
)  # fmt: skip
def test_evaluate_refuses_a_directory_without_a_run(tmp_path, capsys, prepare, message):
    output = tmp_path / "run"
    output.mkdir()
    if prepare is not None:
        prepare(output / "checkpoint.pt")
    assert main(["evaluate", "--output", output]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("pyro-bnn: error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "this must never run" not in captured.out
    assert not (output / "evaluation.json").exists()


def test_evaluate_refuses_a_checkpoint_of_another_architecture(sparse_vd_run, tmp_path, capsys):
    output = copy_run(sparse_vd_run, tmp_path)
    checkpoint = torch.load(output / "checkpoint.pt", weights_only=True)
    checkpoint["extra"]["run"]["arch"] = "lenet-5-caffe"
    checkpoint["extra"]["run"]["data"] = "fashion-mnist"
    torch.save(checkpoint, output / "checkpoint.pt")
    root = tmp_path / "fashion-mnist"
    assert main(["evaluate", "--output", output, "--data-root", root]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-bnn: error: Fashion-MNIST file") and err.count("\n") == 1


def test_resume_checks_the_options_then_continues(sparse_vd_run, tmp_path, capsys):
    output = copy_run(sparse_vd_run, tmp_path)
    before = contents(output)
    for arguments, message in [
        (["--seed", "1"], "--resume: the options must match the run saved in "),
        (["--lr", "0.01", "--batch-size", "32"], "--batch-size is 32 here but 64 there; --lr is "
                                                 "0.01 here but 0.003 there"),
        (["--epochs", "1"], "--epochs 1 is fewer than the 2 epochs the run in"),
        (["--method", "deterministic"], "--resume continues Bayesian runs"),
    ]:  # fmt: skip
        assert main([*QUICK, "--output", output, "--resume", *arguments]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert contents(output) == before
    assert main([*QUICK, "--output", tmp_path / "empty", "--resume"]) == 2
    assert "holds no checkpoint.pt to continue from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*QUICK, "--output", output, "--resume", "--overwrite"])
    assert "not allowed with argument" in capsys.readouterr().err

    arguments = [*QUICK, "--output", output, "--resume"]
    arguments[arguments.index("--epochs") + 1] = "3"
    assert main(arguments) == 0
    assert "3 epochs" in capsys.readouterr().out
    metrics = json.loads((output / "metrics.json").read_text())
    assert [record["epoch"] for record in metrics["history"]] == [1, 2, 3]
    assert metrics["history"][:2] == json.loads(before["metrics.json"])["history"]
    assert metrics["resumed_from_epoch"] == 2
    assert torch.load(output / "checkpoint.pt", weights_only=True)["epoch"] == 3


class InterruptingLoader:
    """A DataLoader that sends SIGINT to this process while batch ``step`` of epoch ``epoch``
    loads; epoch 0 is the pass in which fit draws a batch to set up the guide."""

    def __init__(self, data, epoch, step):
        self.data, self.at, self.passes = data, (epoch, step), 0

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        self.passes += 1
        for step, batch in enumerate(self.data):
            if (self.passes - 1, step) == self.at:
                # Only under fit's handler: Python's default one would stop the test session.
                assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
                os.kill(os.getpid(), signal.SIGINT)
            yield batch


def test_ctrl_c_writes_a_checkpoint_and_resume_finishes_the_run(
    tmp_path, monkeypatch, capsys, interruptible
):
    output = tmp_path / "run"

    def interrupted_fit(model, guide, data, **kwargs):
        return fit(model, guide, InterruptingLoader(data, epoch=2, step=1), **kwargs)

    monkeypatch.setattr(pyro_bnn.infer, "fit", interrupted_fit)
    assert main([*QUICK, "--output", output]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"pyro-bnn: interrupted at epoch 2, step 1; checkpoint written to {output}/checkpoint.pt; "
        "continue with --resume"
    )
    assert "Traceback" not in err
    assert sorted(p.name for p in output.iterdir()) == ["checkpoint.pt"]
    checkpoint = torch.load(output / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert checkpoint["extra"]["interrupted"] == {"epoch": 2, "step": 1}

    # evaluate says what it looks at; then --resume restarts epoch 2 and finishes the run.
    assert main(["evaluate", "--output", output, "--num-samples", "2"]) == 0
    assert capsys.readouterr().out.startswith(
        "sparse-vd lenet-300-100 on digits, 1 epoch (interrupted in epoch 2 after step 1)\n"
    )
    monkeypatch.undo()
    without_epochs = [arg for arg in QUICK if arg not in ("--epochs", "2")]  # the saved run's 2
    assert main([*without_epochs, "--output", output, "--resume"]) == 0
    assert sorted(p.name for p in output.iterdir()) == [
        "checkpoint.pt",
        "log_alpha_histogram.png",
        "metrics.json",
        "training_curves.png",
        "weight_mask.png",
    ]  # the evaluation of the interrupted checkpoint is stale now
    metrics = json.loads((output / "metrics.json").read_text())
    assert [record["epoch"] for record in metrics["history"]] == [1, 2]
    assert metrics["resumed_from_epoch"] == 1


def test_collapsed_posterior_is_reported_on_stderr(tmp_path, capsys):
    # Variances so large that every weight's log alpha starts above the threshold.
    arguments = [
        "--output",
        tmp_path / "run",
        "--init-log-variance",
        "4",
        "--kl-warmup-epochs",
        "0",
    ]
    assert main([*QUICK, *arguments]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("pyro-bnn: warning: the posterior has collapsed: all 50200 weights ")
    assert err[0].endswith(
        "(on the command line: --kl-warmup-epochs, --pretrain-epochs, --init-log-variance)"
    )
