r"""
Group horseshoe prior (thesis Sec. 6.3, Eq. 83-85) as Pyro sample sites.

The centred hierarchy for a weight tensor whose groups (input neurons of a linear
layer, output channels of a convolution) share a scale is

.. math::
    s \sim \mathcal{C}^+(0, \tau_0), \quad
    \tilde z_i \sim \mathcal{C}^+(0, 1), \quad
    w_{ij} \sim \mathcal{N}(0, \tilde z_i^2 s^2),

and variational inference uses the half-Cauchy's Gamma / inverse-Gamma
decomposition (Eq. 84): if :math:`a \sim \mathcal{G}(\tfrac12, \mathrm{rate}=1/k^2)`
and :math:`b \sim \mathcal{IG}(\tfrac12, 1)` then :math:`\sqrt{ab} \sim
\mathcal{C}^+(0, k)`, because :math:`ab/k^2` is an :math:`F(1, 1)` variable, the square
of a standard Cauchy. The thesis writes the Gamma with a scale parameter,
:math:`\mathcal{G}(\tfrac12, k^2)`; torch's :class:`~torch.distributions.Gamma` takes
the rate :math:`1/k^2`. The non-centred weights :math:`w = \tilde w\,\tilde z_i s`,
:math:`\tilde w \sim \mathcal{N}(0, 1)`, keep the posterior geometry simple.
"""

from __future__ import annotations

import pyro
import torch
from pyro.distributions import Gamma, HalfCauchy, InverseGamma, Normal

#: The global scale :math:`\tau_0` of the thesis's experiments.
DEFAULT_GLOBAL_SCALE = 1e-5


def _as_float_tensor(value: float | torch.Tensor) -> torch.Tensor:
    if torch.is_tensor(value) and value.is_floating_point():
        return value
    return torch.as_tensor(value, dtype=torch.get_default_dtype())


def half_cauchy_decomposition(scale: float | torch.Tensor) -> tuple[Gamma, InverseGamma]:
    r"""
    The pair :math:`(\mathcal{G}(\tfrac12, \mathrm{rate}=1/k^2), \mathcal{IG}(\tfrac12, 1))`
    whose product's square root is :math:`\mathcal{C}^+(0, k)` distributed.

    :param scale: the half-Cauchy scale :math:`k > 0`.
    """
    scale = _as_float_tensor(scale)
    if not torch.all(scale > 0):
        raise ValueError(f"half_cauchy_decomposition: scale must be positive, got {scale}")
    half = torch.full_like(scale, 0.5)
    return Gamma(half, scale.square().reciprocal()), InverseGamma(half, torch.ones_like(scale))


def _half_cauchy_site(
    name: str, scale: float | torch.Tensor, shape: tuple[int, ...], decomposed: bool
):
    def site(suffix, fn):
        fn = fn.expand(shape).to_event(len(shape)) if shape else fn
        return pyro.sample(f"{name}.{suffix}", fn)

    if not decomposed:
        return site("scale", HalfCauchy(_as_float_tensor(scale)))
    gamma, inverse_gamma = half_cauchy_decomposition(scale)
    return (site("gamma", gamma) * site("inv_gamma", inverse_gamma)).sqrt()


def group_horseshoe(
    name: str,
    weight_shape: tuple[int, ...] | torch.Size,
    group_dim: int,
    global_scale: float = DEFAULT_GLOBAL_SCALE,
    *,
    decomposed: bool = False,
    centered: bool = True,
) -> torch.Tensor:
    r"""
    Sample a weight tensor under the group horseshoe prior, inside a Pyro model.

    Creates these sample sites (``G = weight_shape[group_dim]``):

    ======================================  =====================================
    ``decomposed=False``                    ``decomposed=True``
    ======================================  =====================================
    ``{name}.global.scale``: C+(0, tau0)    ``{name}.global.gamma``: G(1/2, 1/tau0^2),
                                            ``{name}.global.inv_gamma``: IG(1/2, 1)
    ``{name}.group.scale``: C+(0, 1), (G,)  ``{name}.group.gamma``: G(1/2, 1), (G,),
                                            ``{name}.group.inv_gamma``: IG(1/2, 1), (G,)
    ======================================  =====================================

    and the weight itself: with ``centered=True`` the site ``{name}`` is
    ``Normal(0, z_i s)`` over ``weight_shape``; otherwise ``{name}.standardized`` is
    ``Normal(0, 1)`` and the weight is recorded as the deterministic site ``{name}``.

    :param str name: the weight's site name, e.g. ``"fc1.weight"``.
    :param weight_shape: shape of the weight tensor.
    :param int group_dim: dimension of ``weight_shape`` that indexes the groups: ``-1``
        (input neurons) for ``nn.Linear``, ``0`` (output channels) for ``nn.Conv2d``.
    :param float global_scale: :math:`\tau_0`.
    :param bool decomposed: use the Gamma / inverse-Gamma decomposition of each
        half-Cauchy scale (thesis Eq. 85), the parameterization with closed-form KLs
        against log-normal guides.
    :param bool centered: sample the weight directly (True) or as a standardized
        weight times the scales (False).
    :returns: the weight, shape ``weight_shape``.
    """
    weight_shape = torch.Size(weight_shape)
    if not -len(weight_shape) <= group_dim < len(weight_shape):
        raise ValueError(
            f"group_horseshoe: group_dim={group_dim} is out of range for weight_shape "
            f"{tuple(weight_shape)}"
        )
    if not global_scale > 0:
        raise ValueError(f"group_horseshoe: global_scale must be positive, got {global_scale}")
    group_dim = group_dim % len(weight_shape)
    num_groups = weight_shape[group_dim]

    global_scale = _half_cauchy_site(f"{name}.global", global_scale, (), decomposed)
    group_scale = _half_cauchy_site(f"{name}.group", 1.0, (num_groups,), decomposed)
    # Give the scale the weight's event dims, with the group axis where it belongs.
    scale = group_scale * global_scale.unsqueeze(-1)
    event_dims = len(weight_shape)
    batch_shape = scale.shape[:-1]
    scale = scale.reshape(
        batch_shape + (1,) * group_dim + (num_groups,) + (1,) * (event_dims - group_dim - 1)
    )
    if centered:
        prior = Normal(torch.zeros_like(scale), scale).expand(batch_shape + weight_shape)
        return pyro.sample(name, prior.to_event(event_dims))
    standardized = pyro.sample(
        f"{name}.standardized", Normal(0.0, 1.0).expand(weight_shape).to_event(event_dims)
    )
    return pyro.deterministic(name, standardized * scale, event_dim=event_dims)
