"""pyro-bnn: Bayesian deep learning on Pyro."""

from . import baselines, compression, data, distributions, guides, infer, metrics, models, ops
from .infer import fit, posterior_samples, predict

__version__ = "0.1.0"

__all__ = [
    "baselines",
    "compression",
    "data",
    "distributions",
    "fit",
    "guides",
    "infer",
    "metrics",
    "models",
    "ops",
    "posterior_samples",
    "predict",
]
