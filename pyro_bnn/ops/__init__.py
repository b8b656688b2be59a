"""The hot path: layers whose pre-activations are sampled from their exact Gaussian marginal.

:func:`sampled_linear` and :func:`sampled_conv2d` are the single implementation every locally
reparameterized layer goes through; :class:`GaussianWeight` routes a model's ordinary
``F.linear`` / ``F.conv2d`` calls to them.
"""

from .gaussian_weight import GaussianWeight
from .sampled_linear import sampled_conv2d, sampled_linear

__all__ = ["GaussianWeight", "sampled_conv2d", "sampled_linear"]
