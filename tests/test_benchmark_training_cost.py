"""benchmarks/training_cost.py: the three hand-written estimators agree, and a smoke run."""

import json

import pyro
import pytest
import torch

from pyro_bnn.models import lenet_300_100

from .benchmark_scripts import load_benchmark

training_cost = load_benchmark("training_cost")


def test_bare_pyro_program_is_the_eager_estimator():
    # Same means, log-variances, biases and noise: the same negative ELBO and gradients.
    torch.manual_seed(0)
    x, y = torch.randn(16, 784), torch.randint(0, 10, (16,))
    eager = training_cost.EagerSparseVD(lenet_300_100())
    with pyro.get_param_store().scope():
        bare = training_cost.BarePyroSparseVD(lenet_300_100(), num_data=1000)
        for name in eager.means:
            with torch.no_grad():
                eager.means[name].normal_()
                eager.log_variances[name].uniform_(-6.0, -2.0)
                pyro.param(f"bare.{name}.loc").copy_(eager.means[name])
                pyro.param(f"bare.{name}.log_variance").copy_(eager.log_variances[name])
                pyro.param(f"bare.{name}.bias").copy_(getattr(eager.net, name).bias)
        torch.manual_seed(1)
        eager_loss = eager.negative_elbo(x, y, num_data=1000)
        torch.manual_seed(1)
        bare_loss = bare.elbo.differentiable_loss(bare.model, bare.guide, x, y)
        assert bare_loss.item() == pytest.approx(eager_loss.item(), rel=1e-5)
        eager_loss.backward()
        bare_loss.backward()
        for name in eager.means:
            for kind, expected in (
                ("loc", eager.means[name].grad),
                ("log_variance", eager.log_variances[name].grad),
                ("bias", getattr(eager.net, name).bias.grad),
            ):
                got = pyro.param(f"bare.{name}.{kind}").unconstrained().grad
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_smoke_run_times_every_kind_of_epoch_and_records_it(tmp_path, capsys):
    threads = torch.get_num_threads()
    output = tmp_path / "results.jsonl"
    with pyro.get_param_store().scope():
        (record,) = training_cost.main(
            ["--smoke", "--epochs", "1", "--batch-size", "512", "--threads", "1",
             "--output", str(output)]
        )  # fmt: skip
    assert torch.get_num_threads() == threads  # restored
    (line,) = output.read_text().splitlines()
    saved = json.loads(line)
    assert saved == json.loads(json.dumps(record))
    assert saved["benchmark"] == "training_cost" and saved["smoke"] is True
    assert {"command", "date", "machine", "commit"} <= set(saved)
    for kind in ("plain", "eager", "bare_pyro", "svi"):
        (seconds,) = saved[f"{kind}_epoch_seconds"]
        assert seconds > 0
    assert saved["ratio_svi_over_bare_pyro_paired_median"] == pytest.approx(
        saved["svi_epoch_seconds"][0] / saved["bare_pyro_epoch_seconds"][0]
    )
    assert "(smoke run" not in capsys.readouterr().out


def test_no_epochs_is_refused_before_anything_runs(tmp_path, capsys):
    threads = torch.get_num_threads()
    output = tmp_path / "results.jsonl"
    with pytest.raises(SystemExit):
        training_cost.main(["--epochs", "0", "--threads", "1", "--output", str(output)])
    assert "--epochs must be at least 1" in capsys.readouterr().err
    assert not output.exists() and torch.get_num_threads() == threads
