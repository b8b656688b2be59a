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

from .fit import check_batch


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

    @property
    def predicted_class(self) -> torch.Tensor:
        return self.probs.argmax(-1)


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


#: Examples (posterior samples x inputs) per vectorized pass that suit convolutional networks:
#: a pass holds all their feature maps at once.  LeNet-5-Caffe with 100 samples peaked at 13 GB
#: with ``batch_size=1000`` and at 2 GB with 100, which was also faster.
CONV_EXAMPLES_PER_PASS = 10_000


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(-1)


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


def _traces(model, guide, args: tuple):
    guide_trace = poutine.trace(guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    return guide_trace, model_trace


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


def _posterior_samples(guide, args: tuple, prototype, num_samples: int, max_plate_nesting: int):
    """``num_samples`` draws of every latent site, shape ``(num_samples, *site_shape)``, from one
    vectorized run of the guide under an extra plate (as Pyro's ``Predictive(parallel=True)``)."""
    with pyro.plate("_num_predictive_samples", num_samples, dim=-max_plate_nesting - 1):
        trace = poutine.trace(guide).get_trace(*args)
    samples = {}
    for name, site in prototype.iter_stochastic_nodes():
        shape = site["value"].shape
        samples[name] = trace.nodes[name]["value"].reshape((num_samples,) + shape)
    return samples


@torch.no_grad()
def predict(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int = 100,
    batch_size: int = 1000,
    site: str = "obs",
) -> ClassificationPrediction | RegressionPrediction:
    """Posterior predictive at inputs ``x`` from ``num_samples`` samples of ``guide``.

    For each chunk of ``batch_size`` inputs, the guide draws all posterior samples in one
    vectorized run (under an extra plate), and the model is evaluated for all of them in one
    pass (``torch.func.vmap`` over the samples): no Python loop over samples.  Each sample's
    weights are shared by the whole chunk.  Local reparameterization is turned off (it would
    redraw per-example noise, which is slower at prediction time) and the model is put in
    evaluation mode (so BatchNorm uses its running statistics) and restored afterwards.

    :param model: the Pyro model, called as ``model(x)``, with a likelihood site ``site``
        whose distribution is ``Categorical`` (classification) or ``Normal`` (regression).
    :param guide: the trained guide.
    :param x: inputs, shape ``(N, ...)``.
    :param num_samples: posterior samples ``S``.
    :param batch_size: inputs per vectorized pass.  A pass holds every activation for
        ``S * batch_size`` examples at once, so memory grows with both.  For convolutional
        networks keep ``S * batch_size`` near :data:`CONV_EXAMPLES_PER_PASS`.
    :param site: the name of the likelihood's sample site.
    :returns: a :class:`ClassificationPrediction` or a :class:`RegressionPrediction`.
    """
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or len(x) == 0:
        raise ValueError("x must be a non-empty tensor with a batch dimension")
    check_batch(model, (x,))
    if getattr(guide, "prototype_trace", True) is None:
        raise RuntimeError(
            "the guide has not seen the model yet: train it, or call it once with a batch of "
            "inputs and targets, before predicting (called with inputs alone, the likelihood "
            "site would look like a latent variable to it)"
        )

    was_training = getattr(model, "training", None)
    if was_training is not None:
        model.eval()
    try:
        with pyro.get_param_store().scope(), local_reparameterization(False):
            # One ordinary run sets up lazily created parameters (vmap forbids creating them)
            # and tells the sites' shapes and the model's plate nesting.
            guide_trace, model_trace = _traces(model, guide, (x[:1],))
            _likelihood_moments(model_trace, site)
            nesting = max(
                [-frame.dim for node in model_trace.nodes.values()
                 for frame in node.get("cond_indep_stack", ())] + [0]
            )  # fmt: skip
            chunks = []
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size]
                samples = _posterior_samples(guide, (xb,), guide_trace, num_samples, nesting)

                def one_sample(values, xb=xb):
                    conditioned = _DoNotSample(site)(poutine.condition(model, data=values))
                    return _likelihood_moments(poutine.trace(conditioned).get_trace(xb), site)

                chunks.append(torch.func.vmap(one_sample, randomness="different")(samples))
    finally:
        if was_training:
            model.train()
    moments = [torch.cat(parts, dim=1) for parts in zip(*chunks, strict=True)]
    if len(moments) == 1:
        probs_samples = moments[0]
        probs = probs_samples.mean(0)
        entropy = _entropy(probs)
        expected_entropy = _entropy(probs_samples).mean(0)
        return ClassificationPrediction(
            probs_samples=probs_samples,
            probs=probs,
            entropy=entropy,
            expected_entropy=expected_entropy,
            mutual_information=(entropy - expected_entropy).clamp_min(0.0),
        )
    mean_samples, variance_samples = moments
    epistemic = mean_samples.var(0, unbiased=False)
    aleatoric = variance_samples.mean(0)
    return RegressionPrediction(
        mean_samples=mean_samples,
        variance_samples=variance_samples,
        mean=mean_samples.mean(0),
        epistemic_variance=epistemic,
        aleatoric_variance=aleatoric,
        total_variance=epistemic + aleatoric,
    )
