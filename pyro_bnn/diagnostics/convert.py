"""Pyro inference results as ArviZ ``xarray.DataTree`` s: from a guide (SVI) and from MCMC.

ArviZ 1.x has no Pyro converter.  These follow ArviZ's conventions and its NumPyro SVI adapter:

=======================  ===================================================================
group                    content, with dims ``(chain, draw, ...)`` unless said otherwise
=======================  ===================================================================
``posterior``            the model's latent sites and its deterministic sites (a structured
                         prior's composed weights); ``var_names`` selects some
``posterior_predictive`` a draw of every observed site under each posterior draw
``log_likelihood``       ``log p(y_i | theta)`` per observation, unscaled (what PSIS-LOO needs)
``observed_data``        the observed values, without sample dims
``sample_stats``         ``lp``: the model's log joint ``log p(theta, y)`` as Pyro scores it
                         (likelihood scaled as the model scales it); for SVI also ``log_q``,
                         the guide's log density at the draw, so ``lp - log_q`` are the
                         importance ratios; for MCMC ``diverging``
=======================  ===================================================================

Draws of SVI are independent, so they form one chain; MCMC keeps its chains.  Each draw
replays the model once on all the data passed in (one forward pass of the network per draw),
so the log joint is the model's own, including its likelihood's scaling.  For a guide with an
auxiliary variable (multiplicative normalizing flows), ``log_q`` is ``log q(w, a) - log r(a|w)``,
the density the auxiliary bound uses, and the ratios are importance weights on the extended
space: their mean is still ``p(y)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from tqdm import tqdm

from pyro_bnn.guides import local_reparameterization
from pyro_bnn.infer.fit import check_batch
from pyro_bnn.infer.posterior import check_num_samples, require_trained
from pyro_bnn.ops import materialize

from .arviz_compat import arviz_base
from .dims import batch_layout, event_dims

#: How :func:`from_svi` and :func:`from_mcmc` shrink a site larger than ``max_entries``.
LARGE_SITES = ("keep", "thin", "norm")


def _is_deterministic(node: dict) -> bool:
    return node["type"] == "sample" and bool(node["infer"].get("_deterministic"))


def _classify(model_trace, conditioned) -> tuple[list[str], list[str], list[str]]:
    """Latent, deterministic and observed sites of a model trace; ``conditioned`` are latent
    sites the trace was conditioned on (observed only in Pyro's bookkeeping)."""
    latent, deterministic, observed = [], [], []
    for name, node in model_trace.nodes.items():
        if node["type"] != "sample":
            continue
        if _is_deterministic(node):
            deterministic.append(name)
        elif node["is_observed"] and name not in conditioned:
            observed.append(name)
        else:
            latent.append(name)
    return latent, deterministic, observed


def _select(var_names: Sequence[str] | None, available: list[str]) -> list[str]:
    if var_names is None:
        return available
    if isinstance(var_names, str):
        var_names = [var_names]
    unknown = [name for name in var_names if name not in available]
    if unknown:
        raise ValueError(
            f"the model has no latent or deterministic site {', '.join(map(repr, unknown))}; "
            f"its sites are {', '.join(map(repr, available))}"
        )
    return list(var_names)


class _Collector:
    """Accumulates the per-draw values of a model traced once per posterior draw."""

    def __init__(self, model, var_names, first_trace, conditioned=frozenset()):
        latent, deterministic, observed = _classify(first_trace, conditioned)
        if not observed:
            raise ValueError(
                "the model observed nothing: pass the targets with the inputs (the model's "
                "arguments, as for training), so that there is data to diagnose"
            )
        self.latent = latent
        self.observed = observed
        self.names = _select(var_names, latent + deterministic)
        self.dims: dict[str, list[str]] = {}
        self.singletons: dict[str, list[int]] = {}
        group_dims = {
            site: layer.group_dim for site, layer in getattr(model, "structured", {}).items()
        }
        for name in self.names + observed:
            node = first_trace.nodes[name]
            shape = node["value"].shape
            batch, singletons = batch_layout(node, shape)
            event_shape = shape[len(shape) - len(node["fn"].event_shape) :]
            self.singletons[name] = singletons
            self.dims[name] = batch + event_dims(model, name, event_shape, group_dims)
        #: The likelihood's dims: the observation's without its event dims.
        self.log_likelihood_dims = {}
        for name in observed:
            event = len(first_trace.nodes[name]["fn"].event_shape)
            self.log_likelihood_dims[name] = self.dims[name][: len(self.dims[name]) - event]
        self.observed_data = {
            name: self._squeeze(name, first_trace.nodes[name]["value"]) for name in observed
        }
        self.posterior: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}
        self.predictive: dict[str, list[torch.Tensor]] = {name: [] for name in observed}
        self.log_likelihood: dict[str, list[torch.Tensor]] = {name: [] for name in observed}
        self.lp: list[torch.Tensor] = []

    def _squeeze(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Drop the site's broadcasting singletons (they lead, with the other batch dims)."""
        drop = self.singletons[name]
        return value.detach().reshape([s for p, s in enumerate(value.shape) if p not in drop])

    def add(self, model_trace) -> None:
        """Record one draw: the model traced with the draw's latent values and the data."""
        compute_log_prob(model_trace)
        nodes = model_trace.nodes
        for name in self.names:
            self.posterior[name].append(self._squeeze(name, materialize(nodes[name]["value"])))
        self.lp.append(sum(nodes[name]["log_prob"].sum() for name in self.latent + self.observed))
        for name in self.observed:
            node = nodes[name]
            self.predictive[name].append(self._squeeze(name, node["fn"].sample()))
            log_likelihood = node["unscaled_log_prob"].expand(node["fn"].batch_shape)
            self.log_likelihood[name].append(self._squeeze(name, log_likelihood))


def compute_log_prob(trace) -> None:
    """``trace.compute_log_prob()`` without Pyro's warning for an infinite value: an improper
    prior's pole (``w = 0`` under the log-uniform prior, which float32 draws now and then) is a
    fact of the draw, reported once per conversion by :func:`_warn_if_infinite`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered (NaN|[+-]inf)")
        trace.compute_log_prob()


def _warn_if_infinite(name: str, values: np.ndarray) -> None:
    bad = int((~np.isfinite(values)).sum())
    if bad:
        warnings.warn(
            f"{bad} of {values.size} draws have an infinite or undefined {name} (a value at a "
            "pole of a density, such as a weight of exactly 0 under the log-uniform prior); "
            "their importance ratios are infinite, and pareto_khat reports inf",
            UserWarning,
            stacklevel=3,
        )


def _stack(values: list[torch.Tensor], num_chains: int) -> np.ndarray:
    """``(chain, draw, ...)`` from draws listed chain after chain."""
    array = torch.stack(values).double().cpu().numpy()
    return array.reshape(num_chains, len(values) // num_chains, *array.shape[1:])


def _shrink(name: str, value: np.ndarray, dims: list[str], max_entries: int | None, large: str):
    """``(new name, value, dims, coords)`` of a site, thinned or reduced when it is large."""
    event_shape = value.shape[2:]
    if large == "keep" or max_entries is None or math.prod(event_shape) <= max_entries:
        return name, value, dims, {}
    if large == "norm":
        # The Euclidean norm of each slice along the first dim: a row norm of a weight is
        # the size of an output unit's incoming weights.
        axes = tuple(range(3, value.ndim))
        return f"{name}.norm", np.sqrt(np.square(value).sum(axis=axes)), dims[:1], {}
    # "thin": a regular grid of entries, the same stride in every dim, named by the original
    # indices in dims of their own (another site may keep the full dim).
    stride = math.ceil((math.prod(event_shape) / max_entries) ** (1 / len(event_shape)))
    while math.prod(math.ceil(size / stride) for size in event_shape) > max_entries:
        stride += 1
    index = tuple(slice(None, None, stride) for _ in event_shape)
    thinned = [f"{dim}_thinned_{stride}" for dim in dims]
    coords = {
        new: np.arange(0, size, stride) for new, size in zip(thinned, event_shape, strict=True)
    }
    return name, value[(slice(None), slice(None), *index)], thinned, coords


def _check_shrink(max_entries: int | None, large: str) -> None:
    """Refuse bad ``max_entries`` / ``large`` before any draw is made."""
    if large not in LARGE_SITES:
        raise ValueError(f"large must be one of {', '.join(LARGE_SITES)}, got {large!r}")
    if max_entries is not None and not (isinstance(max_entries, int) and max_entries >= 1):
        raise ValueError(f"max_entries must be a positive integer or None, got {max_entries!r}")


def _datatree(collector: _Collector, num_chains: int, stats: dict, attrs: dict,
              max_entries: int | None, large: str):  # fmt: skip
    posterior, dims, coords = {}, {}, {}
    for name in collector.names:
        new, value, new_dims, new_coords = _shrink(
            name, _stack(collector.posterior[name], num_chains), collector.dims[name],
            max_entries, large,
        )  # fmt: skip
        posterior[new], dims[new] = value, new_dims
        coords.update(new_coords)
    groups = {
        "posterior": posterior,
        "posterior_predictive": {
            name: _stack(values, num_chains) for name, values in collector.predictive.items()
        },
        "log_likelihood": {
            name: _stack(values, num_chains) for name, values in collector.log_likelihood.items()
        },
        "observed_data": {
            name: value.double().cpu().numpy() for name, value in collector.observed_data.items()
        },
        "sample_stats": {"lp": _stack(collector.lp, num_chains), **stats},
    }
    dims.update({name: collector.dims[name] for name in collector.observed})
    # The likelihood of a multivariate observation has only its batch dims; it shares the
    # observation's name, so its dims go per group.
    datatree = arviz_base().from_dict(
        {key: value for key, value in groups.items() if key != "log_likelihood"},
        dims=dims, coords=coords, attrs={"/": attrs},
    )  # fmt: skip
    log_likelihood = arviz_base().from_dict(
        {"log_likelihood": groups["log_likelihood"]}, dims=collector.log_likelihood_dims
    )
    datatree["log_likelihood"] = log_likelihood["log_likelihood"]
    return datatree


def _attrs(method: str, **extra) -> dict:
    return {"inference_library": "pyro", "inference_library_version": pyro.__version__,
            "inference_method": method, **extra}  # fmt: skip


def _progress(iterable: Iterable, total: int, description: str) -> Iterable:
    return tqdm(iterable, total=total, desc=description, leave=False, disable=None)


@torch.no_grad()
def from_svi(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int = 1000,
    var_names: Sequence[str] | None = None,
    max_entries: int | None = None,
    large: str = "thin",
    **kwargs,
):
    """A DataTree of ``num_samples`` independent draws of a trained guide (one chain).

    :param model: the Pyro model.
    :param guide: its trained guide (any Pyro guide; the guides of :mod:`pyro_bnn.guides`
        draw weights, not layer outputs, here).
    :param args, kwargs: the model's arguments with the data to diagnose, targets included
        (``x, y`` for the models of :mod:`pyro_bnn.models`).  Usually the training data:
        ``lp`` is then the log joint the guide approximates, and the log-likelihood is the
        one PSIS-LOO needs.
    :param num_samples: posterior draws; PSIS diagnostics want a thousand or more.
    :param var_names: the sites of the ``posterior`` group (default: every latent and
        deterministic site of the model).  Guide-only sites (a flow's auxiliary noise) are
        not the model's and are never listed.
    :param max_entries: the largest site (entries per draw) kept whole; larger ones are
        shrunk as ``large`` says.  ``None`` keeps everything.
    :param large: ``"thin"`` keeps a regular grid of entries (every ``k``-th along each
        dim, the dims renamed ``<dim>_thinned_<k>`` with the original indices as
        coordinates); ``"norm"`` replaces the site ``w`` by ``w.norm``, the Euclidean norm
        of each slice along its first dim (one number per output unit); ``"keep"`` keeps it.
    :returns: an ``xarray.DataTree`` with the groups listed in the module's docstring;
        ``sample_stats`` has ``lp`` and ``log_q``.
    """
    check_num_samples(num_samples)
    _check_shrink(max_entries, large)
    require_trained(guide, "from_svi")
    check_batch(model, args)
    collector, log_q = None, []
    with pyro.get_param_store().scope(), local_reparameterization(False):
        for _ in _progress(range(num_samples), num_samples, "posterior draws"):
            guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
            model_trace = prune_subsample_sites(
                poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
            )
            if collector is None:
                collector = _Collector(model, var_names, model_trace)
            collector.add(model_trace)
            compute_log_prob(guide_trace)
            log_q.append(sum(
                node["log_prob"].sum() for node in guide_trace.nodes.values()
                if node["type"] == "sample"
            ))  # fmt: skip
    attrs = _attrs("svi", guide=type(guide).__name__)
    stats = {"log_q": _stack(log_q, 1)}
    _warn_if_infinite("log joint", _stack(collector.lp, 1))
    _warn_if_infinite("guide log density", stats["log_q"])
    return _datatree(collector, 1, stats, attrs, max_entries, large)


def _mcmc_samples(mcmc) -> dict[str, torch.Tensor]:
    samples = getattr(mcmc, "_samples", None)
    if not samples:
        raise RuntimeError("from_mcmc: the MCMC object has no samples yet; call mcmc.run first")
    return mcmc.get_samples(group_by_chain=True)


def _diverging(mcmc, num_chains: int, num_draws: int) -> np.ndarray:
    diverging = np.zeros((num_chains, num_draws), dtype=bool)
    for chain, indices in mcmc.diagnostics().get("divergences", {}).items():
        diverging[int(chain.split()[-1]), list(indices)] = True
    return diverging


@torch.no_grad()
def from_mcmc(
    mcmc,
    *args,
    var_names: Sequence[str] | None = None,
    max_entries: int | None = None,
    large: str = "thin",
    **kwargs,
):
    """A DataTree of a ``pyro.infer.MCMC`` run, its chains kept.

    :param mcmc: an ``MCMC`` object after ``run``.
    :param args, kwargs: the model's arguments with the data (default: those of the run).
    :param var_names, max_entries, large: as for :func:`from_svi`.
    :returns: an ``xarray.DataTree``; ``sample_stats`` has ``lp`` and ``diverging``.
    """
    _check_shrink(max_entries, large)
    samples = _mcmc_samples(mcmc)
    if not args and not kwargs:
        args, kwargs = mcmc._args or (), mcmc._kwargs or {}
    model = mcmc.kernel.model
    check_batch(model, args)
    num_chains, num_draws = next(iter(samples.values())).shape[:2]
    collector = None
    draws = [(chain, draw) for chain in range(num_chains) for draw in range(num_draws)]
    for chain, draw in _progress(draws, len(draws), "posterior draws"):
        values = {name: value[chain, draw] for name, value in samples.items()}
        model_trace = prune_subsample_sites(
            poutine.trace(poutine.condition(model, data=values)).get_trace(*args, **kwargs)
        )
        if collector is None:
            collector = _Collector(model, var_names, model_trace, set(samples))
        collector.add(model_trace)
    stats = {"diverging": _diverging(mcmc, num_chains, num_draws)}
    attrs = _attrs("mcmc", kernel=type(mcmc.kernel).__name__)
    return _datatree(collector, num_chains, stats, attrs, max_entries, large)
