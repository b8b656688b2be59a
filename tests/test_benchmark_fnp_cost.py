"""benchmarks/fnp_cost.py: a tiny run of every step, its record and its table."""

import json

import pytest
import torch

from .benchmark_scripts import load_benchmark

fnp_cost = load_benchmark("fnp_cost")


def test_smoke_run_times_every_step_and_records_it(tmp_path, capsys):
    threads = torch.get_num_threads()
    output = tmp_path / "results.jsonl"
    record = fnp_cost.main(["--smoke", "--threads", "1", "--repeats", "3", "--output", str(output)])
    assert torch.get_num_threads() == threads  # restored
    printed = capsys.readouterr().out
    assert "| deterministic | 10 |" in printed and "| fnp-plus-graph | 0 |" in printed
    assert "Target (an FNP step <= 3x the deterministic step): " in printed
    assert "Profile of one fnp-graph step" in printed
    (line,) = output.read_text().splitlines()
    saved = json.loads(line)
    assert saved == json.loads(json.dumps(record))
    assert saved["benchmark"] == "fnp_cost" and saved["smoke"] is True
    assert {"command", "date", "machine", "commit"} <= set(saved)
    assert saved["settings"]["reference_size"] == 20 and saved["settings"]["batch_size"] == 10
    assert set(saved["median_ms"]) == set(fnp_cost.KINDS)
    assert all(len(times) == 3 for times in saved["times_ms"].values())
    assert saved["ratio_to_deterministic"]["deterministic"] == pytest.approx(1.0)
    assert saved["target_holds"] == {
        name: saved["ratio_to_deterministic"][name] <= 3 for name in fnp_cost.FNP_KINDS
    }
    assert saved["settings"]["reference_gradient_size"] == 5
    assert "| fnp-partial | 30 (15 differentiated) |" in printed
    assert "through 5 random points of R (reference_gradient_size)" in printed
    assert saved["settings"]["reference_subsample_size"] == 8
    assert "| fnp-plus-subsampled | 18 |" in printed
    assert "on 8 random points of R per step (reference_subsample_size, biased)" in printed
    # A ratio of two medians of three noisy timings: under load the torso alone can time
    # slower than the whole step, so only its sign and finiteness are checked.
    assert 0 < saved["breakdown"]["fnp"]["torso_share"] < float("inf")
    top = saved["graph_profile"]["top_operators_ms"]
    assert 0 < len(top) <= fnp_cost.TOP_OPERATORS and all(
        name.startswith("aten::") for name, _ in top
    )
    assert sum(ms for _, ms in top) <= saved["graph_profile"]["aten_self_ms"] + 1e-9


def test_smoke_run_records_nothing_by_default(capsys):
    fnp_cost.main(["--smoke", "--threads", "1", "--repeats", "1", "--warmup", "0"])
    assert "(smoke run: nothing recorded)" in capsys.readouterr().out


def test_torso_is_lenet5_up_to_its_500_unit_layer():
    torso = fnp_cost.lenet_torso()
    assert torso(torch.zeros(2, 1, 28, 28)).shape == (2, 500)
    assert [name for name, _ in torso.named_children()][-2:] == ["fc1", "relu3"]


def test_bad_options_are_refused(capsys):
    with pytest.raises(SystemExit):
        fnp_cost.parse_arguments(["--reference-size", "0"])
    assert "--reference-size must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fnp_cost.parse_arguments(["--reference-gradient-size", "0"])
    assert "--reference-gradient-size must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fnp_cost.parse_arguments(["--reference-subsample-size", "0"])
    assert "--reference-subsample-size must be a positive integer" in capsys.readouterr().err
