from __future__ import annotations

import math
from typing import NamedTuple

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from .util import gauss_legendre

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_HALF_LOG_PI_OVER_2 = 0.5 * math.log(math.pi / 2)
_SQRT_HALF = math.sqrt(0.5)
_LOG_2 = math.log(2.0)

#: Below this standardized point the Mills-ratio derivatives ``1 + x M(x)`` and ``M''(x)``
#: are summed from their asymptotic series (truncation error below 1e-10 relative), where
#: the direct formulas cancel.
_SERIES_BELOW = -10.0
_SERIES_TERMS = 12

#: Newton steps of the inverse CDF in the tails. Each starts below the root, where the
#: iteration on the concave log CDF increases monotonically; 8 steps reach the root to
#: rounding from the worst start in float64 (checked in the tests).
_NEWTON_STEPS = 8

#: The variance of theta is ``E[theta]^2 expm1(v)`` with ``v`` the second difference of the
#: cumulant generating function of log theta. Below this value of ``v`` the second
#: difference loses digits, and ``v`` is instead integrated from the variance of the tilted
#: truncated normal with this many Gauss-Legendre nodes on each half of its hat kernel.
_SECOND_DIFFERENCE_ABOVE = 1e-2
_VARIANCE_NODES = 16


def _log_mills(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log M(x)` for :math:`x \le 0`, with :math:`M = \Phi / \phi` the Mills ratio
    of the left tail, :math:`M(x) = \sqrt{\pi/2}\,\mathrm{erfcx}(-x / \sqrt 2)`."""
    return torch.special.erfcx(-_SQRT_HALF * x).log() + _HALF_LOG_PI_OVER_2


def _asymptotic(x: torch.Tensor, derivative: int) -> torch.Tensor:
    # 1 + x M(x) ~ sum_{n >= 1} (-1)^(n+1) (2n - 1)!! / x^(2n) as x -> -inf, and its derivative.
    inverse_square = x.reciprocal().square()
    total = torch.zeros_like(x)
    coefficient, power = 1.0, inverse_square
    for n in range(1, _SERIES_TERMS + 1):
        sign = 1.0 if n % 2 else -1.0
        term = coefficient * power if derivative == 0 else -2 * n * coefficient * power / x
        total = total + sign * term
        coefficient *= 2 * n + 1
        power = power * inverse_square
    return total


def _mills_derivatives(x: torch.Tensor, mills: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`M'(x) = 1 + x M(x)` and :math:`M''(x) = (1 + x^2) M(x) + x` for :math:`x \le 0`,
    given :math:`M(x)`; both tend to 0 as :math:`x \to -\infty`, where they are summed from
    their asymptotic series instead."""
    far = x < _SERIES_BELOW
    near_x = torch.where(far, torch.full_like(x, _SERIES_BELOW), x)
    far_x = torch.where(far, x, torch.full_like(x, _SERIES_BELOW))
    first = torch.where(far, _asymptotic(far_x, 0), 1 + near_x * mills)
    second = torch.where(far, _asymptotic(far_x, 1), (1 + near_x.square()) * mills + near_x)
    return first, second


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate at both ends."""
    return torch.where(x > -_LOG_2, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _orient(alpha: torch.Tensor, beta: torch.Tensor):
    """
    Mirror the standardized interval ``[alpha, beta]`` so that its end nearest to the mean
    is its upper end: ``a = -beta, b = -alpha`` where ``alpha + beta > 0`` (``flip``). Then
    ``a + b <= 0``, and ``tail`` says that the whole interval lies left of the mean,
    ``b <= 0``: the regime where the normal CDFs underflow and the near end ``b`` anchors
    every formula.
    """
    flip = alpha + beta > 0
    a = torch.where(flip, -beta, alpha)
    b = torch.where(flip, -alpha, beta)
    return flip, a, b, b <= 0


def _tail_log_cdf_ratio(a: torch.Tensor, b: torch.Tensor, log_mills_a, log_mills_b):
    # log Phi(a) - log Phi(b) for a <= b <= 0, with log Phi(x) = -x^2/2 - log sqrt(2 pi) + m(x)
    # and the difference of squares factored.
    return -0.5 * (a - b) * (a + b) + log_mills_a - log_mills_b


class _Terms(NamedTuple):
    """The standard normal truncated to ``[alpha, beta]``, in the oriented coordinates of
    :func:`_orient` (``eps' = -eps`` where ``flip``) and relative to the anchor ``b`` (the
    end nearest to the mean) in the tail regime, or to 0 otherwise."""

    flip: torch.Tensor
    tail: torch.Tensor
    #: ``log(Phi(beta) - Phi(alpha)) = -anchor^2 / 2 + rest``.
    rest: torch.Tensor
    #: ``E[eps'] - anchor``.
    offset: torch.Tensor
    variance: torch.Tensor
    entropy: torch.Tensor


def _terms(alpha: torch.Tensor, beta: torch.Tensor) -> _Terms:
    flip, a, b, tail = _orient(alpha, beta)

    # Tail regime, a < b <= 0. With eta = b - eps' >= 0, whose density is proportional to
    # exp(b eta - eta^2 / 2) on [0, b - a], the integrals I_k = int eta^k exp(b eta - eta^2/2)
    # are, with the Mills ratio M and rho = phi(a) / phi(b),
    #   I_0 = M(b) - rho M(a),  I_1 = M'(b) - rho (M'(a) + (b - a) M(a)),
    #   I_2 = M''(b) - rho (M''(a) + (b - a) ((a + b) M(a) + 2)),
    # none of which cancels in the far tail; Z = phi(b) I_0.
    at = torch.where(tail, a, torch.full_like(a, -2.0))
    bt = torch.where(tail, b, torch.full_like(b, -1.0))
    log_mills_a, log_mills_b = _log_mills(at), _log_mills(bt)
    mills_a, mills_b = log_mills_a.exp(), log_mills_b.exp()
    first_a, second_a = _mills_derivatives(at, mills_a)
    first_b, second_b = _mills_derivatives(bt, mills_b)
    width = bt - at
    rho = torch.exp(-0.5 * (at - bt) * (at + bt))
    log_i0 = log_mills_b + _log1mexp(_tail_log_cdf_ratio(at, bt, log_mills_a, log_mills_b))
    i0 = log_i0.exp()
    i1 = first_b - rho * (first_a + width * mills_a)
    i2 = second_b - rho * (second_a + width * ((at + bt) * mills_a + 2))
    e1, e2 = i1 / i0, i2 / i0
    tail_rest = log_i0 - _LOG_SQRT_2PI
    tail_offset = -e1
    tail_variance = e2 - e1.square()
    # H = log Z + (log 2 pi + E[eps'^2]) / 2 with eps' = b - eta.
    tail_entropy = log_i0 - bt * e1 + 0.5 * e2

    # Central regime, a < 0 < b: nothing underflows and nothing cancels.
    ac = torch.where(tail, torch.full_like(a, -1.0), a)
    bc = torch.where(tail, torch.ones_like(b), b)
    log_z = torch.log(0.5 * (torch.erf(_SQRT_HALF * bc) - torch.erf(_SQRT_HALF * ac)))
    ratio_a = torch.exp(-0.5 * ac.square() - _LOG_SQRT_2PI - log_z)
    ratio_b = torch.exp(-0.5 * bc.square() - _LOG_SQRT_2PI - log_z)
    central_offset = ratio_a - ratio_b
    moment = ac * ratio_a - bc * ratio_b
    central_variance = 1 + moment - central_offset.square()
    central_entropy = 0.5 + _LOG_SQRT_2PI + log_z + 0.5 * moment

    return _Terms(
        flip,
        tail,
        torch.where(tail, tail_rest, log_z),
        torch.where(tail, tail_offset, central_offset),
        torch.where(tail, tail_variance, central_variance),
        torch.where(tail, tail_entropy, central_entropy),
    )


def _promote(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # Parameter-level closed forms are evaluated in at least double precision: they cost
    # one evaluation per unit, and some of them (the variance for a small scale) difference
    # nearby values.
    dtype = torch.promote_types(tensors[0].dtype, torch.float64)
    return tuple(t.to(dtype) for t in tensors)


class TruncatedLogNormal(TorchDistribution):
    r"""
    Log-normal distribution truncated to a positive interval :math:`[a, b]`,

    .. math::
        q(\theta) = \frac{\phi\!\left(\frac{\log\theta - \mu}{\sigma}\right)}
                         {\sigma\,\theta\,(\Phi(\beta) - \Phi(\alpha))},
        \qquad a \le \theta \le b,
        \quad \alpha = \frac{\log a - \mu}{\sigma}, \quad \beta = \frac{\log b - \mu}{\sigma},

    i.e. :math:`\log\theta \sim \mathcal{N}(\mu, \sigma^2)` truncated to
    :math:`[\log a, \log b]`. It is the variational family of the multiplicative noise in
    structured Bayesian pruning (Neklyudov et al., 2017, "Structured Bayesian Pruning via
    Log-Normal Multiplicative Noise"), whose prior is :class:`LogUniform` on the same
    interval; the two have a closed-form KL divergence (registered in
    :mod:`pyro_bnn.distributions.kl`). The moments are

    .. math::
        \mathbb{E}[\theta^k] = e^{k\mu + k^2\sigma^2/2}\,
            \frac{\Phi(\beta - k\sigma) - \Phi(\alpha - k\sigma)}{\Phi(\beta) - \Phi(\alpha)},

    and :attr:`signal_to_noise` is :math:`\mathbb{E}[\theta] / \sqrt{\mathrm{Var}[\theta]}`,
    the statistic by which SBP prunes a unit. The authors' code uses the bounds
    :math:`\log a = -20`, :math:`\log b = 0`, initializes :math:`\mu = 0`,
    :math:`\log\sigma = -5`, clips :math:`\mu` and :math:`\log\sigma` to :math:`[-20, 5]`,
    and keeps a unit when its signal-to-noise ratio exceeds 1.

    Every quantity is computed in log space relative to the end of the interval nearest to
    :math:`\mu` (with Mills ratios, not differences of normal CDFs), so the interval may lie
    far in a tail of the normal, e.g. :math:`\mu = 5`, :math:`\sigma = e^{-20}`,
    :math:`[\log a, \log b] = [-20, 0]`, in float32. :meth:`rsample` inverts the CDF, with
    Newton steps on the log CDF in the tails, and is reparameterized. The closed forms
    (:attr:`mean`, :attr:`variance`, :meth:`entropy`) are evaluated in double precision and
    returned in the parameters' dtype.

    :param torch.Tensor loc: :math:`\mu`, the mean of :math:`\log\theta` before truncation.
    :param torch.Tensor scale: :math:`\sigma > 0`.
    :param torch.Tensor low: lower end :math:`a > 0` (on :math:`\theta`, as for
        :class:`LogUniform`).
    :param torch.Tensor high: upper end :math:`b > a`.
    """

    arg_constraints = {
        "loc": constraints.real,
        "scale": constraints.positive,
        "low": constraints.positive,
        "high": constraints.dependent(is_discrete=False, event_dim=0),
    }
    has_rsample = True

    def __init__(self, loc, scale, low, high, validate_args=None):
        self.loc, self.scale, self.low, self.high = broadcast_all(loc, scale, low, high)
        super().__init__(self.loc.shape, validate_args=validate_args)
        if self._validate_args and not torch.lt(self.low, self.high).all():
            raise ValueError(
                "TruncatedLogNormal: expected parameter high to be greater than low, got "
                f"low={self.low} and high={self.high}"
            )

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(TruncatedLogNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        for name in ("loc", "scale", "low", "high"):
            setattr(new, name, getattr(self, name).expand(batch_shape))
        super(TruncatedLogNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.low, self.high)

    # ----------------------------------------------------------------------------------
    # Standardized interval and its anchor

    @staticmethod
    def _standardized(loc, scale, log_low, log_high):
        return (log_low - loc) / scale, (log_high - loc) / scale

    @staticmethod
    def _anchor(terms: _Terms, loc, log_low, log_high, alpha, beta):
        """The anchor on the log scale (the nearest bound, or ``loc``) and standardized."""
        at_low = terms.tail & terms.flip
        at_high = terms.tail & ~terms.flip
        log_anchor = torch.where(at_low, log_low, torch.where(at_high, log_high, loc))
        anchor = torch.where(at_low, alpha, torch.where(at_high, beta, torch.zeros_like(beta)))
        return log_anchor, anchor

    def _closed_form_terms(self):
        loc, scale, low, high = _promote(self.loc, self.scale, self.low, self.high)
        log_low, log_high = low.log(), high.log()
        alpha, beta = self._standardized(loc, scale, log_low, log_high)
        return loc, scale, log_low, log_high, alpha, beta, _terms(alpha, beta)

    def _log_moment(self, k: float, loc, scale, log_low, log_high, alpha, beta, terms):
        r"""
        :math:`\log\mathbb{E}[\theta^k]`. With :math:`\log Z = -c^2/2 + r` for the anchor
        :math:`c` of :math:`[\alpha, \beta]` and :math:`c' = e' - t` for that of the interval
        shifted by :math:`t = k\sigma`, the large terms cancel exactly:
        :math:`k\mu + t^2/2 - c'^2/2 + c^2/2 = k(\mu + \sigma e') + (c - e')(c + e')/2`,
        where :math:`\mu + \sigma e'` is a bound of the interval or :math:`\mu + k\sigma^2`.
        """
        t = k * scale
        shifted = _terms(alpha - t, beta - t)
        _, anchor = self._anchor(terms, loc, log_low, log_high, alpha, beta)
        log_anchor, shifted_anchor = self._anchor(
            shifted, loc + k * scale.square(), log_low, log_high, alpha, beta
        )
        shifted_anchor = torch.where(shifted.tail, shifted_anchor, t)
        return (
            k * log_anchor
            + 0.5 * (anchor - shifted_anchor) * (anchor + shifted_anchor)
            + shifted.rest
            - terms.rest
        )

    def _log_variance_ratio(self, loc, scale, log_low, log_high, alpha, beta, terms):
        r"""
        :math:`v = \log(\mathbb{E}[\theta^2] / \mathbb{E}[\theta]^2)`, so that
        :math:`\mathrm{Var}[\theta] = \mathbb{E}[\theta]^2 (e^v - 1)`. It is the second
        difference :math:`C(2\sigma) - 2C(\sigma) + C(0)` of the cumulant generating function
        :math:`C` of the standardized truncated normal, and equals
        :math:`\int_0^{2\sigma} \min(s, 2\sigma - s)\,C''(s)\,ds`, where :math:`C''(s)` is the
        variance of the normal of mean :math:`s` truncated to :math:`[\alpha, \beta]`. The
        integral has a positive integrand and stays accurate when :math:`v` is tiny.
        """
        args = (loc, scale, log_low, log_high, alpha, beta, terms)
        difference = self._log_moment(2.0, *args) - 2 * self._log_moment(1.0, *args)
        nodes, weights = gauss_legendre(_VARIANCE_NODES, scale.dtype, scale.device)
        view = (-1,) + (1,) * scale.dim()
        nodes, weights = nodes.reshape(view), weights.reshape(view)
        shifts = torch.cat([nodes, 2 - nodes]) * scale
        tilted = _terms(alpha - shifts, beta - shifts).variance
        integral = scale.square() * (torch.cat([weights * nodes] * 2) * tilted).sum(0)
        return torch.where(difference > _SECOND_DIFFERENCE_ABOVE, difference, integral)

    @property
    def mean(self) -> torch.Tensor:
        args = self._closed_form_terms()
        return self._log_moment(1.0, *args).exp().to(self.loc.dtype)

    @property
    def variance(self) -> torch.Tensor:
        args = self._closed_form_terms()
        log_mean = self._log_moment(1.0, *args)
        ratio = self._log_variance_ratio(*args)
        return ((2 * log_mean).exp() * torch.expm1(ratio)).to(self.loc.dtype)

    @property
    def signal_to_noise(self) -> torch.Tensor:
        r"""
        :math:`\mathbb{E}[\theta] / \sqrt{\mathrm{Var}[\theta]} = (e^v - 1)^{-1/2}`, with
        :math:`v` as in :attr:`variance`: it depends on :math:`\mu` only through
        :math:`\alpha` and :math:`\beta`. SBP prunes a unit whose ratio is at most 1 (its
        code keeps ``snr > 1``).
        """
        args = self._closed_form_terms()
        return torch.expm1(self._log_variance_ratio(*args)).rsqrt().to(self.loc.dtype)

    def _log_entropy_terms(self):
        """``log sigma + H(eps)`` (the entropy of log theta) and ``E[log theta]``."""
        loc, scale, log_low, log_high, alpha, beta, terms = self._closed_form_terms()
        log_anchor, _ = self._anchor(terms, loc, log_low, log_high, alpha, beta)
        sign = torch.where(terms.flip, -torch.ones_like(scale), torch.ones_like(scale))
        mean_log = log_anchor + sign * scale * terms.offset
        return scale.log() + terms.entropy, mean_log

    def entropy(self) -> torch.Tensor:
        # H[theta] = H[log theta] + E[log theta] (the Jacobian of theta = exp(x)).
        entropy_log, mean_log = self._log_entropy_terms()
        return (entropy_log + mean_log).to(self.loc.dtype)

    # ----------------------------------------------------------------------------------
    # Densities, CDF and sampling, in the parameters' dtype

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        loc, scale, log_low, log_high, alpha, beta, terms = self._closed_form_terms()
        log_anchor, _ = self._anchor(terms, loc, log_low, log_high, alpha, beta)
        dtype = self.loc.dtype
        log_anchor, rest = log_anchor.to(dtype), terms.rest.to(dtype)
        x = value.log()
        # -(z^2 - anchor^2) / 2 with the difference of squares factored: z^2 - c^2 =
        # (x - log_anchor) (x + log_anchor - 2 loc) / scale^2, which is z^2 for a central anchor.
        square = (x - log_anchor) * (x + log_anchor - 2 * self.loc) / self.scale.square()
        return -0.5 * square - _LOG_SQRT_2PI - self.scale.log() - rest - x

    def _tail_pieces(self):
        alpha, beta = self._standardized(self.loc, self.scale, self.low.log(), self.high.log())
        flip, a, b, tail = _orient(alpha, beta)
        at = torch.where(tail, a, torch.full_like(a, -2.0))
        bt = torch.where(tail, b, torch.full_like(b, -1.0))
        log_mills_b = _log_mills(bt)
        log_ratio = _tail_log_cdf_ratio(at, bt, _log_mills(at), log_mills_b)
        log_anchor = torch.where(flip, self.low.log(), self.high.log())
        sign = torch.where(flip, -torch.ones_like(a), torch.ones_like(a))
        return alpha, beta, flip, tail, at, bt, log_mills_b, log_ratio, log_anchor, sign

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        alpha, beta, flip, tail, at, bt, log_mills_b, log_ratio, log_anchor, sign = (
            self._tail_pieces()
        )
        x = value.log()
        # Tail: in oriented coordinates, log Phi(b + delta) - log Phi(b) = f with
        # delta = sign (x - log_anchor) / scale <= 0, and u' = (e^f - e^d) / (1 - e^d).
        delta = (sign * (x - log_anchor) / self.scale).clamp(max=0.0)
        delta = torch.where(tail, delta, torch.zeros_like(delta))
        f = -0.5 * delta * (2 * bt + delta) + _log_mills(bt + delta) - log_mills_b
        log_z = _log1mexp(log_ratio)
        below = ((f.exp() - log_ratio.exp()) * (-log_z).exp()).clamp(0, 1)
        above = (-torch.expm1(f) * (-log_z).exp()).clamp(0, 1)
        tail_cdf = torch.where(flip, above, below)
        # Central: erf differences.
        z = (x - self.loc) / self.scale
        erf_alpha = torch.erf(_SQRT_HALF * alpha)
        width = torch.erf(_SQRT_HALF * beta) - erf_alpha
        width = torch.where(tail, torch.ones_like(width), width)
        central_cdf = ((torch.erf(_SQRT_HALF * z) - erf_alpha) / width).clamp(0, 1)
        return torch.where(tail, tail_cdf, central_cdf)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        alpha, beta, flip, tail, at, bt, log_mills_b, log_ratio, log_anchor, sign = (
            self._tail_pieces()
        )
        finfo = torch.finfo(value.dtype)
        value = value.clamp(finfo.tiny, 1 - finfo.eps)

        # Tail: solve log Phi(b + delta) - log Phi(b) = w for delta in [a - b, 0], where
        # w = log(e^d + u' (1 - e^d)), by Newton steps on the concave left side.
        u = torch.where(flip, 1 - value, value)
        w = torch.logaddexp(log_ratio.expand_as(u), u.log() + _log1mexp(log_ratio))
        low_delta = at - bt
        with torch.no_grad():
            # Two lower bounds of the root: the tangent of the concave log CDF at b, and
            # -sqrt(-2 log Phi(x)) (from Phi(x) <= exp(-x^2/2) / 2).
            log_cdf_b = -0.5 * bt.square() - _LOG_SQRT_2PI + log_mills_b
            delta = torch.maximum(
                w * log_mills_b.exp(), -torch.sqrt(-2 * (w + log_cdf_b)) - bt
            ).clamp(max=0.0)
            delta = torch.maximum(delta, low_delta)
            for _ in range(_NEWTON_STEPS):
                log_mills_x = _log_mills(bt + delta)
                f = -0.5 * delta * (2 * bt + delta) + log_mills_x - log_mills_b
                delta = delta + (w - f) * log_mills_x.exp()
                delta = torch.maximum(delta.clamp(max=0.0), low_delta)
        # One more Newton step outside no_grad carries the implicit derivatives of delta
        # with respect to w and b.
        log_mills_x = _log_mills(bt + delta)
        f = -0.5 * delta * (2 * bt + delta) + log_mills_x - log_mills_b
        delta = delta + (w - f) * log_mills_x.exp()
        delta = torch.minimum(torch.maximum(delta, low_delta), torch.zeros_like(delta))
        tail_x = log_anchor + sign * self.scale * delta

        # Central: invert whichever of Phi and 1 - Phi is below 1/2.
        alpha_c = torch.where(tail, -torch.ones_like(alpha), alpha)
        beta_c = torch.where(tail, torch.ones_like(beta), beta)
        mass = 0.5 * (torch.erf(_SQRT_HALF * beta_c) - torch.erf(_SQRT_HALF * alpha_c))
        lower = (torch.special.ndtr(alpha_c) + value * mass).clamp(finfo.tiny, 1 - finfo.eps)
        upper = (torch.special.ndtr(-beta_c) + (1 - value) * mass).clamp(finfo.tiny, 1 - finfo.eps)
        z = torch.where(lower < 0.5, torch.special.ndtri(lower), -torch.special.ndtri(upper))
        central_x = self.loc + self.scale * torch.minimum(torch.maximum(z, alpha_c), beta_c)

        x = torch.where(tail, tail_x, central_x)
        x = torch.minimum(torch.maximum(x, self.low.log()), self.high.log())
        return torch.minimum(torch.maximum(x.exp(), self.low), self.high)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.icdf(u)
