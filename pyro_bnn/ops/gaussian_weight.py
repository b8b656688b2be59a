"""A weight sample that remembers it came from a factorized Gaussian.

:class:`GaussianWeight` is how local reparameterization stays transparent to the user's model.
A guide returns one at a weight's sample site; the model's layer then calls ``F.linear`` or
``F.conv2d`` with it as usual, and ``__torch_function__`` routes the call to
:func:`~pyro_bnn.ops.sampled_linear` / :func:`~pyro_bnn.ops.sampled_conv2d`, which sample the
pre-activation from its exact Gaussian marginal.  Any other use of the weight (a prior's
``log_prob``, a penalty, printing) materializes one ordinary reparameterized sample
``loc + scale * eps``, drawn once and reused, so every other computation stays correct, only
noisier.  Results of all operations are plain tensors: nothing outside the layer call ever sees
the subclass, and nothing global is patched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

from .sampled_linear import _standard_deviation, sampled_conv2d, sampled_linear

# Functions that read only a tensor's metadata: answered from the subclass's own storage (a view
# of the mean, which has the right shape, dtype and device) without drawing a sample.
_METADATA = {
    torch.Tensor.size,
    torch.Tensor.dim,
    torch.Tensor.numel,
    torch.Tensor.__len__,
    torch.Tensor.is_floating_point,
    torch.Tensor.is_complex,
    torch.Tensor.shape.__get__,
    torch.Tensor.ndim.__get__,
    torch.Tensor.dtype.__get__,
    torch.Tensor.device.__get__,
    torch.Tensor.layout.__get__,
    torch.Tensor.is_cuda.__get__,
}


class GaussianWeight(torch.Tensor):
    """A lazily sampled ``w ~ Normal(loc, scale)`` that sends layers to local reparameterization.

    :param loc: the mean, any shape.
    :param scale: the standard deviation, same shape as ``loc``.
    :param variance: the variance instead of the standard deviation (give one of the two).  The
        layers need only the variance, so a guide that has it (``exp`` of its log-variance)
        saves a square root and a square per weight and step.

    The tensor's own storage is a detached view of ``loc`` and is only used for its metadata
    (shape, dtype, device); every value-reading operation goes through :meth:`rsample`.
    """

    @staticmethod
    def __new__(
        cls,
        loc: torch.Tensor,
        scale: torch.Tensor | None = None,
        variance: torch.Tensor | None = None,
    ):
        if (scale is None) == (variance is None):
            raise ValueError("GaussianWeight needs exactly one of scale and variance")
        spread = scale if variance is None else variance
        if loc.shape != spread.shape:
            name = "scale" if variance is None else "variance"
            raise ValueError(
                f"loc {tuple(loc.shape)} and {name} {tuple(spread.shape)} must have the same shape"
            )
        weight = loc.detach().as_subclass(cls)
        weight._loc = loc
        weight._scale = scale
        weight._variance = variance
        weight._sample = None
        return weight

    @property
    def loc(self) -> torch.Tensor:
        return self._loc

    @property
    def scale(self) -> torch.Tensor:
        if self._scale is None:
            self._scale = _standard_deviation(self._variance)
        return self._scale

    @property
    def variance(self) -> torch.Tensor:
        if self._variance is None:
            self._variance = self._scale.square()
        return self._variance

    def rsample(self) -> torch.Tensor:
        """The one reparameterized weight sample ``loc + scale * eps`` (a plain tensor)."""
        if self._sample is None:
            self._sample = torch.addcmul(self._loc, self.scale, torch.randn_like(self._loc))
        return self._sample

    def __repr__(self) -> str:
        return f"GaussianWeight(shape={tuple(self._loc.shape)}, dtype={self._loc.dtype})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func is F.linear:
            out = _linear(*args, **kwargs)
            if out is not NotImplemented:
                return out
        elif func is F.conv2d:
            out = _conv2d(*args, **kwargs)
            if out is not NotImplemented:
                return out
        args, kwargs = tree_map(_materialize, (args, kwargs))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def _materialize(value):
    return value.rsample() if isinstance(value, GaussianWeight) else value


def _split(parameter) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mean, variance) of a weight or bias that may or may not be Gaussian."""
    if isinstance(parameter, GaussianWeight):
        return parameter.loc, parameter.variance
    return parameter, None


def _linear(input, weight, bias=None):
    weight_mean, weight_var = _split(weight)
    if isinstance(input, GaussianWeight) or weight_mean.dim() != 2:
        return NotImplemented
    bias_mean, bias_var = _split(bias)
    if weight_var is None:
        # Only the bias is random: one independent bias draw per example.
        mean = F.linear(input, weight_mean, bias_mean)
        return mean + _standard_deviation(bias_var) * torch.randn_like(mean)
    return sampled_linear(input, weight_mean, weight_var, bias_mean, bias_var)


def _conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(input, GaussianWeight) or isinstance(padding, str):
        # String padding ("same") is rare for Bayesian layers; fall back to a weight sample.
        return NotImplemented
    bias_mean, bias_var = _split(bias)
    weight_mean, weight_var = _split(weight)
    if weight_var is None:
        mean = F.conv2d(input, weight_mean, bias_mean, stride, padding, dilation, groups)
        return mean + _standard_deviation(bias_var)[:, None, None] * torch.randn_like(mean)
    return sampled_conv2d(
        input, weight_mean, weight_var, bias_mean, bias_var, stride, padding, dilation, groups
    )
