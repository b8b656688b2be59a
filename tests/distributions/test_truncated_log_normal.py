"""TruncatedLogNormal against scipy.stats.truncnorm on log theta, mpmath far in the tails,
Monte Carlo, finite differences, and the SBP reference code's formulas."""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from torch.distributions import kl_divergence

import pyro_bnn.distributions.truncated_log_normal as tln
from pyro_bnn.distributions import LogUniform, TruncatedLogNormal

# (loc, scale, log_low, log_high): the interval around the mean, the SBP start (a half-normal
# at the upper bound), the mean above and below the interval, a wide and a narrow one.
CASES = [
    (0.0, 1.0, -2.0, 1.0),
    (0.0, math.exp(-5), -20.0, 0.0),
    (3.0, 0.7, -20.0, 0.0),
    (-25.0, 2.0, -20.0, 0.0),
    (-10.0, 5.0, -20.0, 0.0),
    (-20.0, math.exp(5), -20.0, 0.0),
    (0.5, 3.0, -1.0, 2.0),
]

# Far in the tails of the normal, inside the SBP code's clipping (loc and log scale in
# [-20, 5], log bounds [-20, 0]), where differences of normal CDFs underflow.
FAR_TAIL_CASES = [
    (5.0, math.exp(-20), -20.0, 0.0),
    (5.0, math.exp(-7), -20.0, 0.0),
    (0.0, math.exp(-12), -20.0, 0.0),
    (-10.0, math.exp(-20), -20.0, 0.0),
    (-30.0, 0.5, -20.0, 0.0),
    (25.0, 1.0, -20.0, 0.0),
    (-20.0, math.exp(5), -20.0, 0.0),
    # Around the switch between the two evaluations of the variance (v = 1e-2).
    (0.0, 0.1, -20.0, 0.0),
    (0.0, 0.2, -20.0, 0.0),
    (-1.0, 0.1, -2.0, 0.0),
]


def _params(cases, dtype=torch.float64):
    loc, scale, log_low, log_high = (
        torch.tensor(c, dtype=torch.float64) for c in zip(*cases, strict=True)
    )
    return [t.to(dtype) for t in (loc, scale, log_low.exp(), log_high.exp())]


def _dist(cases, dtype=torch.float64, **kwargs):
    return TruncatedLogNormal(*_params(cases, dtype), **kwargs)


def _scipy(case):
    loc, scale, log_low, log_high = case
    return scipy.stats.truncnorm(
        (log_low - loc) / scale, (log_high - loc) / scale, loc=loc, scale=scale
    )


def test_log_prob_cdf_and_icdf_match_scipy():
    d = _dist(CASES)
    fractions = np.linspace(0.02, 0.98, 9)[:, None]
    log_low, log_high = np.array([c[2] for c in CASES]), np.array([c[3] for c in CASES])
    x = log_low + fractions * (log_high - log_low)
    u = np.array([1e-6, 0.01, 0.3, 0.5, 0.9, 1 - 1e-6])[:, None]
    expected_log_prob = np.stack([_scipy(c).logpdf(x[:, i]) for i, c in enumerate(CASES)], -1)
    expected_cdf = np.stack([_scipy(c).cdf(x[:, i]) for i, c in enumerate(CASES)], -1)
    expected_icdf = np.stack([_scipy(c).ppf(u[:, 0]) for c in CASES], -1)
    theta = torch.from_numpy(np.exp(x))
    # Change of variables: log q(theta) = log q_x(log theta) - log theta.
    assert np.allclose(d.log_prob(theta).numpy(), expected_log_prob - x, rtol=1e-10, atol=1e-10)
    assert np.allclose(d.cdf(theta).numpy(), expected_cdf, rtol=1e-9, atol=1e-12)
    icdf = d.icdf(torch.from_numpy(u).expand(-1, len(CASES))).log().numpy()
    assert np.allclose(icdf, expected_icdf, rtol=1e-9, atol=1e-9)


def test_moments_and_entropy_match_scipy():
    d = _dist(CASES)
    for i, case in enumerate(CASES):
        reference = _scipy(case)
        m1, m2 = reference.expect(np.exp), reference.expect(lambda x: np.exp(2 * x))
        assert d.mean[i].item() == pytest.approx(m1, rel=1e-9)
        assert d.variance[i].item() == pytest.approx(m2 - m1**2, rel=1e-6)
        # H[theta] = H[log theta] + E[log theta].
        entropy = reference.entropy() + reference.mean()
        assert d.entropy()[i].item() == pytest.approx(entropy, rel=1e-9, abs=1e-9)


