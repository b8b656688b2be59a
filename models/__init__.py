"""Model builders and reference networks.

Installed and imported as ``pyro_bnn.models``.  :class:`BayesianNetwork` turns an ordinary
``nn.Module`` into a Pyro model with priors on the parameters you select and a likelihood
scaled to the data set; the reference networks are the papers' architectures;
:mod:`~pyro_bnn.models.structured` holds the structured sparsity priors it accepts.
"""

from .bayesian_network import WEIGHT_LAYERS, BayesianNetwork, log_uniform_prior, normal_prior
from .functional_neural_process import FunctionalNeuralProcess
from .likelihoods import OBSERVATION_SITE, CategoricalLikelihood, GaussianLikelihood
from .precision_prior import GammaPrecisionPrior, HierarchicalPrior, gamma_precision_prior
from .reference_networks import VGG_LIKE_CHANNELS, lenet5_caffe, lenet_300_100, vgg_like
from .reference_set import choose_reference_set, split_reference_set
from .structured import structured_prior

__all__ = [
    "OBSERVATION_SITE",
    "VGG_LIKE_CHANNELS",
    "WEIGHT_LAYERS",
    "BayesianNetwork",
    "CategoricalLikelihood",
    "FunctionalNeuralProcess",
    "GammaPrecisionPrior",
    "GaussianLikelihood",
    "HierarchicalPrior",
    "choose_reference_set",
    "gamma_precision_prior",
    "lenet5_caffe",
    "lenet_300_100",
    "log_uniform_prior",
    "normal_prior",
    "split_reference_set",
    "structured_prior",
    "vgg_like",
]
