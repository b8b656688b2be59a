"""Likelihoods for Bayesian networks, scaled to the data set through a subsampled plate.

Each likelihood is a ``PyroModule`` called with the network output and the targets. It opens
``pyro.plate("data", size=num_data, subsample=...)`` around one ``obs`` sample site, so a
mini-batch of ``B`` examples has its log-likelihood scaled by ``num_data / B``: the KL is
counted once per data set, never once per batch.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints
from torch.distributions.utils import lazy_property

from pyro_bnn.util import all_finite

#: Name of the observation site of every likelihood.
OBSERVATION_SITE = "obs"

#: Name of the latent noise precision of ``GaussianLikelihood(noise="gamma")``.
NOISE_PRECISION_SITE = "noise.precision"

#: The Gamma hyper-prior on the noise precision, shape ``a0`` and rate ``b0``: Louizos (2019,
#: Ch. 3) uses ``Gamma(a0=6, b0=6)``, as Hernandez-Lobato & Adams (2015) did before.
DEFAULT_PRECISION_CONCENTRATION = 6.0
DEFAULT_PRECISION_RATE = 6.0

_NOISE_KINDS = ("fixed", "learned", "heteroscedastic", "gamma")


def _check_finite(name: str, value: torch.Tensor) -> None:
    if not all_finite(value):
        bad = (~torch.isfinite(value)).sum().item()
        raise ValueError(f"{name} contain {bad} NaN or infinite value(s)")


def _check_batch(output: torch.Tensor, target: torch.Tensor | None) -> None:
    if target is not None and target.shape[:1] != output.shape[:1]:
        raise ValueError(
            f"the targets have {target.shape[0]} rows but the inputs have {output.shape[0]}"
        )


class _CrossEntropyCategorical(dist.Categorical):
    """``Categorical(logits=logits)`` that scores a batch of labels with one fused
    ``F.cross_entropy`` (log-softmax and gather in one kernel) and normalizes its logits only
    if something else asks for them.

    ``Categorical`` subtracts ``logsumexp`` from the logits when it is built, then gathers
    from them in ``log_prob``: two more passes and temporaries than the deterministic
    network's loss, on every training step.  Values of another shape than the batch (sample
    dimensions, enumeration) take the ``Categorical``'s own path.  Arguments are not validated:
    the likelihood checks the labels itself.
    """

    def __init__(self, logits: torch.Tensor):
        self._unnormalized = logits
        self._param = logits
        self._num_events = logits.shape[-1]
        batch_shape = logits.shape[:-1] if logits.dim() > 1 else torch.Size()
        torch.distributions.Distribution.__init__(self, batch_shape, validate_args=False)

    @lazy_property
    def logits(self) -> torch.Tensor:
        return self._unnormalized - self._unnormalized.logsumexp(dim=-1, keepdim=True)

    def expand(self, batch_shape, _instance=None):
        # Pyro's plates expand every site to the plate's shape, most often the shape it has.
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        return type(self)(self._unnormalized.expand(batch_shape + (self._num_events,)))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._unnormalized.dim() == 2 and value.shape == self.batch_shape:
            return -F.cross_entropy(self._unnormalized, value, reduction="none")
        return super().log_prob(value)


class _Likelihood(PyroModule):
    def __init__(self, num_data: int):
        super().__init__()
        if not (isinstance(num_data, int) and num_data > 0):
            raise ValueError(f"num_data must be a positive integer, got {num_data!r}")
        self.num_data = num_data

    def _plate(self, batch_size: int, device: torch.device) -> pyro.plate:
        # An explicit subsample avoids drawing randperm(num_data) on every step; only its
        # length matters for the scale num_data / batch_size.
        return pyro.plate("data", self.num_data, subsample=torch.arange(batch_size, device=device))


class CategoricalLikelihood(_Likelihood):
    """``y ~ Categorical(logits=f(x))``, for classification.

    :param num_data: size of the training set (the plate's full size).
    :param num_classes: number of classes; labels must lie in ``0 .. num_classes - 1``.
    """

    task = "classification"

    def __init__(self, num_data: int, num_classes: int):
        super().__init__(num_data)
        if not (isinstance(num_classes, int) and num_classes >= 2):
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes

    def check_targets(self, target: torch.Tensor) -> None:
        if target.is_floating_point() or target.dim() != 1:
            raise ValueError(
                "class labels must be a 1-D integer tensor, got "
                f"{target.dtype} of shape {tuple(target.shape)}"
            )
        if len(target):
            # One reduction and one read for both ends: this runs on every training step.
            low, high = torch.aminmax(target)
            low, high = low.item(), high.item()
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"labels must lie in 0..{self.num_classes - 1}, got values from {low} to {high}"
                )

    def forward(self, logits: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """:param logits: shape ``(batch, num_classes)``. :param target: shape ``(batch,)``."""
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"the network gives {logits.shape[-1]} outputs for {self.num_classes} classes"
            )
        if target is not None:
            self.check_targets(target)
            _check_batch(logits, target)
        # The targets were checked above; validating them again inside log_prob costs more
        # than the log-likelihood itself.
        fn = _CrossEntropyCategorical(logits)
        with self._plate(logits.shape[-2], logits.device):
            pyro.sample(OBSERVATION_SITE, fn, obs=target)
        return logits


class GaussianLikelihood(_Likelihood):
    """``y ~ Normal(f(x), sigma)`` for regression, with four kinds of noise.

    - ``noise="fixed"``: sigma is the constant ``scale``;
    - ``noise="learned"``: sigma is one point-estimated parameter per output, initialized at
      ``scale`` (type-II maximum likelihood);
    - ``noise="heteroscedastic"``: the network outputs ``2 * out_features`` columns, the means
      and the pre-softplus scales: ``sigma = softplus(raw) + min_scale``;
    - ``noise="gamma"``: the noise precision is a latent variable with a Gamma hyper-prior,
      one per output, as in Louizos (2019, Ch. 3) and probabilistic backpropagation::

          tau ~ Gamma(precision_concentration, precision_rate),    sigma = tau ** -0.5

      ``tau`` is the sample site :data:`NOISE_PRECISION_SITE`, shape ``(out_features,)``,
      outside the data plate, so a guide infers it with the weights (the guides of this
      package give it a ``LogNormal``, whose KL against the ``Gamma`` is closed form) and
      :func:`pyro_bnn.predict` reports the noise variance ``1 / tau`` of each posterior
      sample.  ``scale`` is not used.  The default ``Gamma(6, 6)`` (shape, rate; mean 1,
      standard deviation 0.41) is the thesis's, on targets in their original units.  For
      targets standardized by ``y_std``, the same prior is ``Gamma(6, 6 / y_std**2)`` (a
      precision ``tau`` of the original units is ``tau * y_std**2`` of the standardized ones);
      the UCI benchmark uses that.

    Targets have shape ``(batch,)`` when ``out_features == 1``, else ``(batch, out_features)``.
    """

    task = "regression"

    def __init__(
        self,
        num_data: int,
        noise: str = "learned",
        scale: float = 1.0,
        out_features: int = 1,
        min_scale: float = 1e-3,
        precision_concentration: float = DEFAULT_PRECISION_CONCENTRATION,
        precision_rate: float = DEFAULT_PRECISION_RATE,
    ):
        super().__init__(num_data)
        if noise not in _NOISE_KINDS:
            raise ValueError(
                f"noise must be 'fixed', 'learned', 'heteroscedastic' or 'gamma', got {noise!r}"
            )
        for name, value in (
            ("precision_concentration", precision_concentration),
            ("precision_rate", precision_rate),
        ):
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if not min_scale >= 0:
            raise ValueError(f"min_scale must be non-negative, got {min_scale}")
        if not (isinstance(out_features, int) and out_features >= 1):
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}")
        self.noise = noise
        self.out_features = out_features
        self.min_scale = min_scale
        if noise == "learned":
            self.scale = PyroParam(torch.full((out_features,), float(scale)), constraints.positive)
        elif noise == "gamma":
            shape = (out_features,)
            self.register_buffer(
                "precision_concentration", torch.full(shape, float(precision_concentration))
            )
            self.register_buffer("precision_rate", torch.full(shape, float(precision_rate)))
        else:
            self.register_buffer("fixed_scale", torch.full((out_features,), float(scale)))

    def precision_prior(self) -> dist.TorchDistribution:
        """The Gamma hyper-prior of ``noise="gamma"``, event shape ``(out_features,)``."""
        if self.noise != "gamma":
            raise ValueError(f"a {self.noise} Gaussian likelihood has no prior on the noise")
        return dist.Gamma(self.precision_concentration, self.precision_rate).to_event(1)

    def noise_precision(self) -> torch.Tensor:
        """Sample the noise precision ``tau`` at :data:`NOISE_PRECISION_SITE`; it starts at
        the prior mean in a guide that asks the model for initial values."""
        prior = self.precision_prior()
        return pyro.sample(NOISE_PRECISION_SITE, prior, infer={"init_value": prior.mean.detach()})

    @property
    def num_outputs(self) -> int:
        """How many columns the network must produce."""
        return 2 * self.out_features if self.noise == "heteroscedastic" else self.out_features

    def check_targets(self, target: torch.Tensor) -> None:
        _check_finite("the targets", target)
        expected = 1 if self.out_features == 1 else 2
        if target.dim() != expected or (expected == 2 and target.shape[1] != self.out_features):
            shape = "(batch,)" if expected == 1 else f"(batch, {self.out_features})"
            raise ValueError(f"targets must have shape {shape}, got {tuple(target.shape)}")

    def forward(self, output: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """:param output: shape ``(batch, num_outputs)``. Returns the predicted means."""
        if output.shape[-1] != self.num_outputs:
            raise ValueError(
                f"the network gives {output.shape[-1]} outputs, the {self.noise} Gaussian "
                f"likelihood needs {self.num_outputs}"
            )
        if target is not None:
            self.check_targets(target)
            _check_batch(output, target)
        if self.noise == "heteroscedastic":
            mean, raw = output.split(self.out_features, dim=-1)
            scale = F.softplus(raw) + self.min_scale
        else:
            mean = output
            if self.noise == "gamma":
                scale = self.noise_precision().rsqrt()
            else:
                scale = self.scale if self.noise == "learned" else self.fixed_scale
            scale = scale.expand_as(mean)
        if self.out_features == 1:
            mean, scale = mean.squeeze(-1), scale.squeeze(-1)
            fn = dist.Normal(mean, scale)
        else:
            fn = dist.Normal(mean, scale).to_event(1)
        with self._plate(output.shape[-2], output.device):
            pyro.sample(OBSERVATION_SITE, fn, obs=target)
        return mean
