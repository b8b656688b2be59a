"""Baselines to compare the package's posteriors with, each predicting in the layout of
:func:`pyro_bnn.predict` (per-sample class probabilities ``(S, N, C)``, or per-sample means and
variances ``(S, N)``) for classification and regression alike:

- :mod:`~pyro_bnn.baselines.deterministic`: the network by maximum likelihood, or MAP with
  weight decay;
- :mod:`~pyro_bnn.baselines.mc_dropout`: MC dropout (Gal & Ghahramani, 2016);
- :mod:`~pyro_bnn.baselines.deep_ensemble`: deep ensembles (Lakshminarayanan et al., 2017);
- :mod:`~pyro_bnn.baselines.last_layer_laplace`: the last-layer Kronecker-factored Laplace
  approximation (Ritter et al., 2018);
- :mod:`~pyro_bnn.baselines.bayes_by_backprop`: Bayes by Backprop (Blundell et al., 2015) as a
  model and guide for :func:`pyro_bnn.fit`.

Regression networks output the mean; :class:`GaussianNoise` holds the homoscedastic noise
variance, learned by maximum likelihood.
"""

from .bayes_by_backprop import bayes_by_backprop, scale_mixture_prior
from .deep_ensemble import EnsembleMember, predict_ensemble, train_deep_ensemble
from .deterministic import predict_deterministic, train_deterministic
from .gaussian_noise import GaussianNoise
from .last_layer_laplace import (
    LastLayerLaplace,
    fit_last_layer_laplace,
    fit_prior_precision,
    predict_last_layer_laplace,
)
from .mc_dropout import mc_dropout_network, predict_mc_dropout

__all__ = [
    "EnsembleMember",
    "GaussianNoise",
    "LastLayerLaplace",
    "bayes_by_backprop",
    "fit_last_layer_laplace",
    "fit_prior_precision",
    "mc_dropout_network",
    "predict_deterministic",
    "predict_ensemble",
    "predict_last_layer_laplace",
    "predict_mc_dropout",
    "scale_mixture_prior",
    "train_deep_ensemble",
    "train_deterministic",
]