def _mpmath_reference(case):
    mp = pytest.importorskip("mpmath")
    with mp.workdps(120):
        loc, scale, log_low, log_high = map(mp.mpf, case)
        alpha, beta = (log_low - loc) / scale, (log_high - loc) / scale

        def mass(a, b):
            return mp.ncdf(-a) - mp.ncdf(-b) if a > 0 else mp.ncdf(b) - mp.ncdf(a)

        z = mass(alpha, beta)

        def moment(k):
            return (
                mp.exp(k * loc + k * k * scale**2 / 2)
                * mass(alpha - k * scale, beta - k * scale)
                / z
            )

        m1, m2 = moment(1), moment(2)
        pdf_a, pdf_b = mp.npdf(alpha), mp.npdf(beta)
        entropy_log = mp.log(scale * mp.sqrt(2 * mp.pi * mp.e) * z) + (
            alpha * pdf_a - beta * pdf_b
        ) / (2 * z)
        mean_log = loc + scale * (pdf_a - pdf_b) / z
        variance = m2 - m1**2
        return {
            "mean": float(m1),
            "variance": float(variance),
            "entropy": float(entropy_log + mean_log),
            "signal_to_noise": float(m1 / mp.sqrt(variance)),
            "kl": float(mp.log(log_high - log_low) - entropy_log),
        }


@pytest.mark.parametrize(
    "dtype, rtol, atol", [(torch.float64, 1e-12, 1e-12), (torch.float32, 2e-6, 5e-6)], ids=str
)
def test_far_tail_closed_forms_match_mpmath(dtype, rtol, atol):
    d = _dist(FAR_TAIL_CASES, dtype)
    prior = LogUniform(d.low, d.high)
    got = {
        "mean": d.mean,
        "variance": d.variance,
        "entropy": d.entropy(),
        "signal_to_noise": d.signal_to_noise,
        "kl": kl_divergence(d, prior),
    }
    references = [_mpmath_reference(case) for case in FAR_TAIL_CASES]
    for name, value in got.items():
        assert value.dtype == dtype
        for i, case in enumerate(FAR_TAIL_CASES):
            expected = references[i][name]
            if name == "variance" and expected < torch.finfo(dtype).tiny:
                continue  # underflows in float32
            # The entropy and the KL are differences of terms of order |log scale|.
            scale = 50.0 if name in ("entropy", "kl") else abs(expected)
            assert value[i].item() == pytest.approx(expected, rel=rtol, abs=atol * scale), (
                name,
                case,
            )


def test_float32_far_tails_are_finite_with_finite_gradients():
    # The SBP bounds and clipping ranges: loc in [-20, 5] and beyond, log scale in [-20, 5].
    grid = [
        (loc, math.exp(log_scale), -20.0, 0.0)
        for loc in (-25.0, -20.0, -10.0, 0.0, 5.0)
        for log_scale in (-20.0, -5.0, 0.0, 5.0)
    ]
    loc, scale, low, high = _params(grid, torch.float32)
    loc.requires_grad_()
    log_scale = scale.log().requires_grad_()
    d = TruncatedLogNormal(loc, log_scale.exp(), low, high)
    theta = d.rsample((500,))
    assert torch.isfinite(theta).all()
    assert ((theta >= low) & (theta <= high)).all()
    closed = [
        d.mean,
        d.variance,
        d.entropy(),
        d.signal_to_noise.log(),
        kl_divergence(d, LogUniform(low, high)),
    ]
    for value in closed:
        assert torch.isfinite(value).all()
    total = (
        theta.sum() + d.log_prob(theta).sum() + d.cdf(theta).sum() + sum(v.sum() for v in closed)
    )
    grads = torch.autograd.grad(total, (loc, log_scale))
    assert all(torch.isfinite(g).all() for g in grads)


def test_icdf_inverts_cdf_far_in_the_tails():
    cases = CASES + FAR_TAIL_CASES
    d = _dist(cases)
    u = torch.tensor([1e-12, 1e-4, 0.2, 0.5, 0.8, 1 - 1e-4, 1 - 1e-12], dtype=torch.float64)
    u = u[:, None].expand(-1, len(cases))
    theta = d.icdf(u)
    assert ((theta >= d.low) & (theta <= d.high)).all()
    # Exact up to the rounding of log theta, which moves the CDF by its density times an ulp.
    x = theta.log()
    density = (d.log_prob(theta) + x).exp()
    resolution = 8 * torch.finfo(x.dtype).eps * (1 + x.abs()) * density
    error = (d.cdf(theta) - u).abs()
    assert (error <= 1e-10 * torch.minimum(u, 1 - u) + resolution + 1e-14).all(), error


