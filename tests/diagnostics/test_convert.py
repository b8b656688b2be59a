"""The DataTree converters: groups, dims, values equal to Pyro's own, round trips, bad input."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from pyro import poutine
from pyro.infer import MCMC, NUTS
from torch import nn

from pyro_bnn.diagnostics import arviz_compat, from_mcmc, from_svi, pareto_khat, rhat, summary
from pyro_bnn.guides import AutoSiteGuide
from pyro_bnn.models import (
    BayesianNetwork,
    CategoricalLikelihood,
    GaussianLikelihood,
    normal_prior,
    structured_prior,
)

from .conftest import NOISE


def _site_values(datatree, chain: int, draw: int) -> dict[str, torch.Tensor]:
    posterior = datatree["posterior"]
    return {
        name: torch.as_tensor(posterior[name].values[chain, draw], dtype=torch.float32)
        for name in posterior.data_vars
    }


def test_svi_groups_and_values_match_pyro_traces(conjugate_regression):
    model, guide, x, y, mean, std = conjugate_regression
    datatree = from_svi(model, guide, x, y, num_samples=300)
    assert set(datatree.children) == {
        "posterior", "posterior_predictive", "log_likelihood", "observed_data", "sample_stats"
    }  # fmt: skip
    weight = datatree["posterior"]["net.weight"]
    assert weight.dims == ("chain", "draw", "net.output", "net.input")
    assert weight.shape == (1, 300, 1, 3)
    assert datatree["log_likelihood"]["obs"].dims == ("chain", "draw", "data")
    np.testing.assert_array_equal(datatree["observed_data"]["obs"].values, y.numpy())
    # The draws follow the guide: here the exact posterior.
    np.testing.assert_allclose(weight.mean(("chain", "draw")).values[0], mean, atol=4 * 0.0707 / 17)
    np.testing.assert_allclose(weight.std(("chain", "draw")).values[0], std, rtol=0.15)
    for draw in (0, 7, 299):
        values = _site_values(datatree, 0, draw)
        with torch.no_grad():
            trace = poutine.trace(poutine.condition(model, data=values)).get_trace(x, y)
            trace.compute_log_prob()
        log_likelihood = datatree["log_likelihood"]["obs"].values[0, draw]
        np.testing.assert_allclose(log_likelihood, trace.nodes["obs"]["log_prob"], rtol=1e-5)
        assert log_likelihood.sum() == pytest.approx(
            trace.nodes["obs"]["log_prob_sum"].item(), rel=1e-5
        )
        assert datatree["sample_stats"]["lp"].values[0, draw] == pytest.approx(
            trace.log_prob_sum().item(), rel=1e-5
        )
        # log q by hand: the guide is N(mean, std^2) per weight.
        log_q = dist.Normal(mean, std).log_prob(values["net.weight"][0]).sum().item()
        assert datatree["sample_stats"]["log_q"].values[0, draw] == pytest.approx(log_q, rel=1e-4)


def test_posterior_predictive_draws_from_the_likelihood(conjugate_regression):
    model, guide, x, y, _, _ = conjugate_regression
    datatree = from_svi(model, guide, x, y, num_samples=400)
    predictive = datatree["posterior_predictive"]["obs"]
    weights = datatree["posterior"]["net.weight"].values[0, :, 0]  # (S, 3)
    means = weights @ x.numpy().T  # (S, N)
    residual = predictive.values[0] - means
    assert residual.std() == pytest.approx(NOISE, rel=0.05)
    assert abs(residual.mean()) < 0.02


def test_round_trip_through_netcdf(conjugate_regression, tmp_path):
    model, guide, x, y, _, _ = conjugate_regression
    datatree = from_svi(model, guide, x, y, num_samples=50)
    path = tmp_path / "posterior.nc"
    datatree.to_netcdf(path, engine="h5netcdf")
    read = xr.open_datatree(path, engine="h5netcdf").load()
    for group in datatree.children:
        xr.testing.assert_identical(read[group].to_dataset(), datatree[group].to_dataset())


def _classifier(prior):
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 5), nn.ReLU(),
        nn.Linear(5, 3),
    )  # fmt: skip
    return BayesianNetwork(net, CategoricalLikelihood(12, 3), prior=prior)


def test_dims_are_named_from_layers_and_groups_share_them():
    x, y = torch.randn(12, 1, 6, 6), torch.arange(12) % 3
    model = _classifier(structured_prior("group-nj"))
    guide = AutoSiteGuide(model)
    guide(x, y)
    posterior = from_svi(model, guide, x, y, num_samples=4)["posterior"]
    assert posterior["net.0.weight"].dims[2:] == (
        "net.0.output_channel", "net.0.input_channel", "net.0.kernel_height",
        "net.0.kernel_width",
    )  # fmt: skip
    # Groups: output channels of a convolution, input neurons of a linear layer.
    assert posterior["net.0.weight.group_scale"].dims[2:] == ("net.0.output_channel",)
    assert posterior["net.3.weight.group_scale"].dims[2:] == ("net.3.input",)
    assert posterior["net.5.weight"].dims[2:] == ("net.5.output", "net.5.input")
    assert posterior.sizes["net.3.input"] == 32


def test_var_names_and_large_sites():
    x, y = torch.randn(12, 1, 6, 6), torch.arange(12) % 3
    model = _classifier(normal_prior())
    guide = AutoSiteGuide(model)
    guide(x, y)
    selected = from_svi(model, guide, x, y, num_samples=3, var_names=["net.5.weight"])
    assert list(selected["posterior"].data_vars) == ["net.5.weight"]
    thinned = from_svi(model, guide, x, y, num_samples=3, max_entries=48)["posterior"]
    weight = thinned["net.3.weight"]  # 5 x 32 = 160 entries: every second row and column
    assert weight.dims[2:] == ("net.3.output_thinned_2", "net.3.input_thinned_2")
    np.testing.assert_array_equal(weight["net.3.input_thinned_2"].values, np.arange(0, 32, 2))
    assert thinned["net.5.weight"].dims[2:] == ("net.5.output", "net.5.input")  # 15 entries
    norms = from_svi(model, guide, x, y, num_samples=3, max_entries=48, large="norm")
    assert norms["posterior"]["net.3.weight.norm"].dims[2:] == ("net.3.output",)


def test_singleton_dims_of_plates_are_dropped_and_other_models_get_default_dims():
    def model(y):
        with pyro.plate("groups", 4, dim=-2):
            mu = pyro.sample("mu", dist.Normal(0.0, 1.0))  # shape (4, 1)
        with pyro.plate("groups_again", 4, dim=-2), pyro.plate("data", 3, dim=-1):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

    guide = pyro.infer.autoguide.AutoNormal(model)
    y = torch.randn(4, 3)
    guide(y)
    datatree = from_svi(model, guide, y, num_samples=5)
    assert datatree["posterior"]["mu"].dims == ("chain", "draw", "groups")
    assert datatree["log_likelihood"]["obs"].dims == ("chain", "draw", "groups_again", "data")


def _mcmc(x, y, chains=2):
    model = BayesianNetwork(
        nn.Linear(3, 1), GaussianLikelihood(len(x), scale=NOISE), prior=normal_prior(1.0),
        include_bias=True,
    )  # fmt: skip
    with warnings.catch_warnings():
        # On a machine with fewer free cores than chains Pyro warns it runs them in turn.
        warnings.filterwarnings("ignore", message="num_chains=")
        mcmc = MCMC(NUTS(model), num_samples=60, warmup_steps=60, num_chains=chains,
                    disable_progbar=True)  # fmt: skip
        mcmc.run(x, y)
    return model, mcmc


def test_mcmc_keeps_chains_and_matches_pyro_traces(conjugate_regression):
    _, _, x, y, _, _ = conjugate_regression
    model, mcmc = _mcmc(x, y)
    datatree = from_mcmc(mcmc)
    assert datatree["posterior"]["net.weight"].shape == (2, 60, 1, 3)
    assert datatree["posterior"]["net.bias"].dims == ("chain", "draw", "net.output")
    assert datatree["sample_stats"]["diverging"].dtype == bool
    samples = mcmc.get_samples(group_by_chain=True)
    np.testing.assert_allclose(
        datatree["posterior"]["net.weight"].values, samples["net.weight"].double().numpy()
    )
    values = {name: value[1, 5] for name, value in samples.items()}
    with torch.no_grad():
        trace = poutine.trace(poutine.condition(model, data=values)).get_trace(x, y)
    np.testing.assert_allclose(
        datatree["sample_stats"]["lp"].values[1, 5], trace.log_prob_sum().item(), rtol=1e-5
    )
    table = summary(datatree)
    assert {"ess_bulk", "r_hat"} <= set(table.columns)
    assert float(rhat(datatree)["net.weight"].max()) < 1.1


def test_bad_input_gets_clear_errors(conjugate_regression):
    model, guide, x, y, _, _ = conjugate_regression
    with pytest.raises(ValueError, match=r"no latent or deterministic site 'net.fc9.weight'"):
        from_svi(model, guide, x, y, num_samples=2, var_names=["net.fc9.weight"])
    with pytest.raises(ValueError, match="observed nothing"):
        from_svi(model, guide, x, num_samples=2)
    with pytest.raises(ValueError, match="rows"):
        from_svi(model, guide, x, y[:-1], num_samples=2)
    with pytest.raises(ValueError, match="NaN"):
        from_svi(model, guide, x, torch.full_like(y, float("nan")), num_samples=2)
    with pytest.raises(ValueError, match="large must be one of"):
        from_svi(model, guide, x, y, num_samples=2, large="drop")
    with pytest.raises(ValueError, match="num_samples"):
        from_svi(model, guide, x, y, num_samples=0)
    untrained = AutoSiteGuide(model)
    with pytest.raises(RuntimeError, match="has not seen the model"):
        from_svi(model, untrained, x, y, num_samples=2)
    mcmc = MCMC(NUTS(model), num_samples=2, warmup_steps=2, disable_progbar=True)
    with pytest.raises(RuntimeError, match="call mcmc.run first"):
        from_mcmc(mcmc)


def test_missing_arviz_says_which_extra_to_install(monkeypatch):
    real_import = arviz_compat.importlib.import_module

    def refuse(name, *args):
        if name.startswith("arviz"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(arviz_compat.importlib, "import_module", refuse)
    with pytest.raises(ImportError, match=r"pyro-bnn\[diagnostics\]"):
        arviz_compat.arviz_base()


@pytest.mark.parametrize("family", ["normal", "matrix_normal", "multiplicative_flow"])
def test_every_weight_guide_converts(family):
    x, y = torch.randn(20, 3), torch.randn(20)
    model = BayesianNetwork(
        nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)), GaussianLikelihood(20),
        prior=normal_prior(),
    )  # fmt: skip
    guide = AutoSiteGuide(model, families={"net.*": family})
    guide(x, y)
    datatree = from_svi(model, guide, x, y, num_samples=5)
    # The flow's auxiliary noise is the guide's, not the model's: not in the posterior.
    assert list(datatree["posterior"].data_vars) == ["net.0.weight", "net.2.weight"]
    assert np.isfinite(datatree["sample_stats"]["log_q"].values).all()


def test_a_draw_at_the_pole_of_an_improper_prior_is_reported():
    x, y = torch.randn(20, 3), torch.randn(20)
    model = BayesianNetwork(nn.Linear(3, 1), GaussianLikelihood(20))  # log-uniform prior
    # A point mass at 0: the log-uniform density -log|w| is +inf there.
    guide = AutoSiteGuide(
        model, families={"net.weight": "delta"}, pretrained={"net.weight": torch.zeros(1, 3)}
    )
    guide(x, y)
    with pytest.warns(UserWarning, match="30 of 30 draws have an infinite or undefined log joint"):
        datatree = from_svi(model, guide, x, y, num_samples=30)
    assert pareto_khat(datatree) == float("inf")
