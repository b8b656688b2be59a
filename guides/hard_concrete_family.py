"""The hard-concrete family for gates in [0, 1] (L0 regularization, Louizos et al. 2018)."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from pyro_bnn.distributions import HardConcrete, L0Prior
from pyro_bnn.ops import per_example

from .family import GuideFamily, Site, register_default_family, register_family

#: Initial log alpha: the gates start open, P(z > 0) = sigmoid(log alpha - beta log(-l / r))
#: = 0.99 with the default temperature and stretch.
DEFAULT_INIT_LOG_ALPHA = 3.0


def _is_unit_interval(support: constraints.Constraint) -> bool:
    return (
        isinstance(support, constraints.interval)
        and float(support.lower_bound) == 0.0
        and float(support.upper_bound) == 1.0
    )


@register_family
class HardConcreteFamily(GuideFamily):
    """``q(z) = HardConcrete(log_alpha, beta, l, r)`` per gate, with a learned ``log_alpha``.

    The temperature and the stretch interval are the prior's when the prior is a
    :class:`~pyro_bnn.distributions.HardConcrete` (so the registered KL between the two
    applies), else the seeds' defaults (2/3 and (-0.1, 1.1)).  The gates start open
    (``log_alpha = init_log_alpha``, or the model's ``infer={"init_log_alpha": ...}``).  The
    median is the test-time estimator of the L0 paper,
    ``min(1, max(0, sigmoid(log_alpha) (r - l) + l))``.

    :param init_log_alpha: the initial ``log_alpha`` of every gate.
    """

    name = "hard_concrete"
    has_atoms = True

    def __init__(self, init_log_alpha: float = DEFAULT_INIT_LOG_ALPHA):
        self.init_log_alpha = float(init_log_alpha)

    def unsupported(self, site: Site) -> str | None:
        if not _is_unit_interval(site.support):
            return f"its support is {site.support}, and hard-concrete gates lie in [0, 1]"
        return None

    def parameters(self, site: Site, init: torch.Tensor) -> dict[str, PyroParam]:
        start = self.init_log_alpha if site.init_log_alpha is None else site.init_log_alpha
        log_alpha = torch.as_tensor(start).to(init).expand(site.shape).clone()
        return {"log_alpha": PyroParam(log_alpha, constraints.real)}

    def posterior(self, site: Site, params: PyroModule) -> dist.Distribution:
        prior = site.prior
        if isinstance(prior, HardConcrete):
            gate = HardConcrete(
                params.log_alpha, prior.temperature, prior.stretch_low, prior.stretch_high,
                validate_args=False,
            )  # fmt: skip
        else:
            gate = HardConcrete(params.log_alpha, validate_args=False)
        # One gate sample per example (the L0 code's `local_rep`) where the model asks for it;
        # by default one per mini-batch, as in the thesis's experiments.
        return per_example(gate) if site.per_example else gate

    def median(self, site: Site, params: PyroModule) -> torch.Tensor:
        # point_estimate is a property of HardConcrete, not a method: calling it made
        # AutoSiteGuide.median() raise "'Tensor' object is not callable".
        return self.posterior(site, params).point_estimate


register_default_family(HardConcrete, HardConcreteFamily.name)
register_default_family(L0Prior, HardConcreteFamily.name)
