"""Posterior samples of a trained guide: global sites drawn once, as plain tensors."""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from pyro_bnn.guides import local_reparameterization
from pyro_bnn.ops import materialize

#: The name of the vectorizing plate, as in Pyro's ``Predictive(parallel=True)``.
SAMPLE_PLATE = "_num_predictive_samples"


def require_trained(guide: Callable, caller: str) -> None:
    """Refuse an autoguide that has not seen its model (it has no parameters yet)."""
    if getattr(guide, "prototype_trace", True) is None:
        raise RuntimeError(
            f"{caller}: the guide has not seen the model yet, so it has no posterior; train it "
            "(pyro_bnn.fit or pyro.infer.SVI), or call it once with a batch of inputs and "
            "targets, first"
        )


def check_num_samples(num_samples) -> None:
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")


def traces(model: Callable, guide: Callable, args: tuple, kwargs: dict):
    """One run of the guide and of the model replayed against it, without the plates' own
    subsample sites."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)


def max_plate_nesting(model_trace) -> int:
    return max(
        [-frame.dim for node in model_trace.nodes.values()
         for frame in node.get("cond_indep_stack", ()) if frame.vectorized] + [0]
    )  # fmt: skip


def global_sites(model_trace, guide_trace) -> list[str]:
    """The guide's latent sites outside every plate that holds an observation.

    Sites in such a plate (a per-example latent variable, as in the functional neural process)
    are local: they belong to the inputs, and are drawn for each new input instead.
    """
    data_plates = {
        frame.name
        for node in model_trace.nodes.values()
        if node["type"] == "sample" and node["is_observed"]
        for frame in node["cond_indep_stack"]
    }
    return [
        name
        for name, node in guide_trace.nodes.items()
        if node["type"] == "sample"
        and not node["is_observed"]
        and not any(frame.name in data_plates for frame in node["cond_indep_stack"])
    ]


@torch.no_grad()
def posterior_samples(
    model: Callable, guide: Callable, num_samples: int, *args, **kwargs
) -> dict[str, torch.Tensor]:
    """``num_samples`` draws of every global latent site of ``guide``.

    The guide runs once under a vectorizing plate (as in Pyro's ``Predictive(parallel=True)``),
    with local reparameterization off, so every value is a plain tensor, never a lazily sampled
    weight: ``{site: tensor of shape (num_samples, *site_shape)}``.  Sites inside a plate that
    also holds an observation are local and left out (see :func:`global_sites`).

    :param model: the Pyro model; it runs once, replayed against the guide, to tell global
        from local sites.
    :param guide: the trained guide.
    :param num_samples: the number of draws ``S``.
    :param args, kwargs: the model's arguments (a batch of inputs, and targets if the guide
        needs them to know its sites).
    """
    check_num_samples(num_samples)
    require_trained(guide, "posterior_samples")
    return draw_global_sites(model, guide, num_samples, args, kwargs)[0]


def draw_global_sites(model: Callable, guide: Callable, num_samples: int, args, kwargs):
    """:func:`posterior_samples` without the argument checks, also returning the model's trace
    of the run that told global from local sites (predict reads its likelihood there)."""
    with local_reparameterization(False):
        guide_trace, model_trace = traces(model, guide, args, kwargs)
        names = global_sites(model_trace, guide_trace)
        dim = -max_plate_nesting(model_trace) - 1
        with pyro.plate(SAMPLE_PLATE, num_samples, dim=dim):
            trace = poutine.trace(guide).get_trace(*args, **kwargs)
    samples = {
        name: materialize(trace.nodes[name]["value"]).reshape(
            (num_samples,) + guide_trace.nodes[name]["value"].shape
        )
        for name in names
    }
    return samples, model_trace
