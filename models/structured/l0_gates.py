r"""L0 regularization with hard-concrete gates per group (Louizos et al., 2018; thesis Ch. 7).

A layer keeps a point-estimate weight :math:`\tilde\theta` and multiplies each group (input
neuron, output channel) by a gate :math:`z_g \in [0, 1]`: :math:`\theta = \tilde\theta \odot z`.
The prior over a gate is :class:`~pyro_bnn.distributions.L0Prior`, a code-length prior charging
``cost_g`` nats when the gate is open; its KL against the hard-concrete guide is the expected
L0 penalty of Eq. 110 (with the gated L2 term of Eq. 111 when ``weight_decay`` is set):

.. math::
    \mathrm{cost}_g = \lambda |g| + \tfrac{\lambda_2}{2} \sum_{j \in g} \tilde\theta_j^2,
    \qquad \mathrm{KL} = \sum_g \mathrm{cost}_g\, \sigma(\log\alpha_g - \beta\log(-\gamma/\zeta)).

``penalty`` is :math:`\lambda` in ELBO units, nats per weight: the thesis's objective divides
the data term by N, so its :math:`\lambda = 0.1/N` is ``penalty=0.1`` here.  One gate sample per
mini-batch, as in the thesis's experiments (``per_example=True`` draws one per example, the
reference code's ``local_rep``).  The test-time gate is the estimator of Eq. 107.

``init_drop_rate`` starts the gates as the reference code does (its ``droprate_init``: 0.5 on
LeNet-5, 0.2 on the MLP's input layer): :math:`\log\alpha_0 = \log(1 - p) - \log p`, so
:math:`\sigma(\log\alpha_0)` is the keep rate.  The penalty's pull on a gate is proportional to
:math:`\sigma'(\log\alpha - \beta\log(-\gamma/\zeta))`, so gates started nearly always open
(the guide's default, :math:`\log\alpha_0 = 3`, P(open) = 0.99) feel a fourteenth of the pull
of gates started at :math:`p = 0.5` and close over many more steps.
"""

from __future__ import annotations

import math

import pyro
import torch

from pyro_bnn.distributions import HardConcrete, L0Prior
from pyro_bnn.ops import scale_groups

from .base import GroupPosterior, WeightPrior, group_view, posterior_of

#: lambda of the thesis's MNIST experiments, 0.1 / N, in nats per weight of the ELBO.
DEFAULT_PENALTY = 0.1


class L0Gates(WeightPrior):
    """Hard-concrete gates on a layer's groups with an expected-L0 prior; site ``{name}.gate``
    (``(groups,)``) over the layer's point-estimate weight ``<name>_unscaled``.

    :param penalty: lambda, nats per weight of an open group (>= 0).
    :param weight_decay: lambda_2 of the gated L2 term (>= 0).
    :param per_example: draw a gate per example instead of one per mini-batch.
    :param init_drop_rate: the gates' starting dropout rate p in (0, 1) (``None``: the guide's
        default start, gates open).
    """

    method = "l0"
    deterministic_weight = True
    default_threshold = 0.0

    def __init__(self, penalty: float = DEFAULT_PENALTY, weight_decay: float = 0.0,
                 per_example: bool = False, init_drop_rate: float | None = None):  # fmt: skip
        for what, value in (("penalty", penalty), ("weight_decay", weight_decay)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"the L0 {what} must be a finite number >= 0, got {value!r}")
        if init_drop_rate is not None and not (
            isinstance(init_drop_rate, (int, float)) and 0 < init_drop_rate < 1
        ):
            raise ValueError(
                f"the L0 init_drop_rate is a dropout rate in (0, 1), got {init_drop_rate!r}"
            )
        self.penalty = float(penalty)
        self.weight_decay = float(weight_decay)
        self.per_example = per_example
        self.init_drop_rate = init_drop_rate

    def sample(self, name, init, group_dim, unscaled):
        groups = unscaled.shape[group_dim]
        cost = torch.full((groups,), self.penalty * unscaled.numel() / groups).to(unscaled)
        if self.weight_decay:
            dims = [d for d in range(unscaled.dim()) if d != group_dim]
            cost = cost + 0.5 * self.weight_decay * unscaled.square().sum(dims)
        infer = {"per_example": self.per_example}
        if self.init_drop_rate is not None:
            p = self.init_drop_rate
            infer["init_log_alpha"] = math.log1p(-p) - math.log(p)
        gate = pyro.sample(f"{name}.gate", L0Prior(cost).to_event(1), infer=infer)
        return scale_groups(unscaled, gate, group_dim)

    def gates(self, guide, name):
        """The guide's hard-concrete posterior over the gates of ``name``."""
        return posterior_of(guide, f"{name}.gate", HardConcrete)

    def summarize(self, guide, name, shape, group_dim, unscaled, threshold):
        gate = self.gates(guide, name)
        estimate = gate.point_estimate  # Eq. 107
        view = group_view(estimate, shape, group_dim)
        return GroupPosterior(
            mean=unscaled * view,
            variance=unscaled.square() * group_view(gate.variance, shape, group_dim),
            statistic=estimate,
            keep=estimate > threshold,
            group_dim=group_dim,
        )

    def check_threshold(self, threshold):
        if not (isinstance(threshold, (int, float)) and 0 <= threshold < 1):
            raise ValueError(
                f"the L0 threshold is on the test-time gate in [0, 1): a group is kept while its "
                f"gate exceeds it; got {threshold!r}"
            )

    def __repr__(self) -> str:
        start = "" if self.init_drop_rate is None else f", init_drop_rate={self.init_drop_rate:g}"
        return f"L0Gates(penalty={self.penalty:g}, weight_decay={self.weight_decay:g}{start})"
