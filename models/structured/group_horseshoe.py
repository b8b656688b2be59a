r"""Bayesian compression with the group horseshoe prior (BC-GHS; thesis Sec. 6.3).

The non-centred hierarchy of Eq. 85, with each half-Cauchy written as the square root of a
Gamma times an inverse Gamma (:func:`~pyro_bnn.distributions.half_cauchy_decomposition`):

.. math::
    s_a \sim \mathcal{G}(\tfrac12, \tau_0^2),\; s_b \sim \mathcal{IG}(\tfrac12, 1),\;
    \tilde\alpha_i \sim \mathcal{G}(\tfrac12, 1),\; \tilde\beta_i \sim \mathcal{IG}(\tfrac12, 1),
    \; \tilde w_{ij} \sim \mathcal{N}(0, 1),\;
    w_{ij} = \tilde w_{ij} \sqrt{s_a s_b \tilde\alpha_i \tilde\beta_i}

(the Gammas with a scale parameter as in the thesis, a rate :math:`1/\tau_0^2` in torch).  The
guide of Eq. 86-87 is log-normal for every scale and Gaussian for :math:`\tilde w`, which
:class:`~pyro_bnn.guides.AutoSiteGuide` gives by default; the KLs are the closed forms of App.
10.4.3 (registered for ``LogNormal`` against ``Gamma`` and ``InverseGamma``).  The scale of a
group, :math:`z_i = \sqrt{\tilde\alpha_i\tilde\beta_i}\sqrt{s_a s_b}`, is log-normal (Eq.
88-91) and drawn per example at the layer call, sharing the global factor across the groups of
an example (Alg. 7 and 8).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from pyro_bnn.distributions import half_cauchy_decomposition
from pyro_bnn.distributions.horseshoe import DEFAULT_GLOBAL_SCALE
from pyro_bnn.ops import scale_groups

from .base import GroupPosterior, WeightPrior, group_rms, group_view, posterior_of

#: Default pruning threshold on the negative log-mode of z_i, sigma_z^2 - mu_z: a group is kept
#: while the mode of its scale, exp(mu_z - sigma_z^2), exceeds exp(-threshold) (thesis Sec.
#: 6.3.1, thresholds read from the bimodal histogram).
DEFAULT_LOG_MODE_THRESHOLD = 5.0

_SCALES = ("global.gamma", "global.inv_gamma", "group.gamma", "group.inv_gamma")


class GroupHorseshoe(WeightPrior):
    """The group horseshoe prior of a layer's weight with global scale ``tau0``; sites
    ``{name}.global.gamma``, ``{name}.global.inv_gamma`` (scalars), ``{name}.group.gamma``,
    ``{name}.group.inv_gamma`` (``(groups,)``), all drawn per example, and
    ``{name}.standardized``.

    :param global_scale: :math:`\\tau_0`, 1e-5 in the thesis's experiments.
    """

    method = "group-horseshoe"
    default_threshold = DEFAULT_LOG_MODE_THRESHOLD

    def __init__(self, global_scale: float = DEFAULT_GLOBAL_SCALE):
        if not (isinstance(global_scale, (int, float)) and global_scale > 0):
            raise ValueError(f"the global scale tau0 must be positive, got {global_scale!r}")
        self.global_scale = float(global_scale)

    def sample(self, name, init, group_dim, unscaled):
        groups = init.shape[group_dim]
        scales = {}
        tau = self.global_scale
        # Starting values: every group scale z_i = sqrt(s_a s_b a_i b_i) starts at its group's
        # root mean square weight (group_rms), with s_a = tau0^2 where its prior puts its mass
        # and the heavy-tailed b_i = rms_i^2 / tau0^2 making up for it.  Starting s_a at 1
        # instead puts it 1e10 prior scales out: a KL of 1e10 nats whose gradient takes
        # thousands of steps to walk back.
        rms = group_rms(init, group_dim)
        starts = {"global.gamma": tau**2, "global.inv_gamma": 1.0, "group.gamma": 1.0,
                  "group.inv_gamma": rms.square() / tau**2}  # fmt: skip
        for shape, part, scale in (((), "global", tau), ((groups,), "group", 1.0)):
            gamma, inverse_gamma = half_cauchy_decomposition(torch.tensor(scale).to(init))
            for suffix, fn in (("gamma", gamma), ("inv_gamma", inverse_gamma)):
                start = torch.as_tensor(starts[f"{part}.{suffix}"]).expand(shape).to(init)
                scales[f"{part}.{suffix}"] = pyro.sample(
                    f"{name}.{part}.{suffix}",
                    fn.expand(shape).to_event(len(shape)),
                    infer={"per_example": True, "init_value": start},
                )
        standardized = pyro.sample(
            f"{name}.standardized",
            dist.Normal(torch.zeros_like(init), 1.0).to_event(init.dim()),
            infer={"init_value": init / group_view(rms, init.shape, group_dim)},
        )
        group_scale = (scales["group.gamma"] * scales["group.inv_gamma"]).sqrt()
        global_scale = (scales["global.gamma"] * scales["global.inv_gamma"]).sqrt()
        return scale_groups(standardized, group_scale * global_scale, group_dim)

    def log_scale_moments(self, guide, name) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu_z, sigma_z^2)`` of ``log z_i`` under the guide (Eq. 88-91), shape
        ``(groups,)``."""
        loc, variance = 0.0, 0.0
        for part in _SCALES:
            fn = posterior_of(guide, f"{name}.{part}", dist.LogNormal)
            loc = loc + 0.5 * fn.loc
            variance = variance + 0.25 * fn.scale.square()
        return loc, variance

    def summarize(self, guide, name, shape, group_dim, unscaled, threshold):
        mu_z, var_z = self.log_scale_moments(guide, name)
        weight = posterior_of(guide, f"{name}.standardized", dist.Normal)
        mu, var = weight.loc, weight.variance
        negative_log_mode = var_z - mu_z
        # E[z] = exp(mu + sigma^2 / 2); V[z] = (exp(sigma^2) - 1) exp(2 mu + sigma^2).
        mean_z = group_view((mu_z + 0.5 * var_z).exp(), shape, group_dim)
        second = group_view((2 * mu_z + var_z).exp(), shape, group_dim)
        var_scale = group_view(torch.expm1(var_z), shape, group_dim) * second
        return GroupPosterior(
            mean=mean_z * mu,  # Eq. 92
            variance=var_scale * (var + mu.square()) + var * second,  # Eq. 94
            statistic=negative_log_mode,
            keep=negative_log_mode < threshold,
            group_dim=group_dim,
        )

    def __repr__(self) -> str:
        return f"GroupHorseshoe(global_scale={self.global_scale:g})"