def test_newton_steps_suffice_over_the_sbp_range(monkeypatch):
    # The inverse CDF with the default number of Newton steps against many more, over the
    # SBP clipping ranges and probabilities down to the smallest normal float.
    loc = torch.tensor([-40.0, -20.5, -20.0, -10.0, -1.0, 0.0, 0.1, 5.0, 20.0], dtype=torch.float64)
    scale = torch.tensor([-20.0, -7.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0], dtype=torch.float64).exp()
    d = TruncatedLogNormal(loc[:, None], scale, math.exp(-20), 1.0)
    tiny = torch.finfo(torch.float64).tiny
    u = torch.tensor([tiny, 1e-100, 1e-8, 0.1, 0.5, 0.9, 1 - 1e-12], dtype=torch.float64)
    u = u[:, None, None]
    default = d.icdf(u).log() - d.loc
    monkeypatch.setattr(tln, "_NEWTON_STEPS", 40)
    converged = d.icdf(u).log() - d.loc
    assert ((default - converged).abs() <= 1e-13 * (converged.abs() + d.scale)).all()


def test_float32_icdf_agrees_with_float64():
    cases = CASES + FAR_TAIL_CASES
    u = torch.tensor([1e-6, 0.01, 0.3, 0.5, 0.7, 0.99, 1 - 1e-6])[:, None].expand(-1, len(cases))
    x32 = _dist(cases, torch.float32).icdf(u).log().double()
    x64 = TruncatedLogNormal(*(p.double() for p in _params(cases, torch.float32))).icdf(u.double())
    assert torch.allclose(x32, x64.log(), rtol=1e-5, atol=1e-4)


def test_sample_moments_and_goodness_of_fit():
    num_samples = 100_000
    d = _dist(CASES)
    theta = d.sample((num_samples,))
    mean, variance = theta.mean(0), theta.var(0)
    se_mean = (variance / num_samples).sqrt()
    se_variance = (((theta - mean) ** 2).var(0) / num_samples).sqrt()
    assert ((mean - d.mean).abs() <= 4 * se_mean).all(), (mean, d.mean)
    assert ((variance - d.variance).abs() <= 4 * se_variance).all(), (variance, d.variance)
    for i in (0, 2, 5):
        single = _dist(CASES[i : i + 1])

        def cdf(t, single=single):
            return single.cdf(torch.as_tensor(t, dtype=torch.float64)[:, None])[:, 0].numpy()

        assert scipy.stats.kstest(theta[:20_000, i].numpy(), cdf).pvalue > 1e-3


