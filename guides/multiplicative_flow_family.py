"""The multiplicative-normalizing-flow family for a layer's weight (Louizos and Welling, 2017)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from pyro.nn.module import to_pyro_module_
from pyro.poutine.runtime import am_i_wrapped
from torch import nn
from torch.distributions import constraints

from pyro_bnn.distributions import MaskedCoupling, MaskedFlow
from pyro_bnn.distributions.masked_flow import push_forward
from pyro_bnn.ops import GaussianWeight, RandomScale, ScaledWeight
from pyro_bnn.ops.local_reparameterization import local_reparameterization_enabled

from .auxiliary import auxiliary_log_density
from .family import GuideFamily, Site, register_family
from .local_reparameterized_normal import LocalReparameterizedNormal
from .normal_family import DEFAULT_INIT_LOG_VARIANCE, capped_log_variance, noise_to_signal

#: Initial log-variance of q(z_0) (the authors' code: log 0.1).
DEFAULT_INIT_NOISE_LOG_VARIANCE = math.log(0.1)

#: Draws of z behind the point estimates (``median``, ``log_alpha``): z's mean has no closed form
#: through the flow; a fixed seed makes them repeatable.
POINT_ESTIMATE_DRAWS = 256


def noise_dim(shape: torch.Size) -> int:
    """The weight dimension that ``z`` scales: input units of a linear layer's ``(out, in)``
    weight (thesis Eq. 49), output channels of a convolution's ``(out, in, *kernel)`` (Eq. 50)."""
    return 1 if len(shape) == 2 else 0


def _flow(dim: int, length: int, hidden_dim: int) -> PyroModule:
    steps = nn.ModuleList(MaskedCoupling(dim, hidden_dim) for _ in range(length))
    to_pyro_module_(steps)  # their weights become pyro.param statements, as every guide's
    return steps


