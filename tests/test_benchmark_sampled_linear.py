"""benchmarks/sampled_linear.py: the smoke runs (tiny shapes, Triton's interpreter) and their
records."""

import json

import pytest
import torch

from .benchmark_scripts import load_benchmark

pytest.importorskip("triton")

sampled_linear = load_benchmark("sampled_linear")


def test_smoke_run_checks_equality_times_every_method_and_records_it(tmp_path, capsys):
    output = tmp_path / "results.jsonl"
    record = sampled_linear.main(["--smoke", "--output", str(output)])
    printed = capsys.readouterr().out
    assert "Equality with the reference given the same noise (2 cases): PASSED" in printed
    assert "| float32 | 8 | 16 -> 8 |" in printed
    (line,) = output.read_text().splitlines()
    saved = json.loads(line)
    assert saved == json.loads(json.dumps(record))
    assert saved["benchmark"] == "sampled_linear" and saved["smoke"] is True
    assert {"command", "date", "machine", "commit"} <= set(saved)
    assert saved["equality"]["passed"]
    timings = saved["timings"]
    assert [row["shape"] for row in timings] == [list(s) for s in sampled_linear.SMOKE_SHAPES]
    for row in timings:
        for method in sampled_linear.METHODS:
            assert row["result"][method]["forward_ms"] > 0
            assert row["result"][method]["forward_backward_peak_mib"] is None  # CPU: no CUDA
        assert row["result"]["forward_backward_fused_over_reference"] > 0


def test_smoke_epoch_trains_through_the_kernel_and_the_reference(capsys):
    record = sampled_linear.main(["--smoke", "--epoch", "--skip-equality"])
    printed = capsys.readouterr().out
    assert "One epoch of sparse-VD LeNet-300-100 on digits" in printed
    assert "(smoke run: nothing recorded)" in printed
    epoch = record["epoch"]
    assert epoch["steps"] == 1 and "equality" not in record and "timings" not in record
    for variant in ("fused", "reference"):
        (loss,) = epoch[variant]["loss"]
        assert torch.isfinite(torch.tensor(loss)) and epoch[variant]["seconds"] > 0
    # Same seed, same batch, same initial parameters: only the noise differs.
    assert epoch["fused"]["loss"][0] == pytest.approx(epoch["reference"]["loss"][0], rel=0.05)


def test_smoke_timing_goes_through_the_kernel(monkeypatch):
    # The fused method must call the kernel, not fall back to the reference on the CPU.
    from pyro_bnn.ops import triton_sampled_linear

    launched = []
    forward = triton_sampled_linear.forward

    def counted(*args, **kwargs):
        launched.append(args[0].shape)
        return forward(*args, **kwargs)

    monkeypatch.setattr(triton_sampled_linear, "forward", counted)
    values = sampled_linear.layer_inputs(4, 6, 3, torch.float32, "cpu", "compression")
    calls = sampled_linear.calls(values)
    calls["reference"]()
    assert launched == []
    calls["fused"]()
    assert launched == [(4, 6)]


def test_bad_options_are_refused(capsys):
    with pytest.raises(SystemExit):
        sampled_linear.parse_arguments(["--batch-size", "0"])
    assert "--batch-size must be a positive integer" in capsys.readouterr().err
