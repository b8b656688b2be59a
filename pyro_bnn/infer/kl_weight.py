"""Re-weighting the KL term: linear warm-up and Blundell et al.'s mini-batch schedule."""

from __future__ import annotations

import math

from pyro.poutine.messenger import Messenger

from pyro_bnn.guides.auxiliary import AUXILIARY_TERM


class KLWeight(Messenger):
    """Multiplies the ``scale`` of every latent (unobserved) sample site by :attr:`weight`.

    Applied to both the model and the guide, it turns any Pyro ELBO into
    ``E_q[log p(y | w)] - weight * KL(q || p)``: the KL (or ``log q - log p``) of each latent
    site is scaled, the likelihood is not.  A guide's auxiliary term ``-log r(a | w)``
    (:func:`~pyro_bnn.infer.auxiliary_log_density`) belongs to the KL part and is scaled too.
    One instance is shared by model and guide so the training loop can change the weight
    between steps.
    """

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def _pyro_sample(self, msg) -> None:
        latent = not msg["is_observed"] or msg["infer"].get(AUXILIARY_TERM, False)
        if latent and self.weight != 1.0:
            msg["scale"] = msg["scale"] * self.weight


def warmup_weight(progress: float, warmup_epochs: float) -> float:
    """Linear KL warm-up: ``min(1, progress / warmup_epochs)`` where ``progress`` counts epochs
    (fractional within an epoch).  Louizos et al. warm up over the first 100 epochs."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, progress / warmup_epochs)


def blundell_weight(step: int, num_steps: int) -> float:
    r"""Bayes by Backprop's mini-batch KL weight (Blundell et al., 2015, Sec. 3.4).

    Mini-batch ``i = 1..M`` of an epoch weighs the KL by
    :math:`\pi_i = 2^{M-i} / (2^M - 1)`: early batches lean on the prior, later ones on the
    data, and :math:`\sum_i \pi_i = 1`.  The plate already scales the likelihood by
    ``N / B = M``, so the factor applied to the KL here is :math:`M \pi_i`, which averages 1
    over an epoch like the uniform schedule.  Computed as ``2^-i / (1 - 2^-M)`` to stay finite
    for any ``M``.

    :param step: the 0-based index of the mini-batch within the epoch.
    :param num_steps: ``M``, the number of mini-batches per epoch.
    """
    if not 0 <= step < num_steps:
        raise ValueError(f"step must lie in 0..{num_steps - 1}, got {step}")
    i = step + 1
    return num_steps * math.ldexp(1.0, -i) / -math.expm1(-num_steps * math.log(2.0))
