"""``pyro-bnn diagnose RUN_DIR`` on a short sparse-VD run on the digits."""

import json

import pytest
import xarray as xr

from .test_cli_compress import QUICK, run


@pytest.fixture(scope="module")
def sparse_vd_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("cli") / "sparse-vd"
    code, _, err = run([*QUICK, "--method", "sparse-vd", "--output", str(output)])
    assert code == 0, err
    return output


def test_diagnose_writes_the_datatree_summary_and_figures(sparse_vd_run):
    arguments = ["diagnose", str(sparse_vd_run), "--num-samples", "30", "--num-observations",
                 "100", "--num-out-of-distribution", "50", "--max-entries", "500"]  # fmt: skip
    code, out, err = run(arguments)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "sparse-vd lenet-300-100 on digits, 2 epochs; 30 draws on 100 training examples"
    )
    assert lines[1].startswith("Pareto k-hat of the importance ratios")
    report = json.loads((sparse_vd_run / "diagnostics.json").read_text())
    assert report["command"] == "pyro-bnn " + " ".join(arguments)
    assert report["num_samples"] == 30 and report["num_observations"] == 100
    assert report["khat_threshold"] == pytest.approx(1 - 1 / 1.4771, abs=1e-3)
    assert 0 <= report["out_of_distribution"]["entropy_auroc"] <= 1
    # Both PSIS-LOO estimates are recorded; each is a number or null with its reason.
    for key in ("loo", "loo_draws_as_posterior"):
        assert report[key]["elpd"] is None or report[key]["elpd"] < 0
    datatree = xr.open_datatree(sparse_vd_run / "posterior.nc", engine="h5netcdf")
    assert datatree["log_likelihood"]["obs"].shape == (1, 30, 100)
    # fc1 (300 x 64) is thinned to at most 500 entries; fc3 (10 x 100) too; nothing is lost
    # from the observations.
    assert datatree["posterior"]["net.fc1.weight"].size <= 30 * 500
    assert (sparse_vd_run / "summary.csv").read_text().startswith(",mean,sd")
    for figure in ("reliability_diagram.png", "entropy_in_vs_out.png", "log_alpha_histogram.png"):
        assert (sparse_vd_run / figure).read_bytes().startswith(b"\x89PNG")
    assert not [path.name for path in sparse_vd_run.iterdir() if path.name.startswith(".")]


def test_diagnose_refuses_bad_input(sparse_vd_run, tmp_path):
    code, _, err = run(["diagnose", str(tmp_path)])
    assert code == 2 and "there is no checkpoint.pt" in err
    code, _, err = run(["diagnose", str(sparse_vd_run), "--num-samples", "0"])
    assert code == 2 and "--num-samples must be at least 1" in err
