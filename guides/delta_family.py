"""The point-mass family: a MAP estimate of a site."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam

from .family import GuideFamily, Site, register_family


@register_family
class DeltaFamily(GuideFamily):
    """``q(w) = delta(w - value)``: the ELBO's KL term becomes ``-log p(value)``, so training
    finds the maximum a posteriori value (for an improper prior, a penalized maximum
    likelihood).  ``value`` is a parameter constrained to the site's support, starting at the
    site's initial value.  Covers every support."""

    name = "delta"
    has_atoms = True

    def parameters(self, site: Site, init: torch.Tensor) -> dict[str, PyroParam]:
        return {"value": PyroParam(init.detach().clone(), site.support)}

    def posterior(self, site: Site, params: PyroModule) -> dist.Distribution:
        return dist.Delta(params.value)

    def median(self, site: Site, params: PyroModule) -> torch.Tensor:
        return params.value
