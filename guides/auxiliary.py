"""Auxiliary-variable bounds: the guide-side term ``log r(a | w)``.

A guide with an auxiliary variable ``a`` (a guide-only sample site, absent from the model) has a
marginal ``q(w)`` with no closed form.  The auxiliary bound (Agakov and Barber, 2004; Ranganath
et al., 2016) replaces it with ``q(w, a) / r(a | w)`` for any learned inverse model ``r``::

    ELBO_aux = E_q(w, a)[ log p(y, w) + log r(a | w) - log q(a) - log q(w | a) ]  <=  ELBO

Multiplicative normalizing flows use it with ``a = z``, the multiplicative noise, and ``r`` an
inverse flow (thesis Sec. 3.2).  In Pyro terms the guide's density becomes
``log q(w, a) - log r(a | w)``: the guide samples ``a`` at its own site, marked
``infer={"is_auxiliary": True}`` as Pyro asks (its ELBOs subtract ``log q(a)``), and
:func:`auxiliary_log_density` records ``-log r(a | w)`` as a factor of the guide, which the
ELBOs subtract too.  Both belong to the KL part of the bound, so
:class:`~pyro_bnn.infer.KLWeight` (KL warm-up) weighs them like every latent site.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

#: The ``infer`` flag that marks a guide factor holding ``-log r``.
AUXILIARY_TERM = "pyro_bnn_auxiliary_term"


def auxiliary_log_density(name: str, log_density: torch.Tensor) -> None:
    """In a guide: add ``log r(a | w)`` (summed over its entries) to the ELBO.

    :param name: a site name of its own.
    :param log_density: ``log r(a | w)`` at the guide's sampled ``a`` and ``w``, differentiable
        in the parameters of ``r`` and, through reparameterized samples, of the guide.
    """
    unit = dist.Unit(-log_density.sum(), has_rsample=True)
    pyro.sample(name, unit, obs=unit.sample(), infer={"is_auxiliary": True, AUXILIARY_TERM: True})
