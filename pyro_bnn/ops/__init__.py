"""The hot path: layers whose pre-activations are sampled from their exact marginal.

:func:`sampled_linear`, :func:`sampled_conv` and their matrix-normal siblings are the single
implementation every locally reparameterized layer goes through.  The weight protocol
(:class:`StochasticWeight` and its kinds :class:`GaussianWeight`, :class:`ScaledWeight`,
:class:`MatrixNormalWeight`, :class:`ConditionedMatrixNormalWeight`) routes a model's
ordinary ``F.linear`` / ``F.conv{1,2,3}d`` calls to them; :func:`batched_linear` and
:func:`batched_conv` accept weights with sample dimensions.  On CUDA with Triton installed,
:func:`sampled_linear` runs a fused Triton kernel (:func:`fused_sampled_linear`; Triton is
imported only then).
"""

from .batched import batched_conv, batched_linear
from .conditioned_matrix_normal_weight import (
    ConditionedMatrixNormalWeight,
    conditioned_matrix_normal_linear,
)
from .fused_linear import (
    fused_kernel,
    fused_kernel_applies,
    fused_kernel_enabled,
    fused_noise,
    fused_sampled_linear,
)
from .gaussian_weight import GaussianWeight
from .local_reparameterization import local_reparameterization, local_reparameterization_enabled
from .matrix_normal_weight import MatrixNormalWeight
from .random_scale import RandomScale, per_example
from .sampled_linear import (
    matrix_normal_conv,
    matrix_normal_linear,
    sampled_conv,
    sampled_conv2d,
    sampled_linear,
)
from .scaled_weight import ScaledWeight, scale_groups
from .stochastic_weight import StochasticWeight, find_handler, materialize, register_handler

__all__ = [
    "ConditionedMatrixNormalWeight",
    "GaussianWeight",
    "MatrixNormalWeight",
    "RandomScale",
    "ScaledWeight",
    "StochasticWeight",
    "batched_conv",
    "batched_linear",
    "conditioned_matrix_normal_linear",
    "find_handler",
    "fused_kernel",
    "fused_kernel_applies",
    "fused_kernel_enabled",
    "fused_noise",
    "fused_sampled_linear",
    "local_reparameterization",
    "local_reparameterization_enabled",
    "materialize",
    "matrix_normal_conv",
    "matrix_normal_linear",
    "per_example",
    "register_handler",
    "sampled_conv",
    "sampled_conv2d",
    "sampled_linear",
    "scale_groups",
]
