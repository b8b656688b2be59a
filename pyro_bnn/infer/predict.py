"""The posterior predictive, vectorized over posterior samples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from pyro_bnn.guides import local_reparameterization
from pyro_bnn.metrics.out_of_distribution import categorical_entropy

from .fit import check_batch
from .posterior import (
    SAMPLE_PLATE,
    check_num_samples,
    draw_global_sites,
    max_plate_nesting,
    require_trained,
)


@dataclass
class ClassificationPrediction:
    """Posterior predictive of a classifier for ``B`` inputs, ``S`` samples, ``C`` classes.

    The predictive entropy splits into its aleatoric and epistemic parts::

        H[ E_w p(y|x,w) ]  =  E_w H[p(y|x,w)]  +  I(y; w | x)
             entropy          expected_entropy    mutual_information
    """

    probs_samples: torch.Tensor  #: (S, B, C) class probabilities under each posterior sample
    probs: torch.Tensor  #: (B, C) the predictive (Bayesian model average)
    entropy: torch.Tensor  #: (B,) total predictive entropy, nats
    expected_entropy: torch.Tensor  #: (B,) aleatoric part
    mutual_information: torch.Tensor  #: (B,) epistemic part
    #: (S, B) log p(y_i | x_i, w_s) per sample and observation, when targets were given
    log_likelihood: torch.Tensor | None = None

    @property
    def predicted_class(self) -> torch.Tensor:
        return self.probs.argmax(-1)

    @classmethod
    def from_samples(
        cls, probs_samples: torch.Tensor, log_likelihood: torch.Tensor | None = None
    ) -> ClassificationPrediction:
        """The predictive and its entropy split from ``(S, B, C)`` per-sample probabilities."""
        probs = probs_samples.mean(0)
        entropy = categorical_entropy(probs)
        expected_entropy = categorical_entropy(probs_samples).mean(0)
        return cls(
            probs_samples=probs_samples,
            probs=probs,
            entropy=entropy,
            expected_entropy=expected_entropy,
            mutual_information=(entropy - expected_entropy).clamp_min(0.0),
            log_likelihood=log_likelihood,
        )


@dataclass
class RegressionPrediction:
    """Posterior predictive of a Gaussian regression model for ``B`` inputs and ``S`` samples.

    By the law of total variance, ``total_variance = epistemic_variance + aleatoric_variance``:
    the spread of the means across posterior samples plus the mean of the noise variances.
    """

    mean_samples: torch.Tensor  #: (S, B, ...) the mean under each posterior sample
    variance_samples: torch.Tensor  #: (S, B, ...) the noise variance under each sample
    mean: torch.Tensor  #: (B, ...) predictive mean
    epistemic_variance: torch.Tensor  #: (B, ...)
    aleatoric_variance: torch.Tensor  #: (B, ...)
    total_variance: torch.Tensor  #: (B, ...)
    #: (S, B) log p(y_i | x_i, w_s) per sample and observation, when targets were given
    log_likelihood: torch.Tensor | None = None

    @classmethod
    def from_samples(
        cls,
        mean_samples: torch.Tensor,
        variance_samples: torch.Tensor,
        log_likelihood: torch.Tensor | None = None,
        *,
        mean: torch.Tensor | None = None,
        epistemic_variance: torch.Tensor | None = None,
    ) -> RegressionPrediction:
        """The predictive from ``(S, B, ...)`` per-sample means and noise variances; ``mean``
        and ``epistemic_variance`` replace the sample estimates where they are known exactly."""
        if mean is None:
            mean = mean_samples.mean(0)
        if epistemic_variance is None:
            epistemic_variance = mean_samples.var(0, unbiased=False)
        aleatoric = variance_samples.mean(0)
        return cls(
            mean_samples=mean_samples,
            variance_samples=variance_samples,
            mean=mean,
            epistemic_variance=epistemic_variance,
            aleatoric_variance=aleatoric,
            total_variance=epistemic_variance + aleatoric,
            log_likelihood=log_likelihood,
        )


#: Inputs per vectorized pass by default.  A pass over ``S`` samples holds ``S`` times every
#: activation of a chunk, so smaller chunks stay in the caches: LeNet-300-100 with 100 samples
#: on the 10k Fashion-MNIST test images took 1.26 / 1.30 / 1.22 / 1.19 times the 100
#: deterministic passes with chunks of 1000 / 500 / 250 / 100 (benchmarks/RESULTS.md).
DEFAULT_BATCH_SIZE = 250

#: Examples (posterior samples x inputs) per vectorized pass that suit convolutional networks:
#: a pass holds all their feature maps at once.  LeNet-5-Caffe with 100 samples peaked at 13 GB
#: with ``batch_size=1000`` and at 2 GB with 100; on 1,000 test images chunks of 10 / 25 / 100
#: inputs took 1.63 / 1.23 / 2.46 times 100 deterministic passes (benchmarks/RESULTS.md).
CONV_EXAMPLES_PER_PASS = 2_500


class _DoNotSample(Messenger):
    """Records a site's distribution without drawing from it: predictions need the likelihood's
    parameters, not a sample, and some samplers cannot run under ``vmap``."""

    def __init__(self, site: str):
        super().__init__()
        self.site = site

    def _pyro_sample(self, msg) -> None:
        if msg["name"] == self.site and not msg["is_observed"]:
            msg["value"] = torch.zeros(msg["fn"].shape())
            msg["done"] = True


def _likelihood_moments(model_trace, site: str) -> tuple[torch.Tensor, ...]:
    if site not in model_trace.nodes:
        raise ValueError(
            f"the model has no sample site {site!r}; pass the name of its likelihood as site="
        )
    fn = model_trace.nodes[site]["fn"]
    while isinstance(fn, (dist.Independent, dist.MaskedDistribution)):
        fn = fn.base_dist
    if isinstance(fn, dist.Categorical):
        return (fn.probs,)
    if isinstance(fn, dist.Normal):
        return fn.loc, fn.scale.square()
    raise NotImplementedError(
        f"predict supports Categorical and Normal likelihoods, the site {site!r} has "
        f"{type(fn).__name__}"
    )


def _log_likelihood(moments: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """(S, B) log p(y_i | x_i, w_s) from the likelihood's parameters under each sample."""
    if len(moments) == 1:
        probs = moments[0]
        index = y.long().reshape(1, -1, 1).expand(len(probs), -1, 1)
        return probs.gather(-1, index).squeeze(-1).clamp_min(torch.finfo(probs.dtype).tiny).log()
    mean, variance = moments
    log_prob = dist.Normal(mean, variance.sqrt()).log_prob(y.to(mean))
    return log_prob.reshape(*log_prob.shape[:2], -1).sum(-1)


