"""``pyro-bnn train --method fnp|fnp+`` on a toy regression and on the digits."""

import json

import pytest

from .test_cli_compress import (
    pytestmark,  # noqa: F401  (the timing warnings' filters)
    run,
)


@pytest.fixture(scope="module")
def cubic_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("cli") / "fnp-cubic"
    arguments = ["train", "--method", "fnp", "--data", "toy-cubic", "--epochs", "40",
                 "--num-samples", "20", "--quiet", "--output", str(output)]  # fmt: skip
    code, out, err = run(arguments)
    assert code == 0, err
    return output, out


def test_fnp_on_the_cubic_task_writes_metrics_bands_and_a_checkpoint(cubic_run):
    output, out = cubic_run
    lines = out.splitlines()
    assert lines[0].startswith("fnp mlp-100 on toy-cubic, 40 epochs")
    assert lines[1].startswith("test RMSE ")
    metrics = json.loads((output / "metrics.json").read_text())
    assert (metrics["dim_u"], metrics["dim_z"], metrics["reference_size"]) == (3, 10, 10)
    assert metrics["test"]["rmse"] > 0 and len(metrics["history"]) == 40
    for figure in ("predictive_bands.png", "training_curves.png"):
        assert (output / figure).read_bytes().startswith(b"\x89PNG")
    code, out, err = run(["evaluate", "--output", str(output), "--num-samples", "10"])
    assert code == 0, err
    assert "test RMSE" in out
    assert json.loads((output / "evaluation.json").read_text())["num_samples"] == 10


def test_fnp_plus_on_the_digits(tmp_path):
    output = tmp_path / "fnp-plus"
    arguments = ["train", "--method", "fnp+", "--data", "digits", "--epochs", "1",
                 "--train-subset", "200", "--reference-size", "30", "--dim-u", "4", "--dim-z",
                 "8", "--reference-gradient-size", "10", "--reference-subsample-size", "20",
                 "--num-samples", "5", "--quiet",
                 "--output", str(output)]  # fmt: skip
    code, out, err = run(arguments)
    assert code == 0, err
    assert out.startswith("fnp+ lenet-300-100 on digits, 1 epoch")
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["reference_size"] == 30 and 0 <= metrics["test"]["error"] <= 1
    assert metrics["reference_gradient_size"] == 10
    assert metrics["reference_subsample_size"] == 20


def test_fnp_runs_refuse_what_does_not_apply(cubic_run, tmp_path):
    output, _ = cubic_run
    for command in ("compress", "diagnose"):
        code, _, err = run([command, str(output)])
        assert code == 2 and "no weight posterior" in err
    code, _, err = run(["train", "--method", "sparse-vd", "--data", "toy-cubic",
                        "--output", str(tmp_path / "a")])  # fmt: skip
    assert code == 2 and "only --method fnp and fnp+" in err
    code, _, err = run(["train", "--method", "sparse-vd", "--reference-size", "5",
                        "--output", str(tmp_path / "b")])  # fmt: skip
    assert code == 2 and "--reference-size applies to --method fnp and fnp+ only" in err
    code, _, err = run(["train", "--method", "fnp", "--reference-gradient-size", "0",
                        "--output", str(tmp_path / "d")])  # fmt: skip
    assert code == 2 and "--reference-gradient-size must be at least 1, got 0" in err
    assert not (tmp_path / "d").exists()
    code, _, err = run(["train", "--method", "fnp+", "--reference-subsample-size", "-3",
                        "--output", str(tmp_path / "e")])  # fmt: skip
    assert code == 2 and "--reference-subsample-size must be at least 1, got -3" in err
    assert not (tmp_path / "e").exists()
    code, _, err = run(["train", "--method", "fnp", "--data", "toy-cubic", "--reference-size",
                        "20", "--output", str(tmp_path / "c")])  # fmt: skip
    assert code == 2 and "leaves none of the 20 training points" in err
    assert not (tmp_path / "c").exists()
