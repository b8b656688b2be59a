"""Pareto k-hat, PSIS-LOO and model comparison on cases with known answers."""

import math

import numpy as np
import pytest
import torch

from pyro_bnn.diagnostics import (
    compare,
    from_svi,
    interval_coverage,
    khat_threshold,
    loo,
    pareto_khat,
)
from pyro_bnn.diagnostics.arviz_compat import arviz_base
from pyro_bnn.infer import fit

from .conftest import NOISE, set_normal_guide


def _ratios_datatree(log_ratios: np.ndarray):
    return arviz_base().from_dict(
        {"sample_stats": {"lp": log_ratios[None], "log_q": np.zeros((1, len(log_ratios)))}}
    )


@pytest.mark.parametrize("shape", [0.3, 0.9])
def test_khat_recovers_the_shape_of_pareto_distributed_ratios(shape):
    # r = U^(-k) for U ~ Uniform(0, 1) is Pareto with tail index 1/k: P(r > t) = t^(-1/k).
    # One estimate from 8000 draws fits ~270 tail draws, a standard error near 0.08; the mean
    # of five independent estimates has one near 0.035.
    estimates = [
        pareto_khat(
            _ratios_datatree(-shape * np.log(np.random.default_rng(seed).uniform(size=8000)))
        )
        for seed in range(5)
    ]
    assert np.mean(estimates) == pytest.approx(shape, abs=0.08)


def test_khat_flags_a_gaussian_proposal_narrower_than_the_target():
    # q = N(0, 0.3^2), p = N(0, 1): log r = z^2 (1 - 0.3^2) / 2 for z ~ N(0, 1), a tail with
    # shape 1 - 0.3^2 = 0.91 up to a slowly varying factor.
    z = np.random.default_rng(0).standard_normal(8000)
    assert pareto_khat(_ratios_datatree(0.5 * (1 - 0.3**2) * z**2)) > 0.7


def test_khat_of_constant_ratios_is_minus_infinity():
    assert pareto_khat(_ratios_datatree(np.full(100, -3.0))) == -math.inf


def test_khat_threshold_follows_the_psis_paper():
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(10**6) == 0.7


def test_khat_separates_a_fitted_guide_from_a_too_narrow_one(conjugate_regression):
    model, guide, x, y, _, _ = conjugate_regression
    # Start away from the posterior and let SVI find it.
    set_normal_guide(guide, "net.weight", torch.zeros(1, 3), torch.full((1, 3), 0.5))
    fit(model, guide, [(x, y)], epochs=1500, lr=0.02, progress=False)
    fitted = pareto_khat(from_svi(model, guide, x, y, num_samples=2000))
    assert fitted < 0.7
    loc = guide.median()["net.weight"]
    set_normal_guide(guide, "net.weight", loc, torch.full((1, 3), 0.3 * 0.0707))
    narrow = pareto_khat(from_svi(model, guide, x, y, num_samples=2000))
    assert narrow > 0.7


def _exact_loo(x, y, noise):
    """sum_i log p(y_i | y_-i) of Bayesian linear regression with a N(0, I) prior."""
    total = 0.0
    for i in range(len(x)):
        keep = torch.arange(len(x)) != i
        xs, ys = x[keep].double(), y[keep].double()
        covariance = torch.linalg.inv(torch.eye(x.shape[1]).double() + xs.T @ xs / noise**2)
        mean = covariance @ xs.T @ ys / noise**2
        xi = x[i].double()
        variance = noise**2 + xi @ covariance @ xi
        total += torch.distributions.Normal(xi @ mean, variance.sqrt()).log_prob(y[i]).item()
    return total


def test_loo_of_the_exact_posterior_matches_the_closed_form(conjugate_regression):
    model, guide, x, y, _, _ = conjugate_regression
    result = loo(from_svi(model, guide, x, y, num_samples=2000))
    assert result.approx_posterior
    assert result.elpd == pytest.approx(_exact_loo(x, y, NOISE), abs=0.3)


def test_compare_ranks_the_exact_posterior_above_a_biased_guide(conjugate_regression):
    model, guide, x, y, mean, std = conjugate_regression
    exact = from_svi(model, guide, x, y, num_samples=1000)
    set_normal_guide(guide, "net.weight", (mean + 0.3)[None], std[None])
    biased = from_svi(model, guide, x, y, num_samples=1000)
    # ArviZ warns about the biased guide's Pareto k: it is four posterior deviations off.
    with pytest.warns(UserWarning, match="shape parameter of Pareto"):
        table = compare({"exact": exact, "biased": biased})
    assert list(table.index) == ["exact", "biased"]
    assert table.loc["exact", "weight"] > 0.5


def test_compare_refuses_one_model_and_different_data(conjugate_regression):
    model, guide, x, y, _, _ = conjugate_regression
    full = from_svi(model, guide, x, y, num_samples=200)
    half = from_svi(model, guide, x[:25], y[:25], num_samples=200)
    with pytest.raises(ValueError, match="at least two"):
        compare({"one": full})
    with pytest.raises(ValueError, match="different numbers of observations"):
        compare({"full": full, "half": half})


def test_importance_diagnostics_need_a_guide_datatree():
    datatree = arviz_base().from_dict({"posterior": {"w": np.zeros((1, 10))}})
    with pytest.raises(ValueError, match="from_svi"):
        pareto_khat(datatree)
    with pytest.raises(ValueError, match="at least 25 draws, got 24"):
        pareto_khat(_ratios_datatree(np.arange(24.0)))


def test_interval_coverage_on_hand_computed_quantiles():
    draws = np.tile(np.arange(100.0)[None, :, None], (1, 1, 4))
    datatree = arviz_base().from_dict(
        {
            "posterior_predictive": {"y": draws},
            "observed_data": {"y": np.array([5, 50, 95, 200.0])},
        },
        dims={"y": ["data"]},
    )
    result = interval_coverage(datatree, probs=(0.5, 0.9))
    # Linear interpolation of 0..99: the 50% interval is [24.75, 74.25], the 90% [4.95, 94.05].
    assert result[0.5] == {"coverage": 0.25, "mean_width": pytest.approx(49.5)}
    assert result[0.9] == {"coverage": 0.5, "mean_width": pytest.approx(89.1)}
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        interval_coverage(datatree, probs=(90,))
    with pytest.raises(ValueError, match="no observed variable 'obs'"):
        interval_coverage(datatree, var_name="obs")


def test_khat_of_an_infinite_ratio_is_infinite_and_nan_is_refused():
    ratios = np.random.default_rng(0).standard_normal(100)
    ratios[3] = np.inf
    assert pareto_khat(_ratios_datatree(ratios)) == math.inf
    ratios[3] = np.nan
    with pytest.raises(ValueError, match="undefined"):
        pareto_khat(_ratios_datatree(ratios))


def test_khat_of_a_tail_beyond_floating_point_is_infinite():
    # Log ratios spread over thousands of nats (a weight guide against a network's full log
    # joint): exp underflows, and a fit of the zeros would report a small k.
    log_ratios = 700.0 * np.random.default_rng(0).standard_normal(200)
    assert pareto_khat(_ratios_datatree(log_ratios)) == math.inf
