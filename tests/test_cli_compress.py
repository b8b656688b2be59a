"""``pyro-bnn train --method <structured>`` and ``pyro-bnn compress RUN_DIR`` on the digits."""

import contextlib
import io
import json
import subprocess
import sys

import pytest
import torch

from pyro_bnn.cli import main
from pyro_bnn.compression import CompressedNetwork
from tests.benchmark_scripts import load_benchmark

# The speed comparison's advisory warnings (memory that glibc did not reuse between passes)
# depend on the machine's state at the moment; tests/compression/test_timing.py tests them.
pytestmark = [
    pytest.mark.filterwarnings("ignore:the steady timing still page-faulted:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:the timing process could not keep:RuntimeWarning"),
]

QUICK = [
    "train", "--data", "digits", "--arch", "lenet-300-100", "--epochs", "2",
    "--train-subset", "256", "--batch-size", "64", "--num-samples", "5", "--quiet",
]  # fmt: skip


def run(arguments):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(arguments)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def l0_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("cli") / "l0"
    # The thesis's "lambda sep." form: one layer's lambda named, the others' given bare.
    code, out, err = run([*QUICK, "--method", "l0", "--penalty", "fc3=2", "--penalty", "0.2",
                          "--output", str(output)])  # fmt: skip
    assert code == 0, err
    return output, out


def test_train_l0_records_the_pruned_network_and_expected_flops(l0_run):
    output, out = l0_run
    assert out.startswith("l0 lenet-300-100 on digits, 2 epochs")
    assert "pruned: error" in out and "architecture 64-300-100 ->" in out
    metrics = json.loads((output / "metrics.json").read_text())
    pruned = metrics["pruned"]
    assert pruned["original_architecture"] == "64-300-100"
    assert metrics["penalty"] == {"fc1": 0.2, "fc2": 0.2, "fc3": 2.0}
    assert len(pruned["bits"].split("-")) == 3
    assert set(pruned["ratios"]) >= {"pruning", "fast_prediction", "maximum_compression"}
    # The expected FLOPs of every epoch, below the dense count (2 per multiply-add).
    dense = 2 * (64 * 300 + 300 * 100 + 100 * 10)
    assert len(metrics["expected_flops"]) == 2
    assert all(0 < flops <= dense + 410 for flops in metrics["expected_flops"])
    assert (output / "group_statistics.png").read_bytes().startswith(b"\x89PNG")


