"""Every registered KL divergence against an independent Monte Carlo estimate."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.special
import scipy.stats
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence

from pyro_bnn.distributions import (
    HardConcrete,
    ImproperLogUniform,
    L0Prior,
    LogUniform,
    ScaleMixtureNormal,
    SpikeAndSlab,
    TruncatedLogNormal,
    sparse_vd_kl,
)
from pyro_bnn.distributions.kl import (
    LOG_ALPHA_RANGE,
    LOG_UNIFORM_KL_OFFSET,
    SPARSE_VD_KL_MAX_ERROR,
)

from .dist_fixtures import FACTOR_KINDS, as_multivariate_normal, random_matrix_normal, random_tril

NUM_SAMPLES = 200_000


def monte_carlo_kl(p, q, num_samples=NUM_SAMPLES, offset=0.0):
    """Mean and standard error of log p(x) - log q(x) over x ~ p."""
    x = p.sample((num_samples,))
    log_ratio = p.log_prob(x) - q.log_prob(x) + offset
    return log_ratio.mean(0), log_ratio.std(0) / math.sqrt(num_samples)


def assert_within_3_se(analytic, p, q, extra_tolerance=0.0, **kwargs):
    mc, se = monte_carlo_kl(p, q, **kwargs)
    assert analytic.shape == mc.shape
    # The small absolute term covers float64 round-off where p == q makes se = 0.
    bound = 3 * se + extra_tolerance + 1e-9 * (1 + mc.abs())
    excess = (analytic - mc).abs() - bound
    assert (excess <= 0).all(), f"analytic {analytic}\nmonte carlo {mc}\nse {se}"


# --------------------------------------------------------------------------------------
# Normal vs the scale-invariant log-uniform prior (sparse variational dropout)


def exact_log_uniform_kl(log_alpha: float) -> float:
    """
    The exact KL from N(mu, alpha mu^2) to p(w) ~ 1/|w|, normalized to vanish as
    alpha -> inf: KL = -log(alpha)/2 + E log|1 + sqrt(alpha) eps| + (gamma + log 2)/2.
    With m^2 = 1/alpha, (1 + sqrt(alpha) eps)^2 / alpha is noncentral chi^2(1, m^2),
    whose expected log is log 2 + sum_j Poisson(j; m^2/2) digamma(1/2 + j).
    """
    half_noncentrality = 0.5 * math.exp(-log_alpha)
    j = np.arange(int(half_noncentrality + 40 * math.sqrt(half_noncentrality) + 200))
    weights = scipy.stats.poisson.pmf(j, half_noncentrality)
    expected_log = math.log(2) + np.sum(weights * scipy.special.digamma(0.5 + j))
    return 0.5 * expected_log + 0.5 * (np.euler_gamma + math.log(2))


LOG_ALPHA_GRID = torch.arange(-8.0, 8.5, 1.0, dtype=torch.float64)


def _sparse_vd_pair(log_alpha, loc=1.0):
    p = dist.Normal(torch.full_like(log_alpha, loc), abs(loc) * (0.5 * log_alpha).exp())
    return p, ImproperLogUniform(log_alpha.shape)


def test_exact_log_uniform_kl_matches_monte_carlo():
    # Validates the reference itself, the prior's log_prob and the documented offset.
    p, q = _sparse_vd_pair(LOG_ALPHA_GRID)
    exact = torch.tensor(
        [exact_log_uniform_kl(a) for a in LOG_ALPHA_GRID.tolist()], dtype=torch.float64
    )
    assert_within_3_se(exact, p, q, offset=LOG_UNIFORM_KL_OFFSET)


def test_sparse_vd_kl_matches_monte_carlo():
    # The registered KL is the sparse-VD approximation: it agrees with Monte Carlo up
    # to 3 standard errors plus the approximation's own (documented) error.
    p, q = _sparse_vd_pair(LOG_ALPHA_GRID, loc=-0.3)
    analytic = kl_divergence(p, q)
    assert_within_3_se(
        analytic, p, q, extra_tolerance=SPARSE_VD_KL_MAX_ERROR, offset=LOG_UNIFORM_KL_OFFSET
    )


def test_sparse_vd_kl_error_bound_is_tight():
    grid = np.linspace(*LOG_ALPHA_RANGE, 401)
    exact = np.array([exact_log_uniform_kl(a) for a in grid])
    approx = sparse_vd_kl(torch.tensor(grid)).numpy()
    error = np.abs(approx - exact)
    assert error.max() <= SPARSE_VD_KL_MAX_ERROR
    assert error.max() >= 0.9 * SPARSE_VD_KL_MAX_ERROR


def test_sparse_vd_kl_sign_and_limits():
    # Thesis Eq. 81 prints -KL; the KL itself is positive, decreasing in alpha, tends
    # to 0 as alpha -> inf and to k1 - log(alpha)/2 as alpha -> 0.
    log_alpha = torch.linspace(-10, 10, 201, dtype=torch.float64)
    kl = sparse_vd_kl(log_alpha)
    assert (kl > 0).all()
    assert (kl.diff() < 0).all()
    assert kl[-1] < 1e-4
    assert kl[0] == pytest.approx(0.63576 + 5.0, abs=1e-4)


def test_sparse_vd_kl_depends_only_on_alpha_and_clamps():
    scale = torch.tensor([0.1, 2.0, 30.0], dtype=torch.float64)
    kls = kl_divergence(dist.Normal(0.7 * scale, 0.2 * scale), ImproperLogUniform((3,)))
    assert torch.allclose(kls, kls[0].expand(3))
    low, high = LOG_ALPHA_RANGE
    assert sparse_vd_kl(torch.tensor(low - 5.0)) == sparse_vd_kl(torch.tensor(low))
    assert sparse_vd_kl(torch.tensor(high + 5.0)) == sparse_vd_kl(torch.tensor(high))


def test_sparse_vd_kl_gradient_is_finite_at_zero_mean():
    # Means of exactly zero (log alpha = inf) are clamped and get a zero gradient;
    # inside the clamp range the gradient pushes the mean towards zero.
    loc = torch.tensor([0.0, 1e-30, 0.5, 0.05], requires_grad=True)
    log_scale = torch.full((4,), -3.0, requires_grad=True)
    kl_divergence(dist.Normal(loc, log_scale.exp()), ImproperLogUniform((4,))).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all()
    assert (loc.grad[:2] == 0).all() and (loc.grad[2:] > 0).all() and (log_scale.grad[2:] < 0).all()


# --------------------------------------------------------------------------------------
# Log-normal guides against Gamma and inverse-Gamma priors (horseshoe scales)

LOG_NORMAL_GRID = [(-3.0, 0.05), (0.0, 0.5), (1.0, 1.5), (-23.0, 0.3)]


@pytest.mark.parametrize(
    "prior",
    [
        dist.Gamma(0.5, 1.0),
        dist.Gamma(0.5, 1e10),  # G(1/2, scale tau0^2) with tau0 = 1e-5
        dist.Gamma(3.0, 2.0),
        dist.InverseGamma(0.5, 1.0),
        dist.InverseGamma(3.0, 0.2),
    ],
    ids=[
        "Gamma(0.5,1)",
        "Gamma(0.5,1e10)",
        "Gamma(3,2)",
        "InverseGamma(0.5,1)",
        "InverseGamma(3,0.2)",
    ],
)
def test_log_normal_kl_matches_monte_carlo(prior):
    loc, scale = (torch.tensor(v, dtype=torch.float64) for v in zip(*LOG_NORMAL_GRID, strict=True))
    p = dist.LogNormal(loc, scale)
    q = type(prior)(
        torch.tensor(prior.concentration.item(), dtype=torch.float64),
        torch.tensor(prior.rate.item(), dtype=torch.float64),
    ).expand(p.batch_shape)
    assert_within_3_se(kl_divergence(p, q), p, q)


def test_log_normal_inverse_gamma_kl_matches_thesis_eq_156():
    # -KL(LN(mu, s^2) || IG(1/2, 1)) = -exp(s^2/2 - mu) + (-mu + log s^2 + 1 + log 2) / 2.
    mu, var = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)
    prior = dist.InverseGamma(
        torch.tensor(0.5, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    )
    kl = kl_divergence(dist.LogNormal(mu, var.sqrt()), prior)
    neg_kl = -(var / 2 - mu).exp() + 0.5 * (-mu + var.log() + 1 + math.log(2))
    assert kl.item() == pytest.approx(-neg_kl.item(), rel=1e-12)


# --------------------------------------------------------------------------------------
# Spike-and-slab and hard concrete


@pytest.mark.parametrize("prior_probs", [0.1, 0.9])
def test_spike_and_slab_kl_matches_monte_carlo(prior_probs):
    p = SpikeAndSlab(
        torch.tensor([0.01, 0.5, 0.99, 0.5], dtype=torch.float64),
        torch.tensor([0.0, 1.0, -2.0, 0.0], dtype=torch.float64),
        torch.tensor([1.0, 0.1, 3.0, 1.0], dtype=torch.float64),
    )
    q = SpikeAndSlab(torch.tensor(prior_probs, dtype=torch.float64), 0.0, 1.0).expand(p.batch_shape)
    assert_within_3_se(kl_divergence(p, q), p, q)


def _hard_concrete_grid():
    log_alpha = torch.tensor([-8.0, -2.0, 0.0, 3.0, 8.0, 1.0, -1.0], dtype=torch.float64)
    temperature = torch.tensor([2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 0.3, 1.5], dtype=torch.float64)
    return log_alpha, temperature


@pytest.mark.parametrize(
    "prior",
    [
        HardConcrete(torch.tensor(0.0, dtype=torch.float64)),
        HardConcrete(torch.tensor(-2.0, dtype=torch.float64), temperature=0.5),
        HardConcrete(torch.tensor(2.5, dtype=torch.float64), stretch_low=-0.3, stretch_high=1.2),
    ],
    ids=["log_alpha=0", "log_alpha=-2,T=0.5", "log_alpha=2.5,stretch"],
)
def test_hard_concrete_kl_matches_monte_carlo(prior):
    log_alpha, temperature = _hard_concrete_grid()
    p = HardConcrete(log_alpha, temperature)
    q = prior.expand(p.batch_shape)
    assert_within_3_se(kl_divergence(p, q), p, q)


def test_hard_concrete_kl_is_zero_for_equal_gates_and_differentiable():
    log_alpha = torch.tensor([-3.0, 0.0, 3.0], requires_grad=True)
    p = HardConcrete(log_alpha)
    assert torch.allclose(
        kl_divergence(p, HardConcrete(log_alpha.detach())), torch.zeros(3), atol=1e-6
    )
    kl_divergence(p, HardConcrete(torch.zeros(3))).sum().backward()
    # The KL is minimal where p = q (the middle gate), and increases away from it.
    assert log_alpha.grad[0] < 0 < log_alpha.grad[2]
    assert log_alpha.grad[1].abs() < 1e-6


@pytest.mark.parametrize("penalty", [0.0, 0.7, 3.0])
def test_hard_concrete_to_l0_prior_kl_matches_monte_carlo(penalty):
    # With the gate entropy the registered KL is the full one; without it, the same minus
    # log(1 + 2 e^-penalty) - H[p].
    log_alpha, temperature = _hard_concrete_grid()
    p = HardConcrete(log_alpha, temperature)
    q = L0Prior(torch.tensor(penalty, dtype=torch.float64), gate_entropy=True)
    assert_within_3_se(kl_divergence(p, q), p, q)
    q = L0Prior(torch.tensor(penalty, dtype=torch.float64))
    offset = math.log1p(2 * math.exp(-penalty))
    assert_within_3_se(kl_divergence(p, q) + offset - p.entropy(), p, q)


# --------------------------------------------------------------------------------------
# Truncated log-normal vs log-uniform (structured Bayesian pruning)


def test_truncated_log_normal_to_log_uniform_kl_matches_monte_carlo():
    loc = torch.tensor([0.0, 0.0, 3.0, -25.0, -10.0, -20.0], dtype=torch.float64)
    scale = torch.tensor([1.0, math.exp(-5), 0.7, 2.0, 5.0, math.exp(5)], dtype=torch.float64)
    p = TruncatedLogNormal(loc, scale, math.exp(-20), 1.0)
    q = LogUniform(p.low, p.high)
    # Unbiased over seeds; six cases at 3 se each, so the suite's seed gets more samples.
    assert_within_3_se(kl_divergence(p, q), p, q, num_samples=300_000)


# --------------------------------------------------------------------------------------
# Matrix normal


@pytest.mark.parametrize("p_kind", FACTOR_KINDS, ids=lambda k: f"p{k}")
@pytest.mark.parametrize("q_kind", [(False, False), (True, True)], ids=lambda k: f"q{k}")
def test_matrix_normal_kl_matches_monte_carlo(p_kind, q_kind):
    p, q = random_matrix_normal(*p_kind), random_matrix_normal(*q_kind)
    assert_within_3_se(kl_divergence(p, q), p, q)


@pytest.mark.parametrize("p_kind", FACTOR_KINDS, ids=str)
def test_matrix_normal_kl_matches_multivariate_normal(p_kind):
    p, q = random_matrix_normal(*p_kind), random_matrix_normal(False, False)
    expected = kl_divergence(as_multivariate_normal(p), as_multivariate_normal(q))
    assert torch.allclose(kl_divergence(p, q), expected, rtol=1e-10)


@pytest.mark.parametrize("p_kind", FACTOR_KINDS, ids=str)
def test_matrix_normal_to_iid_normal_kl_matches_monte_carlo(p_kind):
    p = random_matrix_normal(*p_kind)
    q = dist.Normal(
        0.3 * torch.randn(2, 3, 2, dtype=torch.float64),
        torch.rand(2, 3, 2, dtype=torch.float64) + 0.5,
    )
    q = q.to_event(2)
    assert_within_3_se(kl_divergence(p, q), p, q)
    standard = dist.Normal(torch.zeros(3, 2, dtype=torch.float64), 1.0).to_event(2)
    assert_within_3_se(kl_divergence(p, standard.expand((2,))), p, standard.expand((2,)))


@pytest.mark.parametrize("q_kind", FACTOR_KINDS, ids=str)
def test_iid_normal_to_matrix_normal_kl_matches_monte_carlo(q_kind):
    q = random_matrix_normal(*q_kind)
    p = dist.Normal(
        torch.randn(2, 3, 2, dtype=torch.float64), torch.rand(2, 3, 2, dtype=torch.float64) + 0.3
    )
    p = p.to_event(2)
    assert_within_3_se(kl_divergence(p, q), p, q)


def test_multivariate_normal_to_iid_normal_kl_matches_monte_carlo():
    p = dist.MultivariateNormal(
        torch.randn(2, 4, dtype=torch.float64), scale_tril=random_tril(4, (2,))
    )
    q = dist.Normal(
        torch.randn(2, 4, dtype=torch.float64), torch.rand(2, 4, dtype=torch.float64) + 0.5
    )
    q = q.to_event(1)
    assert_within_3_se(kl_divergence(p, q), p, q)
    assert torch.allclose(kl_divergence(p, q), kl_divergence(p, _diagonal_mvn(q)), rtol=1e-10)


def _diagonal_mvn(d):
    return dist.MultivariateNormal(d.base_dist.loc, scale_tril=torch.diag_embed(d.base_dist.scale))


def test_kl_with_mismatched_event_shapes_is_a_clear_error():
    p = random_matrix_normal(True, True)
    with pytest.raises(ValueError, match=r"event shapes differ"):
        kl_divergence(p, dist.Normal(torch.zeros(2, 3, dtype=torch.float64), 1.0).to_event(2))


def test_kl_against_non_normal_independent_is_not_implemented():
    # So that TraceMeanField_ELBO falls back to its Monte Carlo estimate.
    p = random_matrix_normal(True, True)
    with pytest.raises(NotImplementedError):
        kl_divergence(p, dist.Laplace(torch.zeros(2, 3, 2, dtype=torch.float64), 1.0).to_event(2))


# --------------------------------------------------------------------------------------
# TraceMeanField_ELBO picks up the registered KLs


def _prior_only_loss(prior, guide_dist):
    def model():
        pyro.sample("w", prior)

    def guide():
        pyro.sample("w", guide_dist)

    return TraceMeanField_ELBO().differentiable_loss(model, guide)


def test_trace_mean_field_elbo_uses_the_sparse_vd_kl():
    loc, scale = torch.tensor([0.5, -1.0, 0.01]), torch.tensor([0.1, 0.2, 0.3])
    loss = _prior_only_loss(
        ImproperLogUniform((3,)).to_event(1), dist.Normal(loc, scale).to_event(1)
    )
    expected = sparse_vd_kl(2 * scale.log() - loc.square().log()).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_trace_mean_field_elbo_uses_the_matrix_normal_kl():
    p, q = random_matrix_normal(True, False, batch=()), random_matrix_normal(False, True, batch=())
    assert _prior_only_loss(q, p).item() == pytest.approx(kl_divergence(p, q).item(), rel=1e-10)


def test_scale_mixture_prior_falls_back_to_monte_carlo():
    guide_dist = dist.Normal(torch.tensor([0.3, -0.2]), torch.tensor([0.05, 0.1])).to_event(1)
    prior = ScaleMixtureNormal(0.5, 1.0, math.exp(-6)).expand((2,)).to_event(1)
    with pytest.raises(NotImplementedError):
        kl_divergence(guide_dist, prior)

    def model():
        pyro.sample("w", prior)

    def guide():
        pyro.sample("w", guide_dist)

    pyro.set_rng_seed(1)
    loss = TraceMeanField_ELBO().loss(model, guide)
    pyro.set_rng_seed(1)
    w = poutine.trace(guide).get_trace().nodes["w"]["value"]
    assert loss == pytest.approx((guide_dist.log_prob(w) - prior.log_prob(w)).item(), rel=1e-5)


def test_trace_mean_field_elbo_uses_the_hard_concrete_kl():
    p = HardConcrete(torch.tensor([-1.0, 2.0])).to_event(1)
    q = HardConcrete(torch.zeros(2)).to_event(1)
    assert _prior_only_loss(q, p).item() == pytest.approx(kl_divergence(p, q).item(), rel=1e-6)
