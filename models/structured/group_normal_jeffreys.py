r"""Bayesian compression with the group normal-Jeffreys prior (BC-GNJ; thesis Sec. 6.2).

.. math::
    p(z_i) \propto |z_i|^{-1}, \qquad \tilde w_{ij} \sim \mathcal{N}(0, 1), \qquad
    w_{ij} = z_i \tilde w_{ij},

so the weights of group :math:`i` share the scale :math:`z_i` and the marginal prior of a
weight is the log-uniform :math:`p(w) \propto 1/|w|` (Eq. 76-77).  The guide of the thesis
(Eq. 78) is :math:`q(z_i) = \mathcal{N}(\mu_{z_i}, \sigma^2_{z_i})` and :math:`q(\tilde w_{ij})
= \mathcal{N}(\mu_{ij}, \sigma^2_{ij})`, which :class:`~pyro_bnn.guides.AutoSiteGuide` gives by
default; the KLs are the sparse-VD approximation on :math:`\log\alpha_i = \log\sigma^2_{z_i} -
\log\mu^2_{z_i}` (Eq. 81, with its sign fixed) and the Gaussian KL of Eq. 80.  The scales are
drawn per example at the layer call (Alg. 5 and 6).  Each group scale starts at the root mean
square of its group's initial weights (:func:`~pyro_bnn.models.structured.base.group_rms`).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from pyro_bnn.distributions import ImproperLogUniform
from pyro_bnn.ops import scale_groups

from .base import GroupPosterior, WeightPrior, group_rms, group_view, posterior_of

#: Default pruning threshold on the group's log alpha: a group is kept while
#: log sigma_z^2 - log mu_z^2 < -3 (alpha < 0.05).  The thesis picks thresholds from the
#: bimodal histogram (Fig. 28); its reference code uses -2.8, -3 and -5 on LeNet-300-100.
DEFAULT_LOG_ALPHA_THRESHOLD = -3.0

#: The groups' starting log alpha, alpha = 3e-4: every group starts active, well below the
#: pruning threshold, and close enough to it for SVI to reach it in tens of epochs.  (The
#: thesis starts at alpha ~ 1e-8 and trains for 200 epochs.)
INIT_LOG_ALPHA = -8.0


class GroupNormalJeffreys(WeightPrior):
    """The group normal-Jeffreys prior of a layer's weight; sites ``{name}.group_scale``
    (``(groups,)``, improper log-uniform, drawn per example) and ``{name}.standardized`` (the
    weight's shape, standard normal)."""

    method = "group-nj"
    default_threshold = DEFAULT_LOG_ALPHA_THRESHOLD

    def sample(self, name, init, group_dim, unscaled):
        groups = init.shape[group_dim]
        start = group_rms(init, group_dim)
        scale = pyro.sample(
            f"{name}.group_scale",
            ImproperLogUniform((groups,)).to_event(1),
            # alpha = sigma_z^2 / mu_z^2 starts at exp(INIT_LOG_ALPHA): every group starts active.
            infer={
                "per_example": True,
                "init_value": start,
                "init_log_variance": start.square().log() + INIT_LOG_ALPHA,
            },
        )
        standardized = pyro.sample(
            f"{name}.standardized",
            dist.Normal(torch.zeros_like(init), 1.0).to_event(init.dim()),
            infer={"init_value": init / group_view(start, init.shape, group_dim)},
        )
        return scale_groups(standardized, scale, group_dim)

    def summarize(self, guide, name, shape, group_dim, unscaled, threshold):
        scale = posterior_of(guide, f"{name}.group_scale", dist.Normal)
        weight = posterior_of(guide, f"{name}.standardized", dist.Normal)
        mu_z, var_z = scale.loc, scale.variance
        log_alpha = var_z.log() - mu_z.square().clamp_min(1e-30).log()
        mu_z, var_z = group_view(mu_z, shape, group_dim), group_view(var_z, shape, group_dim)
        mu, var = weight.loc, weight.variance
        return GroupPosterior(
            mean=mu_z * mu,
            # Eq. 93: V(z w) = V(z) (V(w) + E[w]^2) + V(w) E[z]^2.
            variance=var_z * (var + mu.square()) + var * mu_z.square(),
            statistic=log_alpha,
            keep=log_alpha < threshold,
            group_dim=group_dim,
        )
