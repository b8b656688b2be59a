r"""
KL divergences for the guide/prior pairs of the methods, registered with
:func:`torch.distributions.kl.register_kl` so that
:func:`~torch.distributions.kl.kl_divergence` and therefore
:class:`~pyro.infer.TraceMeanField_ELBO` use them. Every closed form here is checked
against a Monte Carlo estimate in the tests.

Pairs without a closed form are deliberately not registered: for them
``kl_divergence`` raises ``NotImplementedError`` and ``TraceMeanField_ELBO`` falls back
to the Monte Carlo term :math:`\log q(w) - \log p(w)` at the sampled weight. This is
the case for a Normal guide against :class:`ScaleMixtureNormal` (Bayes by Backprop's
own estimator) and against :class:`~pyro.distributions.HalfCauchy`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import (
    Gamma,
    Independent,
    InverseGamma,
    LogNormal,
    MultivariateNormal,
    Normal,
    kl_divergence,
    register_kl,
)
from torch.distributions.kl import _kl_normal_normal

from .hard_concrete import HardConcrete
from .improper_log_uniform import ImproperLogUniform
from .l0_prior import L0Prior
from .log_uniform import LogUniform
from .log_variance_normal import LogVarianceNormal
from .matrix_normal import MatrixNormal
from .spike_and_slab import SpikeAndSlab
from .truncated_log_normal import TruncatedLogNormal

# Constants of the sparse variational dropout approximation (thesis Eq. 81).
K1, K2, K3 = 0.63576, 1.87320, 1.48695

#: ``log_alpha`` is clamped to this range before the sparse-VD approximation. Above
#: the upper end the KL is below 3e-5 nats per weight; the lower end only stops the
#: KL's pull on weights that are already almost noiseless. Clamping also keeps the
#: gradient finite for a mean of exactly zero.
LOG_ALPHA_RANGE = (-10.0, 10.0)

#: The sparse-VD KL is normalized to vanish as ``alpha -> inf``; the Monte Carlo
#: estimate of E_q[log q(w) - log p(w)] with ``log p(w) = -log|w|`` is smaller by
#: this constant, 0.5 log(2 pi e) + (gamma_Euler + log 2) / 2.
LOG_UNIFORM_KL_OFFSET = 0.5 * math.log(2 * math.pi * math.e) + 0.5 * (
    0.5772156649015329 + math.log(2.0)
)

#: Largest absolute error of :func:`sparse_vd_kl` against the exact KL over
#: ``log_alpha`` in [-10, 10], measured against a series evaluation (about 0.0094
#: nats near ``log_alpha = -3.5``).
SPARSE_VD_KL_MAX_ERROR = 0.0095


def sparse_vd_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    r"""
    KL divergence from :math:`\mathcal{N}(\mu, \alpha\mu^2)` to the log-uniform prior
    :math:`p(w) \propto 1/|w|` as a function of :math:`\log\alpha` alone
    (Molchanov et al., 2017; thesis Eq. 81 with its sign corrected):

    .. math::
        \mathrm{KL} \approx k_1 - k_1\,\sigma(k_2 + k_3\log\alpha)
                     + \tfrac12\,\mathrm{softplus}(-\log\alpha),

    with :math:`k_1 = 0.63576`, :math:`k_2 = 1.87320`, :math:`k_3 = 1.48695`. It tends
    to 0 as :math:`\alpha \to \infty` and to :math:`k_1 - \tfrac12\log\alpha` as
    :math:`\alpha \to 0`; its error against the exact value is at most
    :data:`SPARSE_VD_KL_MAX_ERROR`. ``log_alpha`` is first clamped to
    :data:`LOG_ALPHA_RANGE`.

    :param torch.Tensor log_alpha: :math:`\log\sigma^2 - \log\mu^2`, any shape.
    :returns: the KL per weight, same shape.
    """
    log_alpha = log_alpha.clamp(*LOG_ALPHA_RANGE)
    return K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)


class _PrecomputedGradient(torch.autograd.Function):
    """An elementwise KL whose forward pass saves its local derivatives with respect to the
    guide's mean and log-variance (its first two inputs, the only differentiable ones), so the
    backward pass is two products."""

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_loc, grad_log_variance = ctx.saved_tensors
        extra = (None,) * (len(ctx.needs_input_grad) - 2)  # the prior's constants
        return (
            grad * grad_loc if ctx.needs_input_grad[0] else None,
            grad * grad_log_variance if ctx.needs_input_grad[1] else None,
            *extra,
        )


class _SparseVDKL(_PrecomputedGradient):
    """:func:`sparse_vd_kl` of ``log alpha = log sigma^2 - log mu^2`` as one fused operation.

    It is evaluated for every weight of a network on every training step, where it used to cost
    more than the layers themselves, so it is written for speed: four transcendental functions,
    in-place arithmetic, and the local derivatives computed in the forward pass (the backward is
    two products).  With s = sigmoid(k2 + k3 log a) and t = sigmoid(log a), softplus(-log a) =
    -log t and::

        KL = k1 - k1 s - log(t) / 2
        dKL / dlog a = -k1 k3 s (1 - s) - (1 - t) / 2      (0 where log a is clamped)
        dlog a / dlog sigma^2 = 1,    dlog a / dmu = -2 mu / mu^2
    """

    @staticmethod
    def forward(ctx, loc: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
        # Written as few whole-tensor passes and fresh buffers as possible (a float 0/1 mask is
        # cheaper than a boolean one, in-place updates cheaper than new tensors): it runs over
        # every weight on every step, and each transcendental costs as much as ten products.
        loc_square = torch.mul(loc, loc).add_(torch.finfo(loc.dtype).tiny)
        raw = torch.sub(log_variance, loc_square.log())
        log_alpha = raw.clamp(*LOG_ALPHA_RANGE)
        t = torch.sigmoid(log_alpha)
        mask = torch.eq(raw, log_alpha, out=raw)  # 1 where the clamp is inactive
        s = log_alpha.mul_(K3).add_(K2).sigmoid_()
        kl = t.log().mul_(-0.5).sub_(s, alpha=K1).add_(K1)
        if any(ctx.needs_input_grad):
            # dKL / dlog a = k1 k3 (s^2 - s) + (t - 1) / 2, built in t's buffer.
            grad_log_alpha = t.sub_(1.0).mul_(0.5).addcmul_(s, s, value=K1 * K3)
            grad_log_alpha.sub_(s, alpha=K1 * K3).mul_(mask)
            grad_loc = loc_square.reciprocal_().mul_(loc).mul_(grad_log_alpha).mul_(-2.0)
            ctx.save_for_backward(grad_loc, grad_log_alpha)
        return kl


def sparse_vd_kl_normal(loc: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """:func:`sparse_vd_kl` of a Normal(loc, exp(log_variance)) guide, per weight, computed
    directly from the mean and the log-variance with a hand-written gradient."""
    loc, log_variance = torch.broadcast_tensors(loc, log_variance)
    return _SparseVDKL.apply(loc, log_variance)


def _constant_view(value: torch.Tensor) -> torch.Tensor:
    """A 0-d view of ``value`` when it is one number broadcast to a shape (all strides 0, as
    after ``Normal(0., s).expand(shape)``), else ``value`` itself: arithmetic on the view costs
    one operation instead of one per weight."""
    if value.dim() and not any(value.stride()):
        return value.as_strided((), ())
    return value


class _NormalKL(_PrecomputedGradient):
    r"""KL(N(mu, exp(lv)) || N(m, s^2)) per entry, from the guide's mean and log-variance, with
    a hand-written gradient for a prior that is not trained.

    With v = exp(lv) and the prior's precision r = s^-2::

        KL = ((mu - m)^2 + v) r / 2 - (lv + 1) / 2 + log s
        dKL / dmu = (mu - m) r,        dKL / dlv = (v r - 1) / 2

    torch's Normal-Normal KL takes the guide's scale (an exponential), forms two ratios and a
    logarithm per weight and differentiates all of it; a weight-sampled network pays that for
    every weight on every step.  Here a constant prior mean and scale cost nothing per weight.
    """

    @staticmethod
    def forward(ctx, loc, log_variance, prior_loc, prior_scale):
        prior_loc, prior_scale = _constant_view(prior_loc), _constant_view(prior_scale)
        precision = prior_scale.square().reciprocal()
        diff = loc - prior_loc
        variance = log_variance.exp()
        kl = diff.square().add_(variance).mul_(precision).sub_(log_variance).sub_(1.0).mul_(0.5)
        kl.add_(prior_scale.log())
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(
                diff.mul_(precision), variance.mul_(precision).sub_(1.0).mul_(0.5)
            )
        return kl


def normal_kl_normal(
    loc: torch.Tensor,
    log_variance: torch.Tensor,
    prior_loc: torch.Tensor,
    prior_scale: torch.Tensor,
) -> torch.Tensor:
    """KL(N(loc, exp(log_variance)) || N(prior_loc, prior_scale^2)) per entry.

    :param loc: the guide's means.
    :param log_variance: the guide's log-variances, same shape as ``loc``.
    :param prior_loc: the prior's means, broadcastable to ``loc``'s shape.
    :param prior_scale: the prior's standard deviations, broadcastable to ``loc``'s shape.
    :returns: a tensor of ``loc``'s shape.

    Uses the hand-written gradient of :class:`_NormalKL` when the prior is not trained; a
    learned prior (a hierarchical scale, say) gets the same formula through autograd.
    """
    if loc.shape != log_variance.shape:
        raise ValueError(
            f"loc {tuple(loc.shape)} and log_variance {tuple(log_variance.shape)} must have "
            "the same shape"
        )
    if prior_loc.requires_grad or prior_scale.requires_grad:
        precision = prior_scale.square().reciprocal()
        return (
            ((loc - prior_loc).square() + log_variance.exp()) * precision / 2
            - (log_variance + 1) / 2
            + prior_scale.log()
        )
    return _NormalKL.apply(loc, log_variance, prior_loc, prior_scale)


def expand_to_pair(kl: torch.Tensor, p, q) -> torch.Tensor:
    """``kl`` (computed with ``p``'s batch shape) expanded to the batch shape of the pair.

    The prior usually has the guide's shape already, and sparse-VD KLs run for every layer on
    every step: ``torch.broadcast_shapes`` costs a thousand times the comparison, so it is only
    called when the shapes differ.
    """
    if q.batch_shape == p.batch_shape:
        return kl
    return kl.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))


@register_kl(Normal, ImproperLogUniform)
def _kl_normal_improper_log_uniform(p: Normal, q: ImproperLogUniform) -> torch.Tensor:
    # A LogVarianceNormal's own log sigma^2, when it kept one, saves a logarithm per weight.
    log_variance = getattr(p, "log_variance", None)
    if log_variance is None:
        log_variance = 2 * p.scale.log()
    return expand_to_pair(sparse_vd_kl_normal(p.loc, log_variance), p, q)


@register_kl(LogVarianceNormal, Normal)
def _kl_log_variance_normal_normal(p, q) -> torch.Tensor:
    # The hand-written form from log sigma^2; the general one where the guide has no
    # log-variance or the prior has more batch dimensions than the guide.
    if p.log_variance is None or q.batch_shape != p.batch_shape:
        return _kl_normal_normal(p, q)
    return normal_kl_normal(p.loc, p.log_variance, q.loc, q.scale)


@register_kl(LogNormal, Gamma)
def _kl_log_normal_gamma(p: LogNormal, q: Gamma) -> torch.Tensor:
    # -E_q[log Gamma(x | a, b)] uses E[log x] = mu and E[x] = exp(mu + sigma^2 / 2)
    # (thesis Eq. 152, with rate b = 1 / scale).
    a, b = q.concentration, q.rate
    cross_entropy = (
        torch.lgamma(a) - a * b.log() - (a - 1) * p.loc + b * (p.loc + 0.5 * p.scale.square()).exp()
    )
    return cross_entropy - p.entropy()


@register_kl(LogNormal, InverseGamma)
def _kl_log_normal_inverse_gamma(p: LogNormal, q: InverseGamma) -> torch.Tensor:
    # Uses E[1 / x] = exp(-mu + sigma^2 / 2) (thesis Eq. 148).
    a, b = q.concentration, q.rate
    cross_entropy = (
        torch.lgamma(a) - a * b.log() + (a + 1) * p.loc + b * (0.5 * p.scale.square() - p.loc).exp()
    )
    return cross_entropy - p.entropy()


@register_kl(SpikeAndSlab, SpikeAndSlab)
def _kl_spike_and_slab(p: SpikeAndSlab, q: SpikeAndSlab) -> torch.Tensor:
    # The chain rule over the inclusion indicator: KL(Bern) + pi_p KL(slab_p || slab_q)
    # (thesis Eq. 158-159); the two spikes coincide and contribute nothing. A
    # spike-and-slab guide is not reparameterizable, so TraceMeanField_ELBO (which
    # requires that) will not reach this; it serves objectives written by hand.
    bernoulli = (
        torch.special.xlogy(p.probs, p.probs)
        - torch.special.xlogy(p.probs, q.probs)
        + torch.special.xlogy(1 - p.probs, 1 - p.probs)
        - torch.special.xlogy(1 - p.probs, 1 - q.probs)
    )
    slab = kl_divergence(Normal(p.loc, p.scale), Normal(q.loc, q.scale))
    return bernoulli + torch.where(p.probs > 0, p.probs * slab, torch.zeros_like(slab))


@register_kl(HardConcrete, HardConcrete)
def _kl_hard_concrete(p: HardConcrete, q: HardConcrete) -> torch.Tensor:
    r"""
    The chain rule over {0}, {1} and (0, 1) (thesis Eq. 166-168):

    .. math::
        P(0)\log\frac{P(0)}{Q(0)} + P(1)\log\frac{P(1)}{Q(1)}
        + \int_0^1 p(z)\log\frac{p(z)}{q(z)}\,dz.

    The atoms are exact. The thesis estimates the last integral by Monte Carlo with
    inverse-CDF samples of the truncated density; here the same one-dimensional
    integral is evaluated with :data:`~pyro_bnn.distributions.hard_concrete.QUADRATURE_NODES`
    Gauss-Legendre nodes, which is deterministic, differentiable, and far more
    accurate than any affordable number of samples (both densities are smooth on
    [0, 1]).
    """
    batch_shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    nodes, weights = p._quadrature(len(batch_shape))
    log_p, log_q = p._stretched_log_density(nodes), q._stretched_log_density(nodes)
    continuous = (weights * log_p.exp() * (log_p - log_q)).sum(0)
    atoms = p.log_prob_zero.exp() * (p.log_prob_zero - q.log_prob_zero) + p.log_prob_one.exp() * (
        p.log_prob_one - q.log_prob_one
    )
    return (atoms + continuous).expand(batch_shape)


@register_kl(HardConcrete, L0Prior)
def _kl_hard_concrete_l0(p: HardConcrete, q: L0Prior) -> torch.Tensor:
    r"""
    The expected L0 penalty (thesis Eq. 106, 110): with :math:`\log L0Prior(z) =
    -\lambda [z \neq 0] - \log(1 + 2e^{-\lambda})` on the hard concrete's base measure,

    .. math:: \mathrm{KL} = \lambda\,P(z \neq 0) + \log(1 + 2e^{-\lambda}) - H[p].

    Unless ``q.gate_entropy``, only :math:`\lambda\,P(z \neq 0)` is returned: the KL up to
    the gate entropy and a term constant in ``p``, i.e. the L0 objective of Eq. 97.
    """
    kl = q.penalty * p.prob_nonzero
    if q.gate_entropy:
        kl = kl + q.log_normalizer - p.entropy()
    return kl.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))


@register_kl(TruncatedLogNormal, LogUniform)
def _kl_truncated_log_normal_log_uniform(p: TruncatedLogNormal, q: LogUniform) -> torch.Tensor:
    r"""
    Structured Bayesian pruning's KL (Neklyudov et al., 2017). On the log scale
    :math:`x = \log\theta` the prior is uniform on :math:`[\log a, \log b]`, and the KL is
    invariant under the change of variables, so

    .. math::
        \mathrm{KL} = -H[\theta] + \mathbb{E}[\log\theta] + \log(\log b - \log a)
                    = \log(\log b - \log a) - H[x],
        \qquad H[x] = \log(\sqrt{2\pi e}\,\sigma Z)
                      + \frac{\alpha\phi(\alpha) - \beta\phi(\beta)}{2Z},

    the entropy of the truncated normal :math:`x` (:math:`H[\theta] = H[x] + \mathbb{E}[x]`).
    It holds whenever the support of ``p`` lies inside the prior's (with equal bounds in
    SBP); otherwise the KL is infinite and this raises ``ValueError``.
    """
    if not (torch.le(q.low, p.low).all() and torch.le(p.high, q.high).all()):
        raise ValueError(
            "kl_divergence(TruncatedLogNormal, LogUniform): the support of the truncated "
            "log-normal must lie inside the log-uniform prior's (the same bounds in SBP), "
            f"otherwise the KL is infinite; got [{p.low}, {p.high}] against [{q.low}, {q.high}]"
        )
    entropy_log, _ = p._log_entropy_terms()
    low, high = q.low.to(entropy_log.dtype), q.high.to(entropy_log.dtype)
    kl = (high.log() - low.log()).log() - entropy_log
    return kl.to(p.loc.dtype).expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))


def _check_event_shapes(p, q) -> None:
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"kl_divergence: event shapes differ, {tuple(p.event_shape)} for "
            f"{type(p).__name__} and {tuple(q.event_shape)} for {type(q).__name__}"
        )


def _independent_normal(d: Independent, ndims: int) -> Normal:
    """The base Normal of ``d``, or NotImplementedError so the caller falls back."""
    if not (isinstance(d.base_dist, Normal) and d.reinterpreted_batch_ndims == ndims):
        raise NotImplementedError
    return d.base_dist


@register_kl(MatrixNormal, MatrixNormal)
def _kl_matrix_normal_matrix_normal(p: MatrixNormal, q: MatrixNormal) -> torch.Tensor:
    # Thesis Eq. 123: 1/2 [tr(Uq^-1 Up) tr(Vq^-1 Vp) + tr((Mq-Mp)^T Uq^-1 (Mq-Mp) Vq^-1)
    #                      - rc + c log|Uq|/|Up| + r log|Vq|/|Vp|].
    _check_event_shapes(p, q)
    rows, cols = p.event_shape
    trace = q._row.trace_solve(p._row) * q._col.trace_solve(p._col)
    mahalanobis = q._col.solve_right(q._row.solve_left(q.loc - p.loc)).square().sum((-2, -1))
    log_det_ratio = cols * (q._row.log_det() - p._row.log_det()) + rows * (
        q._col.log_det() - p._col.log_det()
    )
    return 0.5 * (trace + mahalanobis - rows * cols + log_det_ratio)


@register_kl(MatrixNormal, Independent)
def _kl_matrix_normal_normal(p: MatrixNormal, q: Independent) -> torch.Tensor:
    # Prior N(m, s^2) independently per entry: the Gaussian KL with diagonal Sigma_q
    # and Sigma_p = Vp kron Up, whose diagonal is Up_ii Vp_jj.
    base = _independent_normal(q, 2)
    _check_event_shapes(p, q)
    rows, cols = p.event_shape
    elementwise = (
        p.variance / base.scale.square()
        + ((p.loc - base.loc) / base.scale).square()
        + 2 * base.scale.log()
    )
    log_det_p = cols * p._row.log_det() + rows * p._col.log_det()
    return 0.5 * (elementwise.sum((-2, -1)) - rows * cols - log_det_p)


@register_kl(Independent, MatrixNormal)
def _kl_normal_matrix_normal(p: Independent, q: MatrixNormal) -> torch.Tensor:
    # Mean-field guide against a matrix normal prior; diag(Sigma_q^-1) = diag(Uq^-1) diag(Vq^-1).
    base = _independent_normal(p, 2)
    _check_event_shapes(p, q)
    rows, cols = q.event_shape
    precision = q._row.precision_diag().unsqueeze(-1) * q._col.precision_diag().unsqueeze(-2)
    trace = (precision * base.scale.square()).sum((-2, -1))
    mahalanobis = q._col.solve_right(q._row.solve_left(base.loc - q.loc)).square().sum((-2, -1))
    log_det_q = cols * q._row.log_det() + rows * q._col.log_det()
    log_det_p = 2 * base.scale.log().sum((-2, -1))
    return 0.5 * (trace + mahalanobis - rows * cols + log_det_q - log_det_p)


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_normal(p: MultivariateNormal, q: Independent) -> torch.Tensor:
    # Full-covariance guide against an iid Normal prior on a vector.
    base = _independent_normal(q, 1)
    _check_event_shapes(p, q)
    scale_tril = p.scale_tril
    variance = scale_tril.square().sum(-1)
    log_det_p = 2 * scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    elementwise = variance / base.scale.square() + ((p.loc - base.loc) / base.scale).square()
    return 0.5 * ((elementwise + 2 * base.scale.log()).sum(-1) - p.event_shape[0] - log_det_p)