def test_icdf_jacobian_matches_finite_differences():
    # The reparameterization gradient, including the implicit derivative of the Newton
    # solve in the tails.
    u = torch.tensor([1e-9, 1e-3, 0.3, 0.7, 0.999, 1 - 1e-9], dtype=torch.float64)
    for case in CASES + [(5.0, math.exp(-5), -20.0, 0.0), (-30.0, 0.5, -20.0, 0.0)]:
        log_low, log_high = case[2], case[3]

        def quantile(params, log_low=log_low, log_high=log_high):
            d = TruncatedLogNormal(params[0], params[1], math.exp(log_low), math.exp(log_high))
            return d.icdf(u).log()

        params = torch.tensor(case[:2], dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(quantile, params)
        for j in range(2):
            h = torch.zeros(2, dtype=torch.float64)
            h[j] = 1e-6 * (1 if j == 0 else case[1])
            numerical = (quantile(params + h) - quantile(params - h)) / (2 * h[j])
            assert torch.allclose(jacobian[:, j], numerical, rtol=1e-5, atol=1e-7), case


def test_rsample_gradient_matches_the_derivative_of_the_mean():
    loc = torch.tensor([0.0, 3.0, -10.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1.0, 0.7, 5.0], dtype=torch.float64, requires_grad=True)
    d = TruncatedLogNormal(loc, scale, math.exp(-20), 1.0)
    sampled = torch.autograd.grad(d.rsample((200_000,)).mean(0).sum(), (loc, scale))
    exact = torch.autograd.grad(d.mean.sum(), (loc, scale))
    for s, e in zip(sampled, exact, strict=True):
        assert torch.allclose(s, e, rtol=2e-2, atol=2e-3), (s, e)


def _sbp_signal_to_noise(loc, scale, log_low, log_high):
    # The SBP reference code's snr_truncated_log_normal, in numpy.
    alpha, beta = (log_low - loc) / scale, (log_high - loc) / scale
    z = scipy.stats.norm.cdf(beta) - scipy.stats.norm.cdf(alpha)
    erfcx, root2 = scipy.special.erfcx, math.sqrt(2)
    ratio = erfcx((scale - beta) / root2) * np.exp(log_high - loc - beta**2 / 2)
    ratio -= erfcx((scale - alpha) / root2) * np.exp(log_low - loc - alpha**2 / 2)
    denominator = (
        2 * z * erfcx((2 * scale - beta) / root2) * np.exp(2 * (log_high - loc) - beta**2 / 2)
    )
    denominator -= (
        2 * z * erfcx((2 * scale - alpha) / root2) * np.exp(2 * (log_low - loc) - alpha**2 / 2)
    )
    return ratio / np.sqrt(denominator - ratio**2)


def test_signal_to_noise_is_mean_over_standard_deviation_and_matches_the_sbp_code():
    d = _dist(CASES)
    assert torch.allclose(d.signal_to_noise, d.mean / d.variance.sqrt(), rtol=1e-10)
    expected = [_sbp_signal_to_noise(*c) for c in CASES]
    assert np.allclose(d.signal_to_noise.numpy(), expected, rtol=1e-6)
    # SBP keeps a unit while its ratio exceeds 1: the start (mu = 0, sigma = e^-5) is kept, a
    # nearly log-uniform noise (sigma = e^5) is pruned.
    assert d.signal_to_noise[1] > 1 and d.signal_to_noise[5] < 1


def _sbp_kl(loc, scale, log_low, log_high):
    # The SBP reference code's KL, in numpy.
    alpha, beta = (log_low - loc) / scale, (log_high - loc) / scale
    z = scipy.stats.norm.cdf(beta) - scipy.stats.norm.cdf(alpha)
    pdf = scipy.stats.norm.pdf
    kl = -math.log(scale) - np.log(z) - (alpha * pdf(alpha) - beta * pdf(beta)) / (2 * z)
    return kl + math.log(log_high - log_low) - math.log(2 * math.pi * math.e) / 2


def test_kl_matches_the_sbp_code_and_vanishes_for_a_flat_posterior():
    d = _dist(CASES)
    kl = kl_divergence(d, LogUniform(d.low, d.high))
    assert np.allclose(kl.numpy(), [_sbp_kl(*c) for c in CASES], rtol=1e-9, atol=1e-12)
    # As sigma -> inf the posterior tends to the prior.
    flat = TruncatedLogNormal(-10.0, torch.tensor(1e4, dtype=torch.float64), math.exp(-20), 1.0)
    prior = LogUniform(flat.low, flat.high)
    assert kl_divergence(flat, prior).item() == pytest.approx(0.0, abs=1e-8)
    assert flat.mean.item() == pytest.approx(prior.mean.item(), rel=1e-6)
    assert flat.variance.item() == pytest.approx(prior.variance.item(), rel=1e-6)
    assert flat.entropy().item() == pytest.approx(prior.entropy().item(), rel=1e-6)


def test_kl_refuses_a_support_outside_the_prior():
    q = TruncatedLogNormal(0.0, 1.0, math.exp(-20), 1.0)
    with pytest.raises(ValueError, match="support"):
        kl_divergence(q, LogUniform(math.exp(-10), 1.0))
    with pytest.raises(ValueError, match="support"):
        kl_divergence(q, LogUniform(math.exp(-20), 0.5))
    # A support inside the prior's is fine: the KL only uses the prior's density on it.
    inner = TruncatedLogNormal(0.0, 1.0, math.exp(-10), 1.0)
    assert torch.isfinite(kl_divergence(inner, LogUniform(math.exp(-20), 2.0)))


@pytest.mark.parametrize(
    "params, name",
    [
        ({"scale": 0.0}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"low": 0.0}, "low"),
        ({"high": 1e-3}, "high"),
    ],
    ids=str,
)
def test_invalid_parameter_is_named(params, name):
    kwargs = {"loc": 0.0, "scale": 1.0, "low": 1e-2, "high": 1.0, **params}
    kwargs = {k: torch.tensor(v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=name):
        TruncatedLogNormal(**kwargs, validate_args=True)


def test_log_prob_outside_the_support_is_rejected():
    d = TruncatedLogNormal(0.0, 1.0, 0.1, 1.0, validate_args=True)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor(1.5))


def test_shapes_and_expand():
    d = _dist(CASES)
    assert d.batch_shape == (len(CASES),) and d.event_shape == ()
    expanded = d.expand((2, len(CASES)))
    assert expanded.batch_shape == (2, len(CASES))
    theta = expanded.rsample((3,))
    assert theta.shape == (3, 2, len(CASES))
    assert expanded.log_prob(theta).shape == (3, 2, len(CASES))
    assert torch.equal(expanded.mean[1], d.mean)
    broadcast = TruncatedLogNormal(torch.zeros(4, 1), torch.ones(3), 0.1, 1.0)
    assert broadcast.batch_shape == (4, 3)
    assert broadcast.signal_to_noise.shape == (4, 3)