@torch.no_grad()
def predict(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *args,
    num_samples: int = 100,
    batch_size: int = DEFAULT_BATCH_SIZE,
    site: str = "obs",
    y: torch.Tensor | None = None,
    **kwargs,
) -> ClassificationPrediction | RegressionPrediction:
    """Posterior predictive at inputs ``x`` from ``num_samples`` samples of ``guide``.

    The global latent sites are drawn once (:func:`~pyro_bnn.infer.posterior_samples`), so
    posterior sample ``s`` is the same network for every input; the inputs are then processed in
    chunks of ``batch_size``, each evaluated for all samples in one pass
    (``torch.func.vmap`` over the samples, no Python loop over them; a model with
    ``supports_sample_plate = True`` broadcasts over a leading plate of samples instead, as for
    Pyro's ``Predictive(parallel=True)``).  Local latent sites (inside
    the data plate) are drawn by the model for each new input.  Weights are sampled, one set per
    posterior sample shared by a chunk (local reparameterization would redraw per-example noise,
    which costs more at prediction time), and the model is put in evaluation mode (BatchNorm
    uses its running statistics) and restored afterwards.

    :param model: the Pyro model, called as ``model(x_chunk, *args, **kwargs)``, with a
        likelihood site ``site`` whose distribution is ``Categorical`` (classification) or
        ``Normal`` (regression).  Extra arguments (a context set, say) are passed unchanged to
        every call.
    :param guide: the trained guide.
    :param x: inputs, shape ``(N, ...)``.
    :param num_samples: posterior samples ``S``.
    :param batch_size: inputs per vectorized pass.  A pass holds every activation for
        ``S * batch_size`` examples at once, so memory grows with both.  For convolutional
        networks keep ``S * batch_size`` near :data:`CONV_EXAMPLES_PER_PASS`.
    :param site: the name of the likelihood's sample site.
    :param y: targets, shape ``(N, ...)``; when given, the result's ``log_likelihood`` holds
        ``log p(y_i | x_i, w_s)``, shape ``(S, N)`` (what PSIS-LOO and WAIC need).
    :returns: a :class:`ClassificationPrediction` or a :class:`RegressionPrediction`.
    """
    check_num_samples(num_samples)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or len(x) == 0:
        raise ValueError("x must be a non-empty tensor with a batch dimension")
    check_batch(model, (x,) if y is None else (x, y))
    if y is not None and len(y) != len(x):
        raise ValueError(f"y has {len(y)} rows but x has {len(x)}")
    require_trained(guide, "predict")

    was_training = getattr(model, "training", None)
    if was_training is not None:
        model.eval()
    try:
        with pyro.get_param_store().scope(), local_reparameterization(False):
            # Drawing the samples runs model and guide once on one input, which also sets up
            # lazily created parameters (vmap forbids creating them) and shows the likelihood.
            samples, model_trace = draw_global_sites(
                model, guide, num_samples, (x[:1], *args), kwargs
            )
            _likelihood_moments(model_trace, site)

            def moments(values, xb):
                conditioned = _DoNotSample(site)(poutine.condition(model, data=values))
                trace = poutine.trace(conditioned).get_trace(xb, *args, **kwargs)
                return _likelihood_moments(trace, site)

            if getattr(model, "supports_sample_plate", False):
                # The model broadcasts over a leading plate of samples, as Pyro's
                # Predictive(parallel=True) asks: one pass per chunk for all samples, and what
                # does not depend on the samples (a shared feature network) computed once.
                dim = -max_plate_nesting(model_trace) - 1

                def all_samples(values, xb):
                    with pyro.plate(SAMPLE_PLATE, num_samples, dim=dim):
                        return moments(values, xb)

            else:
                all_samples = torch.func.vmap(moments, in_dims=(0, None), randomness="different")
            chunks = [
                all_samples(samples, x[start : start + batch_size])
                for start in range(0, len(x), batch_size)
            ]
    finally:
        if was_training:
            model.train()
    moments = [torch.cat(parts, dim=1) for parts in zip(*chunks, strict=True)]
    log_likelihood = None if y is None else _log_likelihood(moments, y)
    if len(moments) == 1:
        return ClassificationPrediction.from_samples(moments[0], log_likelihood)
    return RegressionPrediction.from_samples(*moments, log_likelihood)