class MultiplicativeNormal(LocalReparameterizedNormal):
    """``q(W | z) = N(z * M, sigma^2)`` with ``z`` along :func:`noise_dim`: the flow's weight
    given the noise that the guide sampled at its auxiliary site.

    It is a ``Normal`` (so the registered KL against the prior gives Eq. 59).  Its sample
    reaches the layers as a Gaussian weight with the mean scaled by that ``z``, or, for a
    linear layer with ``per_example`` noise, as a :class:`~pyro_bnn.ops.ScaledWeight` whose
    mean-only input scale is drawn afresh from ``q(z)`` for every example (Algorithm 1; the
    KL terms use the site's draw, an unbiased estimate of the same expectations).

    :param loc: ``M`` in the layer's layout.
    :param log_variance: ``log sigma^2``, same shape.
    :param noise: the sampled ``z``, shape ``(*sample, loc.shape[noise_dim])`` (leading sample
        dimensions, from a vectorized plate of posterior draws, become batch dimensions).
    :param noise_distribution: ``q(z)``, for the per-example draws, or ``None``.
    """

    def __init__(self, loc, log_variance, noise, noise_distribution=None, validate_args=None):
        axis = noise_dim(loc.shape)
        view = [*noise.shape[:-1], *[1] * loc.dim()]
        view[noise.dim() - 1 + axis] = -1
        self.weight_loc = loc
        self.noise = noise
        self.noise_distribution = noise_distribution
        super().__init__(loc * noise.reshape(view), log_variance=log_variance, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        plain = LocalReparameterizedNormal(self.loc, log_variance=self.log_variance)
        return plain.expand(batch_shape, _instance)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if sample_shape or not local_reparameterization_enabled():
            return super(LocalReparameterizedNormal, self).rsample(sample_shape)
        if self.noise_distribution is None:
            return GaussianWeight(self.loc, variance=self.variance)
        # Layer calls draw z afresh per example; any other use (a log-density of the sample)
        # sees the site's z, so the sample is one of q(W | z) whatever the ELBO.
        weight = GaussianWeight(self.weight_loc, variance=self.variance)
        scale = RandomScale(((self.noise_distribution, 1.0),), sample=self.noise)
        return ScaledWeight(weight, input_scale=scale, scale_variance=False)


@register_family
class MultiplicativeFlowFamily(GuideFamily):
    """Multiplicative normalizing flows: ``q(W) = int q(W | z) q(z) dz`` per layer, with
    (thesis Sec. 4.2, ``reference/methods-from-seeds.md`` 3)

    - ``q(z)``: a Gaussian ``q(z_0) = N(mu_0, sigma_0^2)`` pushed through ``flow_length``
      :class:`~pyro_bnn.distributions.MaskedCoupling` steps (``hidden_dim`` tanh units each),
      ``z`` one value per input unit of a linear layer or output channel of a convolution;
    - ``q(W | z) = N(z * M, sigma^2)``: ``z`` scales the mean only (:class:`MultiplicativeNormal`);
    - the auxiliary ``r(z | W)``: ``z`` through ``auxiliary_flow_length`` steps of
      ``auxiliary_hidden_dim`` units to ``z_b ~ N(mu_r, sigma_r^2)`` with
      ``mu_r = b1 * mean(tanh(c^T W))`` and ``sigma_r = sigmoid(b2 * mean(tanh(c^T W)))``
      (Eq. 53-57, the sigmoid standard deviation of the thesis; the authors' code uses a
      log-precision instead), ``c^T W`` drawn by local reparameterization given ``z``.

    The guide samples ``z`` at the auxiliary site ``"<site>.noise"`` (``is_auxiliary``: the ELBO
    subtracts ``log q(z)``, Eq. 61 through the flow's log-determinants), records ``log r(z | W)``
    (Eq. 60) with :func:`~pyro_bnn.guides.auxiliary.auxiliary_log_density`, then samples the
    weight from ``q(W | z)`` at the model's site, where the registered Normal KL against the
    prior is Eq. 59.  Together they are the bound of Eq. 52 in any of Pyro's ELBOs.

    Defaults are the thesis's: flows of length 2 with 50 hidden units for ``q(z)`` and 100 for
    ``r``; ``log sigma^2`` starts at -9 and ``q(z_0)`` at ``N(1, 0.1)`` (the authors start its
    mean near 0 with randomly initialized means; 1 keeps a pretrained or He-initialized mean
    network as it is).  The variance cap of the thesis (standard deviation at most 0.5 on
    MNIST) is the guide's ``max_scale``; it bounds ``sigma`` in the KL and in the layers alike.

    :param flow_length: steps of ``q(z)``'s flow (0: a Gaussian ``z``).
    :param hidden_dim: hidden units per step of ``q(z)``'s flow.
    :param auxiliary_flow_length: steps of ``r``'s flow.
    :param auxiliary_hidden_dim: hidden units per step of ``r``'s flow.
    :param per_example: draw ``z`` afresh for every example in linear layers (Algorithm 1);
        convolutions use the site's draw for the whole batch (Algorithm 2).
    :param init_log_variance: initial ``log sigma^2`` of ``q(W | z)``.
    :param init_noise_log_variance: initial log-variance of ``q(z_0)``.
    """

    name = "multiplicative_flow"

    def __init__(
        self,
        flow_length: int = 2,
        hidden_dim: int = 50,
        auxiliary_flow_length: int = 2,
        auxiliary_hidden_dim: int = 100,
        per_example: bool = True,
        init_log_variance: float = DEFAULT_INIT_LOG_VARIANCE,
        init_noise_log_variance: float = DEFAULT_INIT_NOISE_LOG_VARIANCE,
    ):
        for setting, value, least in (
            ("flow_length", flow_length, 0),
            ("hidden_dim", hidden_dim, 1),
            ("auxiliary_flow_length", auxiliary_flow_length, 0),
            ("auxiliary_hidden_dim", auxiliary_hidden_dim, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(
                    f"the multiplicative flow's {setting} must be an integer >= {least}, "
                    f"got {value!r}"
                )
        for setting, value in (
            ("init_log_variance", init_log_variance),
            ("init_noise_log_variance", init_noise_log_variance),
        ):
            if not math.isfinite(value):
                raise ValueError(f"the multiplicative flow's {setting} must be finite, got {value}")
        self.flow_length = flow_length
        self.hidden_dim = hidden_dim
        self.auxiliary_flow_length = auxiliary_flow_length
        self.auxiliary_hidden_dim = auxiliary_hidden_dim
        self.per_example = per_example
        self.init_log_variance = float(init_log_variance)
        self.init_noise_log_variance = float(init_noise_log_variance)

    def unsupported(self, site: Site) -> str | None:
        if site.support is not constraints.real:
            return f"its support is {site.support}; the flow's weights are real"
        if len(site.shape) < 2:
            return (
                f"it has shape {tuple(site.shape)}; multiplicative noise needs a layer's weight, "
                "(out, in) or (out, in, *kernel)"
            )
        if site.per_example:
            return "the model asks for a draw per example, which a weight matrix cannot take"
        return None

    def parameters(self, site: Site, init: torch.Tensor) -> dict[str, PyroParam | PyroModule]:
        loc = init.detach().clone()
        start = self.init_log_variance if site.init_log_variance is None else site.init_log_variance
        log_variance = torch.as_tensor(start).to(loc).expand_as(loc).clone()
        dim = loc.shape[noise_dim(loc.shape)]
        # r's vectors start small: mu_r near 0, sigma_r near sigmoid(0) = 1/2.
        head = torch.randn(3, dim, dtype=loc.dtype, device=loc.device) / math.sqrt(dim)
        return {
            "loc": PyroParam(loc, constraints.real),
            "log_variance": PyroParam(log_variance, constraints.real),
            "noise_loc": PyroParam(loc.new_ones(dim), constraints.real),
            "noise_log_variance": PyroParam(
                loc.new_full((dim,), self.init_noise_log_variance), constraints.real
            ),
            "flow": _flow(dim, self.flow_length, self.hidden_dim).to(loc),
            "auxiliary_flow": _flow(dim, self.auxiliary_flow_length, self.auxiliary_hidden_dim).to(
                loc
            ),
            "auxiliary_c": PyroParam(head[0].clone(), constraints.real),
            "auxiliary_b_mean": PyroParam(head[1].clone(), constraints.real),
            "auxiliary_b_scale": PyroParam(head[2].clone(), constraints.real),
        }

    # --------------------------------------------------------------------------- distributions

    def noise_distribution(self, params: PyroModule) -> dist.Distribution:
        """``q(z)``: ``q(z_0)`` through the flow, event shape ``(dim,)``."""
        base = dist.Normal(
            params.noise_loc, params.noise_log_variance.mul(0.5).exp(), validate_args=False
        ).to_event(1)
        return MaskedFlow(base, list(params.flow)) if len(params.flow) else base

    def conditional(
        self, site: Site, params: PyroModule, noise: torch.Tensor, noise_distribution=None
    ) -> MultiplicativeNormal:
        """``q(W | z)`` at ``z = noise``."""
        per_example = noise_distribution if self.per_example and len(site.shape) == 2 else None
        return MultiplicativeNormal(
            params.loc, capped_log_variance(site, params.log_variance), noise, per_example
        )

    def auxiliary_log_density(
        self, site: Site, params: PyroModule, noise: torch.Tensor
    ) -> torch.Tensor:
        """One draw of ``log r(z | W)`` (Eq. 53-57 and 60), ``W ~ q(W | z)`` seen only through
        ``c^T W``, which is Gaussian given ``z`` and drawn by local reparameterization."""
        axis = noise_dim(site.shape)
        loc = params.loc.movedim(axis, 0).flatten(1)  # (dim, rest)
        variance = capped_log_variance(site, params.log_variance).exp().movedim(axis, 0).flatten(1)
        c = params.auxiliary_c
        mean = (c * noise) @ loc
        std = (c.square() @ variance).clamp_min(torch.finfo(loc.dtype).tiny).sqrt()
        summary = torch.tanh(mean + std * torch.randn_like(mean)).mean()
        r_loc = params.auxiliary_b_mean * summary
        r_scale = torch.sigmoid(params.auxiliary_b_scale * summary)
        backward, log_det = push_forward(params.auxiliary_flow, noise)
        log_density = dist.Normal(r_loc, r_scale, validate_args=False).log_prob(backward).sum(-1)
        return log_density + log_det

    # ------------------------------------------------------------------------------ protocol

    def sample(self, site: Site, params: PyroModule) -> torch.Tensor:
        q_noise = self.noise_distribution(params)
        noise = pyro.sample(f"{site.name}.noise", q_noise, infer={"is_auxiliary": True})
        if am_i_wrapped():  # a plain call of the guide (outside inference) has no bound to add to
            auxiliary_log_density(
                f"{site.name}.noise.auxiliary", self.auxiliary_log_density(site, params, noise)
            )
        fn = self.conditional(site, params, noise, q_noise)
        return pyro.sample(site.name, fn.to_event(site.event_dim))

    @torch.no_grad()
    def expected_noise(self, params: PyroModule) -> torch.Tensor:
        """A Monte Carlo estimate of ``E[z]`` (:data:`POINT_ESTIMATE_DRAWS` draws, fixed seed)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return self.noise_distribution(params).sample((POINT_ESTIMATE_DRAWS,)).mean(0)

    def posterior(self, site: Site, params: PyroModule) -> MultiplicativeNormal:
        """``q(W | z)`` at ``z = E[z]``: the weight's distribution around the posterior mean."""
        return self.conditional(site, params, self.expected_noise(params))

    def median(self, site: Site, params: PyroModule) -> torch.Tensor:
        """``E[z] * M``, the posterior mean of the weights."""
        return self.posterior(site, params).loc

    def log_alpha(self, site: Site, params: PyroModule) -> torch.Tensor:
        fn = self.posterior(site, params)
        return noise_to_signal(fn.loc, fn.log_variance)