def test_compress_writes_the_exported_network_and_the_rates(l0_run, tmp_path):
    output, _ = l0_run
    code, out, err = run(["compress", str(output), "--speed-repeats", "2", "--speed-batch", "64"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "l0 lenet-300-100 on digits, 2 epochs"
    assert lines[1].startswith("architecture 64-300-100 -> ")
    assert "pruning" in lines[2] and "maximum compression" in lines[2]
    result = json.loads((output / "compression.json").read_text())
    assert set(result["errors"]) == {"pruning", "fast_prediction", "maximum_compression"}
    assert result["speed"]["speed_up"] > 0
    # The exported network runs with plain torch, without Pyro or pyro-bnn.
    script = (
        "import sys; sys.modules['pyro'] = None; sys.modules['pyro_bnn'] = None\n"
        "import torch\n"
        f"net = torch.export.load({str(output / 'compressed.pt2')!r}).module()\n"
        "print(tuple(net(torch.zeros(3, 1, 8, 8)).shape))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "(3, 10)"
    # Its predictions are the pruned network's.
    exported = torch.export.load(str(output / "compressed.pt2")).module()
    assert exported(torch.zeros(5, 1, 8, 8)).shape == (5, 10)


def test_export_speed_benchmark_times_the_saved_program(l0_run, tmp_path, capsys):
    output, _ = l0_run
    benchmark = load_benchmark("export_speed")
    results = tmp_path / "results.jsonl"
    with pytest.raises(FileNotFoundError, match="no compression.json"):
        benchmark.main([str(tmp_path), "--output", str(results)])
    code, _, err = run(["compress", str(output), "--speed-repeats", "1", "--speed-batch", "8"])
    assert code == 0, err
    capsys.readouterr()
    benchmark.main([str(output), "--repeats", "2", "--batch", "16", "--output", str(results)])
    architecture = json.loads((output / "compression.json").read_text())["architecture"]
    assert f"| {output} | {architecture} |" in capsys.readouterr().out
    (record,) = map(json.loads, results.read_text().splitlines())
    assert record["benchmark"] == "export_speed" and record["command"].startswith("python")
    (row,) = record["runs"]
    assert (row["speed"]["batch"], row["speed"]["repeats"], row["speed"]["threads"]) == (16, 2, 1)
    assert row["speed"]["speed_up"] > 0 and row["architecture"] == architecture


def test_compress_trains_the_codebooks_on_request(l0_run, monkeypatch):
    output, _ = l0_run
    histories = []
    train = CompressedNetwork.train_codebooks

    def recorded(self, data, *args, **kwargs):
        # Only the images the run trained on (--train-subset 256), not the held-out rest.
        assert len(data.dataset) == 256
        histories.append(train(self, data, *args, **kwargs))
        return histories[-1]

    monkeypatch.setattr(CompressedNetwork, "train_codebooks", recorded)
    code, out, err = run(["compress", str(output), "--codebook-epochs", "2",
                          "--speed-repeats", "1", "--speed-batch", "8"])  # fmt: skip
    assert code == 0, err
    # The learning rate decays linearly over the epochs.
    assert [record["lr"] for record in histories[0]] == pytest.approx([1e-3, 5e-4])
    result = json.loads((output / "compression.json").read_text())
    assert result["codebook_epochs"] == 2
    errors = result["errors"]
    assert set(errors) == {"pruning", "fast_prediction", "maximum_compression",
                           "maximum_compression_kmeans"}  # fmt: skip
    assert all(0 <= value <= 1 for value in errors.values())
    assert "after 2 epochs of centre training" in out


@pytest.mark.parametrize("method", ["group-nj", "group-horseshoe", "spike-and-slab", "sbp"])
def test_every_structured_method_trains_and_compresses(method, tmp_path):
    output = tmp_path / method
    code, out, err = run([*QUICK, "--epochs", "1", "--method", method, "--output", str(output)])
    assert code == 0, err
    assert out.startswith(f"{method} lenet-300-100 on digits, 1 epoch")
    code, out, err = run(["compress", str(output), "--speed-repeats", "1", "--speed-batch", "8"])
    assert code == 0, err
    assert (output / "compressed.pt2").exists()


def test_evaluate_a_structured_run(l0_run, capsys):
    output, _ = l0_run
    assert main(["evaluate", "--output", str(output), "--num-samples", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("l0 lenet-300-100 on digits, 2 epochs")
    assert "pruned: error" in out


def test_compress_refuses_bad_input(l0_run, tmp_path):
    code, _, err = run(["compress", str(tmp_path / "nothing")])
    assert code == 2 and "holds no run" in err
    deterministic = tmp_path / "deterministic"
    code, _, err = run([*QUICK, "--epochs", "1", "--method", "deterministic", "--output",
                        str(deterministic)])  # fmt: skip
    assert code == 0, err
    code, _, err = run(["compress", str(deterministic)])
    assert code == 2 and "has no posterior to prune by" in err
    output, _ = l0_run

    def saved():
        path = output / "compression.json"
        return path.read_bytes() if path.exists() else None

    before = saved()
    code, _, err = run(["compress", str(output), "--threshold", "2"])
    assert code == 2 and "test-time gate in [0, 1)" in err
    after = saved()
    assert before == after
    code, _, err = run(["compress", str(output), "--speed-batch", "0"])
    assert code == 2 and "--speed-batch must be at least 1" in err
    code, _, err = run(["compress", str(output), "--codebook-epochs", "-1"])
    assert code == 2 and "--codebook-epochs must be at least 0" in err
    assert saved() == after


def test_compress_chooses_the_threshold_on_the_held_out_images(l0_run):
    output, _ = l0_run
    code, out, err = run(["compress", str(output), "--choose-threshold", "0", "0.5", "0.9",
                          "--speed-repeats", "1", "--speed-batch", "8"])  # fmt: skip
    assert code == 0, err
    result = json.loads((output / "compression.json").read_text())
    choice = result["threshold_choice"]
    # The run trained on the first 256 of the digits' 1348 training images; the rest decide.
    assert choice["num_held_out"] == 1348 - 256 and choice["rule"] == "one standard error"
    assert [row["threshold"] for row in choice["candidates"]] == [0.0, 0.5, 0.9]
    assert result["threshold"] == choice["threshold"] in (0.0, 0.5, 0.9)
    assert f"threshold {choice['threshold']:g} chosen on 1092 held-out examples" in out


def test_compress_refuses_a_threshold_choice_without_held_out_images(l0_run, tmp_path):
    output, _ = l0_run
    result = output / "compression.json"
    before = result.read_bytes() if result.exists() else None
    code, _, err = run(["compress", str(output), "--choose-threshold", "0.5", "--threshold", "0"])
    assert code == 2 and "--threshold or --choose-threshold, not both" in err
    code, _, err = run(["compress", str(output), "--choose-threshold", "0.5", "nan"])
    assert code == 2 and "--choose-threshold takes finite thresholds" in err
    code, _, err = run(["compress", str(output), "--choose-threshold", "0.5", "2"])
    assert code == 2 and "candidate threshold 2: " in err and "test-time gate in [0, 1)" in err
    assert (result.read_bytes() if result.exists() else None) == before
    everything = tmp_path / "all"
    arguments = [*QUICK, "--epochs", "1", "--output", str(everything)]
    arguments.remove("--train-subset")
    arguments.remove("256")
    code, _, err = run(arguments)
    assert code == 0, err
    code, _, err = run(["compress", str(everything), "--choose-threshold", "2", "3"])
    assert code == 2 and "it trained on all 1348: train with --train-subset N" in err
    assert not (everything / "compression.json").exists()
