r"""Bayes by Backprop (Blundell, Cornebise, Kavukcuoglu & Wierstra, 2015) as a Pyro model and
guide of this package.

A fully factorized Gaussian posterior over every weight and bias,
:math:`q(w) = \prod_i \mathcal{N}(w_i \mid \mu_i, \sigma_i^2)`, trained on the ELBO with one
weight sample per step, under the scale-mixture prior

.. math:: p(w) = \pi\,\mathcal{N}(w \mid 0, \sigma_1^2)
                 + (1 - \pi)\,\mathcal{N}(w \mid 0, \sigma_2^2)

(:class:`~pyro_bnn.distributions.ScaleMixtureNormal`; by default :math:`\pi = 1/2`,
:math:`\sigma_1 = 1`, :math:`\sigma_2 = e^{-6}`, the paper's MNIST setting that the
reproduction report of seed 003 uses) or an isotropic Gaussian prior.

:func:`bayes_by_backprop` returns a :class:`~pyro_bnn.models.BayesianNetwork` and an
:class:`~pyro_bnn.guides.AutoMeanFieldNormal`, so the baseline trains with
:func:`pyro_bnn.fit` and predicts with :func:`pyro_bnn.predict` like every other method.
The KL divergence from the Gaussian guide to the scale mixture has no closed form and none is
registered: :class:`~pyro_bnn.infer.TraceKL_ELBO` (``fit``'s default) then uses the
single-sample estimate :math:`\log q(w) - \log p(w)` at the sampled weights, which is the
paper's own estimator; with the Gaussian prior it uses the closed-form KL.  The paper's
mini-batch KL weights :math:`2^{M-i} / (2^M - 1)` are ``fit(..., kl_reweighting="blundell")``.

Differences from the paper: the standard deviation is parameterized as :math:`\log \sigma^2`
(the package's convention, initialized at ``init_log_variance``) rather than
:math:`\sigma = \log(1 + e^\rho)`; the means start at the network's own initialization.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch import nn

from pyro_bnn.distributions import ScaleMixtureNormal
from pyro_bnn.guides import DEFAULT_INIT_LOG_VARIANCE, AutoMeanFieldNormal
from pyro_bnn.models import BayesianNetwork, normal_prior

from ._checks import check_network

#: The scale-mixture prior's mixture weight :math:`\pi` of the broad component (seed 003).
SCALE_MIXTURE_WEIGHT = 0.5
#: The broad component's standard deviation :math:`\sigma_1` (seed 003).
SCALE_MIXTURE_SCALE1 = 1.0
#: The narrow component's standard deviation :math:`\sigma_2 = e^{-6}` (seed 003).
SCALE_MIXTURE_SCALE2 = math.exp(-6)

#: A prior factory: ``prior(name, parameter) -> distribution`` with the parameter's shape as
#: batch shape, as :class:`~pyro_bnn.models.BayesianNetwork` takes it.
PriorFactory = Callable[[str, torch.Tensor], dist.TorchDistribution]


def scale_mixture_prior(
    weight: float = SCALE_MIXTURE_WEIGHT,
    scale1: float = SCALE_MIXTURE_SCALE1,
    scale2: float = SCALE_MIXTURE_SCALE2,
) -> PriorFactory:
    """A factory of :class:`~pyro_bnn.distributions.ScaleMixtureNormal` priors, one per
    parameter, for :class:`~pyro_bnn.models.BayesianNetwork`.

    :param weight: :math:`\\pi \\in [0, 1]`, the broad component's weight.
    :param scale1: :math:`\\sigma_1 > 0`.
    :param scale2: :math:`\\sigma_2 > 0`.
    """
    if isinstance(weight, bool) or not (isinstance(weight, (int, float)) and 0 <= weight <= 1):
        raise ValueError(f"the mixture weight must lie in [0, 1], got {weight!r}")
    for name, scale in (("scale1", scale1), ("scale2", scale2)):
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"{name} must be a positive finite number, got {scale!r}")

    def prior(name: str, parameter: torch.Tensor) -> dist.TorchDistribution:
        return ScaleMixtureNormal(
            torch.full_like(parameter, weight),
            torch.full_like(parameter, scale1),
            torch.full_like(parameter, scale2),
        )

    return prior


def bayes_by_backprop(
    net: nn.Module,
    likelihood: nn.Module,
    *,
    prior: str | PriorFactory = "scale_mixture",
    include_bias: bool = True,
    local_reparameterization: bool = False,
    init_log_variance: float = DEFAULT_INIT_LOG_VARIANCE,
    input_shape: tuple[int, ...] | None = None,
) -> tuple[BayesianNetwork, AutoMeanFieldNormal]:
    """The Bayes-by-Backprop model and guide for ``net``.

    :param net: the network (copied; the original is left untouched).
    :param likelihood: :class:`~pyro_bnn.models.CategoricalLikelihood` or
        :class:`~pyro_bnn.models.GaussianLikelihood`, sized to the training set.
    :param prior: ``"scale_mixture"`` (:func:`scale_mixture_prior` with the default constants),
        ``"normal"`` (``Normal(0, 1)``), or a factory such as ``scale_mixture_prior(0.25, 1,
        math.exp(-7))`` or :func:`~pyro_bnn.models.normal_prior`.
    :param include_bias: biases are random too, as in the paper (weights only otherwise).
    :param local_reparameterization: ``False`` (the paper's estimator): one weight sample per
        step, shared by the mini-batch.  ``True``: the linear and convolutional layers sample
        their pre-activations instead (Kingma et al., 2015), the same ELBO with a lower-variance
        gradient; under the scale-mixture prior the Monte Carlo KL still draws one weight
        sample.
    :param init_log_variance: the guide's initial :math:`\\log \\sigma^2`.
    :param input_shape: the shape of one input, checked by the model.
    :returns: ``(model, guide)`` for :func:`pyro_bnn.fit` and :func:`pyro_bnn.predict`.
    """
    check_network(net)
    if not isinstance(likelihood, nn.Module):
        raise TypeError(
            f"the likelihood must be a likelihood module, got {type(likelihood).__name__}"
        )
    if isinstance(prior, str):
        factories = {"scale_mixture": scale_mixture_prior, "normal": normal_prior}
        if prior not in factories:
            raise ValueError(
                f"prior must be 'scale_mixture', 'normal' or a prior factory, got {prior!r}"
            )
        prior = factories[prior]()
    elif not callable(prior):
        raise TypeError(f"prior must be a name or a prior factory, got {type(prior).__name__}")
    if not math.isfinite(init_log_variance):
        raise ValueError(f"init_log_variance must be finite, got {init_log_variance!r}")
    model = BayesianNetwork(
        net, likelihood, prior=prior, include_bias=include_bias, input_shape=input_shape
    )
    guide = AutoMeanFieldNormal(
        model,
        pretrained=model.initial_values,
        init_log_variance=init_log_variance,
        local_reparameterization=local_reparameterization,
    )
    return model, guide
