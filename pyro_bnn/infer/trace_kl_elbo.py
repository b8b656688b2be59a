"""A mean-field ELBO that evaluates only the terms it uses."""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.trace_mean_field_elbo import _check_mean_field_requirement
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape
from torch.distributions import kl_divergence


class TraceKL_ELBO(TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` that computes each site's log density only where it is needed.

    The estimator is the same as Pyro's::

        ELBO = sum_obs log p(y | ...) - sum_latent KL(q(z) || p(z))

    with the registered KL divergence for each latent site and, where none is registered, the
    single-sample estimate ``log p(z) - log q(z)``.  Pyro's version first evaluates
    ``log p`` and ``log q`` at every site and then discards them wherever a KL exists; for a
    Bayesian network that is two passes over every weight per step, and it forces a weight
    sample even when local reparameterization never needs one.  This class skips them, and
    skips entirely the sites masked out with ``poutine.mask(mask=False)`` (in both the model
    and the guide for a latent site).

    After each call, :attr:`last_terms` holds the two parts of the last estimate, averaged over
    particles, as floats: ``{"data": sum of observed log-likelihoods, "kl": sum of latent KLs}``
    (each with the sites' ``poutine.scale`` applied), so training loops can report them
    separately at no extra cost.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_terms: dict[str, float] = {}

    def _get_trace(self, model, guide, args, kwargs):
        guide_trace = _run_traced(guide, args, kwargs)
        model_trace = _run_traced(poutine.replay(model, trace=guide_trace), args, kwargs)
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
            _check_mean_field_requirement(model_trace, guide_trace)
        return _without_subsample_sites(model_trace), _without_subsample_sites(guide_trace)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative ELBO as a differentiable tensor (averaged over particles)."""
        loss = 0.0  # a number, not a tensor: one allocation less per step
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            _, surrogate_loss = self._differentiable_loss_particle(model_trace, guide_trace)
            loss = loss + surrogate_loss / self.num_particles
        return torch.as_tensor(loss)

    def _get_traces(self, model, guide, args, kwargs):
        self.last_terms = {"data": 0.0, "kl": 0.0}
        yield from super()._get_traces(model, guide, args, kwargs)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        data_term = kl_term = 0.0  # numbers until a site adds a tensor
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["infer"].get("_deterministic"):
                # pyro.deterministic records a value (a structured prior's composed weight);
                # its masked Delta contributes nothing, and evaluating it would draw a sample.
                continue
            if model_site["is_observed"]:
                if model_site["mask"] is not False:
                    data_term = data_term + self._log_prob_sum(model_site)
                continue
            guide_site = guide_trace.nodes[name]
            if model_site["mask"] is False and guide_site["mask"] is False:
                # Masked out on both sides (poutine.mask(mask=False)), the site contributes
                # nothing: the functional neural process's graphs, tens of thousands of edges
                # a step, whose densities would be evaluated only to be multiplied by zero.
                continue
            try:
                kl = kl_divergence(guide_site["fn"], model_site["fn"])
            except NotImplementedError:
                # No closed form: the one-sample estimate log q(z) - log p(z).
                kl_term = kl_term + self._log_prob_sum(guide_site) - self._log_prob_sum(model_site)
            else:
                kl = scale_and_mask(kl, guide_site["scale"], guide_site["mask"])
                kl_term = kl_term + kl.sum()
        for name, guide_site in guide_trace.nodes.items():
            if (
                guide_site["type"] == "sample"
                and name not in model_trace.nodes
                and guide_site["mask"] is not False
            ):
                # Auxiliary guide variables contribute their entropy term.
                kl_term = kl_term + self._log_prob_sum(guide_site)
        self.last_terms["data"] += torch_item(data_term) / self.num_particles
        self.last_terms["kl"] += torch_item(kl_term) / self.num_particles
        # Unlike Pyro's ELBOs, no warn_if_nan: it registers a backward hook on every step, and
        # pyro_bnn.fit stops with a clear error on a non-finite loss.
        surrogate_loss = torch.as_tensor(kl_term - data_term)
        return torch_item(surrogate_loss), surrogate_loss

    def _log_prob_sum(self, site: dict) -> torch.Tensor:
        log_prob = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
        if is_validation_enabled():
            site["log_prob"] = log_prob
            check_site_shape(site, self.max_plate_nesting)
        return scale_and_mask(log_prob, site["scale"], site["mask"]).sum()


def _run_traced(fn, args, kwargs) -> Trace:
    """``poutine.trace(fn).get_trace(*args, **kwargs)`` without its defensive copy: the trace
    is made here for this step alone."""
    handler = poutine.trace(fn)
    handler(*args, **kwargs)
    return handler.msngr.trace


def _without_subsample_sites(trace: Trace) -> Trace:
    """``prune_subsample_sites`` in place (that function copies the trace first)."""
    for name in [name for name, site in trace.nodes.items() if site_is_subsample(site)]:
        trace.remove_node(name)
    return trace
