r"""Spike-and-slab over groups of weights (thesis Sec. 6.4 and App. 10.5.1).

.. math::
    z_g \sim \mathrm{Bern}(\pi_0), \qquad \tilde w_{ij} \sim \mathcal{N}(0, s^2), \qquad
    w_{ij} = z_{g(i)} \tilde w_{ij}:

a group (input neuron, output channel) is either switched off entirely or has Gaussian
weights, with a slab scale :math:`s` (by default the thesis's unit slab, or the scale of the
layer's initial weights).  The guide is Bernoulli times Gaussian, :math:`q(z_g) =
\mathrm{Bern}(\pi_g)` and :math:`q(\tilde w) = \mathcal{N}(\mu, \sigma^2)` (the defaults of
:class:`~pyro_bnn.guides.AutoSiteGuide` for these priors), trained with the concrete relaxation
of :math:`z` drawn per example and the exact Bernoulli KL.  It is mean field over :math:`(z,
\tilde w)`, so a group pays its slab's KL whatever its inclusion; the thesis's family with
:math:`q(\tilde w | z = 0) = p(\tilde w)` pays :math:`\pi_g` of it.  The two agree where a
group is switched off and its slab posterior returns to the prior, which is where the likelihood
no longer constrains it.

For a spike-and-slab on individual weights, give a weight the
:class:`~pyro_bnn.distributions.SpikeAndSlab` prior directly (``BayesianNetwork(net, lik,
prior=lambda name, p: SpikeAndSlab(pi0, 0.0, 1.0).expand(p.shape))``): its guide family is the
thesis's exactly, with the registered KL ``KL(Bern) + pi KL(slab)``.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from pyro_bnn.ops import scale_groups

from .base import GroupPosterior, WeightPrior, group_view, posterior_of

#: A group is kept while its posterior inclusion probability exceeds 1/2 (the median
#: probability model).
DEFAULT_INCLUSION_THRESHOLD = 0.5


class GroupSpikeAndSlab(WeightPrior):
    """Spike-and-slab on a layer's groups; sites ``{name}.inclusion`` (``(groups,)``,
    Bernoulli, drawn per example) and ``{name}.slab`` (the weight's shape, ``N(0, s^2)``).

    :param prior_inclusion: :math:`\\pi_0`, the prior probability that a group is on.
    :param slab_scale: the slab's standard deviation: 1 as in the thesis (App. 10.5.1), or
        ``None`` for the root mean square of the layer's initial weights (the scale its
        initialization, He's or PyTorch's, assumes).
    """

    method = "spike-and-slab"
    default_threshold = DEFAULT_INCLUSION_THRESHOLD

    def __init__(self, prior_inclusion: float = 0.5, slab_scale: float | None = 1.0):
        if not (isinstance(prior_inclusion, (int, float)) and 0 < prior_inclusion < 1):
            raise ValueError(
                f"the prior inclusion probability must lie in (0, 1), got {prior_inclusion!r}"
            )
        if slab_scale is not None and not (
            isinstance(slab_scale, (int, float)) and 0 < slab_scale < math.inf
        ):
            raise ValueError(f"the slab scale must be positive and finite, got {slab_scale!r}")
        self.prior_inclusion = float(prior_inclusion)
        self.slab_scale = slab_scale

    def sample(self, name, init, group_dim, unscaled):
        groups = init.shape[group_dim]
        probs = torch.full((groups,), self.prior_inclusion).to(init)
        inclusion = pyro.sample(
            f"{name}.inclusion",
            dist.Bernoulli(probs).to_event(1),
            infer={"per_example": True, "init_value": torch.ones_like(probs)},
        )
        scale = self.slab_scale
        if scale is None:
            scale = init.square().mean().sqrt().clamp_min(1e-3)
        slab = pyro.sample(
            f"{name}.slab",
            dist.Normal(torch.zeros_like(init), scale).to_event(init.dim()),
            infer={"init_value": init},
        )
        return scale_groups(slab, inclusion, group_dim)

    def summarize(self, guide, name, shape, group_dim, unscaled, threshold):
        inclusion = (dist.RelaxedBernoulli, dist.Bernoulli)
        probs = posterior_of(guide, f"{name}.inclusion", inclusion).probs
        slab = posterior_of(guide, f"{name}.slab", dist.Normal)
        mu, var = slab.loc, slab.variance
        pi = group_view(probs, shape, group_dim)
        return GroupPosterior(
            # The median probability model: a kept group has its slab mean.
            mean=mu,
            variance=pi * (var + mu.square()) - (pi * mu).square(),
            statistic=probs,
            keep=probs > threshold,
            group_dim=group_dim,
        )

    def check_threshold(self, threshold):
        if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
            raise ValueError(
                f"the spike-and-slab threshold is an inclusion probability in (0, 1), got "
                f"{threshold!r}"
            )

    def __repr__(self) -> str:
        return (
            f"GroupSpikeAndSlab(prior_inclusion={self.prior_inclusion:g}, "
            f"slab_scale={self.slab_scale})"
        )
