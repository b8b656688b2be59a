"""pyro-bnn: Bayesian deep learning on Pyro."""

from . import distributions

__version__ = "0.1.0"

__all__ = ["distributions"]
