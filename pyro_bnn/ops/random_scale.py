"""A random scale per group of weights, drawn afresh for every example at the layer call.

The structured methods of the seeds multiply the weights of a group (an input neuron of a linear
layer, an output channel of a convolution) by a shared random scale ``z``: Bayesian
compression's group noise (Gaussian for the normal-Jeffreys prior, a product of log-normals for
the horseshoe), hard-concrete gates, relaxed spike-and-slab inclusion variables, and the
log-normal noise of structured Bayesian pruning.  Their forward algorithms
(``reference/methods-from-seeds.md`` 5(b), Alg. 5-8) draw ``z`` *per example*, the local
reparameterization of the scales: the layer computes ``(x * z) @ mu.T`` with a ``(batch, in)``
matrix of independent draws instead of one draw shared by the whole mini-batch.

A :class:`RandomScale` is what a guide returns at such a scale site (see :func:`per_example`).
It is a product of independent factors, each a distribution raised to a power, times a constant:

.. math:: z = c \\prod_k f_k^{p_k}, \\qquad f_k \\sim q_k \\text{ independent},

so that the horseshoe's ``sqrt(a_i b_i) * sqrt(s_a s_b)`` stays one random scale whose draws
share the global factor within an example.  Products with numbers, tensors and other random
scales, powers and square roots stay random scales; a Gaussian weight times a random scale
along its input axis becomes a :class:`~pyro_bnn.ops.ScaledWeight` (and
:func:`~pyro_bnn.ops.scale_groups` does the same for any axis).  Any other use materializes one
draw, shared by the batch, reused by every later use.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution

from .local_reparameterization import local_reparameterization_enabled
from .stochastic_weight import StochasticWeight, register_handler


class RandomScale(StochasticWeight):
    """``c * prod_k f_k ** p_k`` with independent ``f_k ~ q_k``, of shape the broadcast of the
    factors' batch shapes.

    :param factors: ``((q_1, p_1), (q_2, p_2), ...)``: distributions and the powers they enter
        with; a factor's draws have its batch and event dimensions (a normalizing flow's vector
        of scales is one factor with an event dimension).
    :param constant: a tensor (or number) broadcastable to the scale's shape, or ``None``.
    :param sample: the value that any use other than a layer call sees, when the scale stands
        for a draw already made (a guide's auxiliary site); by default one fresh draw.
    """

    @staticmethod
    def __new__(cls, factors, constant=None, sample=None):
        factors = tuple((fn, float(power)) for fn, power in factors)
        if not factors:
            raise ValueError("a RandomScale needs at least one random factor")
        for fn, _ in factors:
            if not isinstance(fn, Distribution):
                raise ValueError(f"the factors of a RandomScale are distributions, got {fn!r}")
        shape = torch.broadcast_shapes(*(_shape(fn) for fn, _ in factors))
        if constant is not None:
            constant = torch.as_tensor(constant)
            shape = torch.broadcast_shapes(shape, constant.shape)
        like = _parameter_of(factors[0][0])
        result = StochasticWeight.__new__(cls, like.new_empty(()).expand(shape))
        result.factors = factors
        result.constant = constant
        if sample is not None:
            if sample.shape != shape:
                raise ValueError(
                    f"the given sample of a random scale of shape {tuple(shape)} has shape "
                    f"{tuple(sample.shape)}"
                )
            result._sample = sample
        return result

    def draw(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Independent draws of the scale, shape ``sample_shape + self.shape``: with
        ``sample_shape = (batch,)`` one scale vector per example."""
        sample_shape = torch.Size(sample_shape)
        value = None
        for fn, power in self.factors:
            # Right-align the factor's shape with the scale's, after the sample dimensions.
            padding = (1,) * (len(self.shape) - len(_shape(fn)))
            draw = _rsample(fn, sample_shape).reshape(sample_shape + padding + _shape(fn))
            draw = draw if power == 1.0 else draw.pow(power)
            value = draw if value is None else value * draw
        if self.constant is not None:
            value = value * self.constant
        return value.expand(sample_shape + self.shape)

    def _draw(self) -> torch.Tensor:
        return self.draw()

    def log_moments(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(mu, sigma^2)`` of ``log z`` when every factor is log-normal and the constant is
        positive (``z`` is then log-normal, thesis Eq. 88-91), else ``None``."""
        from torch.distributions import LogNormal

        if not all(isinstance(fn, LogNormal) for fn, _ in self.factors):
            return None
        if self.constant is not None and not bool((self.constant > 0).all()):
            return None
        loc = sum(power * fn.loc for fn, power in self.factors)
        variance = sum(power**2 * fn.scale.square() for fn, power in self.factors)
        if self.constant is not None:
            loc = loc + self.constant.log()
        return loc.expand(self.shape), variance.expand(self.shape)


def _shape(fn: Distribution) -> torch.Size:
    return fn.batch_shape + fn.event_shape


def _parameter_of(fn: Distribution) -> torch.Tensor:
    # A floating tensor with the distribution's dtype and device.
    for name in ("loc", "probs", "log_alpha", "low", "concentration"):
        value = getattr(fn, name, None)
        if torch.is_tensor(value) and value.is_floating_point():
            return value
    base = getattr(fn, "base_dist", None)  # a transformed or Independent distribution
    return fn.rsample() if base is None else _parameter_of(base)


def _rsample(fn: Distribution, sample_shape: torch.Size) -> torch.Tensor:
    # The factor's own reparameterized sampler, bypassing per_example's override, which would
    # return a RandomScale again.
    cls = type(fn)
    sampler = cls._plain_rsample if issubclass(cls, _PerExample) else cls.rsample
    return sampler(fn, sample_shape)


# --------------------------------------------------------------------- algebra of random scales


def _as_constant(value, like: RandomScale):
    if isinstance(value, (int, float)):
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if torch.is_tensor(value) and not isinstance(value, StochasticWeight):
        return value
    return None


def _times_constant(scale: RandomScale, constant: torch.Tensor) -> RandomScale:
    if scale.constant is not None:
        constant = scale.constant * constant
    return RandomScale(scale.factors, constant)


# One handler for both orders: it finds the random scale among its two arguments.
@register_handler(
    RandomScale, torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__
)
def _product(first, second):
    scale, other = (first, second) if isinstance(first, RandomScale) else (second, first)
    if isinstance(other, RandomScale):
        if scale._sample is not None or other._sample is not None:
            return NotImplemented
        constants = [c for c in (scale.constant, other.constant) if c is not None]
        constant = math.prod(constants) if constants else None
        return RandomScale(scale.factors + other.factors, constant)
    if scale._sample is not None:
        return NotImplemented
    constant = _as_constant(other, scale)
    if constant is None:
        # A Gaussian weight times a random scale is the weight's business (ScaledWeight).
        return NotImplemented
    return _times_constant(scale, constant)


@register_handler(RandomScale, torch.pow, torch.Tensor.pow, torch.Tensor.__pow__)
def _pow(input, exponent):
    if not isinstance(input, RandomScale) or input._sample is not None:
        return NotImplemented
    if not isinstance(exponent, (int, float)):
        return NotImplemented
    if input.constant is not None and not bool((input.constant > 0).all()):
        return NotImplemented
    constant = None if input.constant is None else input.constant.pow(exponent)
    return RandomScale(((fn, power * exponent) for fn, power in input.factors), constant)


@register_handler(RandomScale, torch.sqrt, torch.Tensor.sqrt)
def _sqrt(input):
    return _pow(input, 0.5)


# ------------------------------------------------------------------------- guide distributions


class _PerExample:
    """Mixin of :func:`per_example`'s classes: the one reparameterized sample is a
    :class:`RandomScale` over the distribution itself."""

    def rsample(self, sample_shape=torch.Size()):
        if sample_shape or not local_reparameterization_enabled():
            return self._plain_rsample(sample_shape)
        return RandomScale(((self, 1.0),))


_PER_EXAMPLE_CLASSES: dict[type, type] = {}


def per_example(fn: Distribution) -> Distribution:
    """``fn`` whose single reparameterized sample is a :class:`RandomScale`, drawn afresh per
    example when it scales a layer's weight (the local reparameterization of the scales).

    The result is an instance of a subclass of ``type(fn)``, so every KL divergence registered
    for ``type(fn)`` still applies.  Batched draws (a non-empty ``sample_shape``) and draws with
    local reparameterization turned off are ordinary tensors.
    """
    cls = type(fn)
    if issubclass(cls, _PerExample):
        return fn
    if not fn.has_rsample:
        raise ValueError(f"{cls.__name__} has no reparameterized sampler to draw scales with")
    subclass = _PER_EXAMPLE_CLASSES.get(cls)
    if subclass is None:
        subclass = type(
            f"PerExample{cls.__name__}",
            (_PerExample, cls),
            {"_plain_rsample": cls.rsample, "__module__": __name__},
        )
        _PER_EXAMPLE_CLASSES[cls] = subclass
    fn.__class__ = subclass
    return fn
