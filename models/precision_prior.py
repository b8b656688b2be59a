"""A Gaussian weight prior whose row and column precisions are learned (thesis Sec. 3.2)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch

#: The thesis's hyper-prior on the row and column precisions of a regression network's layers:
#: Gamma(a0 = 1, b0 = 0.5) (shape, rate).
DEFAULT_PRECISION_CONCENTRATION = 1.0
DEFAULT_PRECISION_RATE = 0.5


class HierarchicalPrior:
    """A weight prior with hyper-parameters of its own: called inside the model with the
    weight's site name, it issues the hyper-parameters' sample sites and returns the weight's
    conditional prior, batch shape :attr:`shape`.  :class:`~pyro_bnn.models.BayesianNetwork`
    accepts one wherever its ``prior`` factory may return a distribution."""

    shape: torch.Size

    def __call__(self, name: str, like: torch.Tensor) -> dist.Distribution:
        raise NotImplementedError


class GammaPrecisionPrior(HierarchicalPrior):
    r"""``W ~ MN(0, tau_r^-1 I, tau_c^-1 I)`` with ``tau_r, tau_c ~ Gamma(a0, b0)``.

    The matrix normal with isotropic row and column covariances has independent entries,
    ``W_ij ~ N(0, 1 / (tau_r tau_c))``: a Normal prior whose precision the data set through two
    hyper-parameters per layer (the thesis's regression prior for its matrix-variate Gaussian
    posteriors, ``reference/methods-from-seeds.md`` 2(a)).  Inside a model, calling the prior
    with the weight's site name issues the two precision sites, ``"<name>.row_precision"`` and
    ``"<name>.col_precision"`` (scalars; a guide gives them log-normals, whose KL against the
    Gamma is registered), and returns the conditional prior of the weight.  The expected KL
    the thesis writes in closed form is estimated with the guide's draw of the precisions.

    :class:`~pyro_bnn.models.BayesianNetwork` accepts it from its ``prior`` factory
    (:func:`gamma_precision_prior`).

    :param shape: the weight's shape.
    :param concentration: ``a0``.
    :param rate: ``b0``.
    """

    def __init__(
        self,
        shape: torch.Size,
        concentration: float = DEFAULT_PRECISION_CONCENTRATION,
        rate: float = DEFAULT_PRECISION_RATE,
    ):
        for name, value in (("concentration", concentration), ("rate", rate)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"the precision prior's {name} must be positive, got {value!r}")
        self.shape = torch.Size(shape)
        self.concentration = float(concentration)
        self.rate = float(rate)

    def hyperprior(self, like: torch.Tensor) -> dist.Gamma:
        """``Gamma(a0, b0)`` with ``like``'s dtype and device."""
        return dist.Gamma(like.new_tensor(self.concentration), like.new_tensor(self.rate))

    def __call__(self, name: str, like: torch.Tensor) -> dist.Distribution:
        """Issue the precision sites of weight ``name`` and return ``N(0, 1 / (tau_r tau_c))``
        with batch shape :attr:`shape` (``like`` gives the dtype and device)."""
        gamma = self.hyperprior(like)
        row = pyro.sample(f"{name}.row_precision", gamma)
        col = pyro.sample(f"{name}.col_precision", gamma)
        scale = (row * col).rsqrt()
        return dist.Normal(like.new_zeros(()), scale).expand(self.shape)

    def __repr__(self) -> str:
        return (
            f"GammaPrecisionPrior(shape={tuple(self.shape)}, concentration="
            f"{self.concentration}, rate={self.rate})"
        )


def gamma_precision_prior(
    concentration: float = DEFAULT_PRECISION_CONCENTRATION,
    rate: float = DEFAULT_PRECISION_RATE,
    bias_scale: float = 1.0,
) -> Callable[[str, torch.Tensor], object]:
    """A ``prior`` factory for :class:`~pyro_bnn.models.BayesianNetwork`: weights (two or more
    dimensions) get a :class:`GammaPrecisionPrior`, biases ``Normal(0, bias_scale)``."""
    GammaPrecisionPrior((), concentration, rate)  # check the hyper-parameters now
    if not bias_scale > 0:
        raise ValueError(f"the bias prior's scale must be positive, got {bias_scale}")

    def prior(name: str, parameter: torch.Tensor):
        if parameter.dim() < 2:
            return dist.Normal(torch.zeros_like(parameter), torch.full_like(parameter, bias_scale))
        return GammaPrecisionPrior(parameter.shape, concentration, rate)

    return prior
