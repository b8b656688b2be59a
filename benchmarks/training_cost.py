"""Training cost: an SVI epoch of sparse variational dropout vs. a plain PyTorch epoch.

Same network (LeNet-300-100), batch size, data (Fashion-MNIST, or digits upsampled when it is not
installed) and optimizer (Adam).  A third kind of epoch runs the same sparse-VD estimator written by
hand in eager PyTorch, without Pyro (the same ``sampled_linear`` and fused KL that the guide uses):
it is the floor of what the method costs, so ``svi / eager`` is what Pyro's tracing and the
library's checks add and ``eager / plain`` what the method itself costs.  A fourth kind writes
the same estimator as a bare Pyro program (a model and a guide as functions over ``pyro.param``
and ``pyro.sample``, ``TraceKL_ELBO``, no modules, no checks): ``bare_pyro / eager`` is what
Pyro's tracing costs by itself, ``svi / bare_pyro`` what the library adds on top of it.
Epochs of the four are interleaved, so all see the same machine load, and ratios of the medians
are reported.  Then one SVI step is split into its phases (guide, model, KL and likelihood,
backward, optimizer) to show where the time goes.

    python benchmarks/training_cost.py --epochs 3 --threads 2 --batch-size 128 512

The per-weight work of the method (the KL, the variance of every weight, twice the optimizer
state) is paid once per step, so the ratio falls as the batch grows; each batch size given is
measured in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import nn
from torch.utils.data import DataLoader

from pyro_bnn.data import load_dataset
from pyro_bnn.distributions.kl import sparse_vd_kl_normal
from pyro_bnn.guides import AutoMeanFieldNormal, LocalReparameterizedNormal
from pyro_bnn.infer import TraceKL_ELBO, fit
from pyro_bnn.infer.fit import _structure_validation, default_optimizer
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood, lenet_300_100, log_uniform_prior
from pyro_bnn.models.likelihoods import _CrossEntropyCategorical
from pyro_bnn.ops import sampled_linear

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the benchmarks' own helpers
import provenance  # noqa: E402


def plain_epoch(net, optimizer, loader) -> float:
    started = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return time.perf_counter() - started


class EagerSparseVD(nn.Module):
    """Sparse variational dropout on a ``Sequential`` of linear layers, written without Pyro.

    Each ``nn.Linear`` gets a mean (its own initialization) and a log-variance (-9, the guide's
    default); its output is sampled with :func:`~pyro_bnn.ops.sampled_linear` and its KL to the
    log-uniform prior is :func:`~pyro_bnn.distributions.kl.sparse_vd_kl_normal`, exactly what
    the guide and ``TraceKL_ELBO`` compute.  Biases stay deterministic, as in the model.
    """

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.net = net
        self.means = nn.ParameterDict()
        self.log_variances = nn.ParameterDict()
        for name, module in net.named_children():
            if isinstance(module, nn.Linear):
                self.means[name] = nn.Parameter(module.weight.detach().clone())
                self.log_variances[name] = nn.Parameter(torch.full_like(module.weight, -9.0))
                del module.weight  # the layer's weight lives in the two parameters above

    def negative_elbo(self, x, y, num_data: int) -> torch.Tensor:
        h, kl = x, 0.0
        for name, module in self.net.named_children():
            if name in self.means:
                mean, log_variance = self.means[name], self.log_variances[name]
                h = sampled_linear(h, mean, log_variance.exp(), module.bias)
                kl = kl + sparse_vd_kl_normal(mean, log_variance).sum()
            else:
                h = module(h)
        return F.cross_entropy(h, y, reduction="sum") * (num_data / len(y)) + kl


def eager_epoch(bnn: EagerSparseVD, optimizer, loader) -> float:
    started = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        bnn.negative_elbo(x, y, len(loader.dataset)).backward()
        optimizer.step()
    return time.perf_counter() - started


class BarePyroSparseVD:
    """The same estimator as a bare Pyro program, without the library's modules and checks.

    The model samples each linear layer's weight from the log-uniform prior and scores the
    labels with the categorical likelihood ``fit`` uses (one fused cross-entropy); the guide
    samples each weight from a :class:`~pyro_bnn.guides.LocalReparameterizedNormal` over a mean
    and a log-variance (-9), so the layers sample their pre-activations and
    :class:`~pyro_bnn.infer.TraceKL_ELBO` finds the fused KL: the arithmetic of
    :class:`EagerSparseVD` and of ``fit``, through Pyro's ``param`` and ``sample`` statements.
    Biases are point estimates, as in the model.

    :param net: the network (its linear layers' weights are the sampled sites).
    :param num_data: the training set's size (the plate's).
    :param prefix: prefix of the parameter and site names in Pyro's parameter store.
    """

    def __init__(self, net: nn.Sequential, num_data: int, prefix: str = "bare."):
        self.net, self.num_data, self.prefix = net, num_data, prefix
        self.priors, parameters = {}, []
        for name, module in net.named_children():
            if isinstance(module, nn.Linear):
                self.priors[name] = log_uniform_prior(name, module.weight).to_event(2)
                initial = {
                    "loc": module.weight.detach().clone(),
                    "log_variance": torch.full_like(module.weight, -9.0),
                    "bias": module.bias.detach().clone(),
                }
                for kind, value in initial.items():
                    parameters.append(pyro.param(f"{prefix}{name}.{kind}", value).unconstrained())
        self.parameters = parameters
        self.elbo = TraceKL_ELBO()

    def model(self, x, y):
        h, prefix = x, self.prefix
        for name, module in self.net.named_children():
            if name in self.priors:
                weight = pyro.sample(f"{prefix}{name}.weight", self.priors[name])
                h = F.linear(h, weight, pyro.param(f"{prefix}{name}.bias"))
            else:
                h = module(h)
        with pyro.plate(f"{prefix}data", self.num_data, subsample=torch.arange(len(y))):
            pyro.sample(f"{prefix}y", _CrossEntropyCategorical(h), obs=y)

    def guide(self, x, y):
        for name in self.priors:
            posterior = LocalReparameterizedNormal(
                pyro.param(f"{self.prefix}{name}.loc"),
                log_variance=pyro.param(f"{self.prefix}{name}.log_variance"),
                validate_args=False,
            )
            pyro.sample(f"{self.prefix}{name}.weight", posterior.to_event(2))


def bare_pyro_epoch(bnn: BarePyroSparseVD, optimizer, loader) -> float:
    # Without the ELBO's structural checks on every step, as in fit after an epoch's first step.
    with _structure_validation(False):
        started = time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            bnn.elbo.differentiable_loss(bnn.model, bnn.guide, x, y).backward()
            optimizer.step()
        return time.perf_counter() - started


def phases(model, guide, optimizer, loader, steps: int) -> dict[str, float]:
    """Mean milliseconds per step spent in each phase of a TraceKL_ELBO step."""
    elbo = TraceKL_ELBO()
    totals = dict.fromkeys(["guide", "model", "kl+likelihood", "backward", "optimizer"], 0.0)
    iterator = iter(loader)
    with pyro.get_param_store().scope():
        for _ in range(steps):
            x, y = next(iterator)
            optimizer.zero_grad(set_to_none=True)
            elbo.last_terms = {"data": 0.0, "kl": 0.0}
            t0 = time.perf_counter()
            guide_trace = poutine.trace(guide).get_trace(x, y)
            t1 = time.perf_counter()
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
            t2 = time.perf_counter()
            _, loss = elbo._differentiable_loss_particle(
                prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
            )
            t3 = time.perf_counter()
            loss.backward()
            t4 = time.perf_counter()
            optimizer.step()
            t5 = time.perf_counter()
            for key, seconds in zip(
                totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True
            ):
                totals[key] += seconds
    return {key: 1000 * value / steps for key, value in totals.items()}


def compare(splits, batch_size: int, epochs: int, adam) -> dict:
    """Interleaved plain and SVI epochs at one batch size; the SVI step split into phases."""
    loader = DataLoader(splits.train, batch_size=batch_size, shuffle=True)
    in_features = int(torch.tensor(splits.input_shape).prod())
    net = lenet_300_100(in_features, 10)
    plain_optimizer = adam(net.parameters())
    eager = EagerSparseVD(lenet_300_100(in_features, 10))
    eager_optimizer = adam(eager.parameters())
    bare = BarePyroSparseVD(lenet_300_100(in_features, 10), len(splits.train))
    bare_optimizer = adam(bare.parameters)
    model = BayesianNetwork(
        lenet_300_100(in_features, 10),
        CategoricalLikelihood(len(splits.train), 10),
        input_shape=splits.input_shape,
    )
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
    x0, y0 = next(iter(loader))
    guide(x0, y0)
    svi_optimizer = adam(list(model.parameters()) + list(guide.parameters()))

    plain_epoch(net, plain_optimizer, loader)  # warm-up
    eager_epoch(eager, eager_optimizer, loader)
    bare_pyro_epoch(bare, bare_optimizer, loader)
    plain_times, eager_times, bare_times, svi_times = [], [], [], []
    for _ in range(epochs):
        plain_times.append(plain_epoch(net, plain_optimizer, loader))
        eager_times.append(eager_epoch(eager, eager_optimizer, loader))
        bare_times.append(bare_pyro_epoch(bare, bare_optimizer, loader))
        record = fit(model, guide, loader, epochs=1, optimizer=svi_optimizer, progress=False)[0]
        svi_times.append(record.seconds)
    plain, floor, bare_pyro, svi = (
        statistics.median(t) for t in (plain_times, eager_times, bare_times, svi_times)
    )

    def paired(numerators, denominators) -> list[float]:
        # Each epoch over the one of the other kind in the same round: the machine's slow and
        # fast spells then fall on both sides of a ratio.
        return [n / d for n, d in zip(numerators, denominators, strict=True)]

    svi_eager, bare_eager = paired(svi_times, eager_times), paired(bare_times, eager_times)
    return {
        "batch_size": batch_size,
        "steps_per_epoch": len(loader),
        "plain_epoch_seconds": plain_times,
        "eager_epoch_seconds": eager_times,
        "bare_pyro_epoch_seconds": bare_times,
        "svi_epoch_seconds": svi_times,
        "ratio_svi_over_plain": svi / plain,
        "ratio_eager_over_plain": floor / plain,
        "ratio_svi_over_eager": svi / floor,
        "ratio_svi_over_eager_paired_median": statistics.median(svi_eager),
        "ratio_svi_over_eager_paired_range": [min(svi_eager), max(svi_eager)],
        "ratio_bare_pyro_over_eager": bare_pyro / floor,
        "ratio_bare_pyro_over_eager_paired_median": statistics.median(bare_eager),
        "ratio_svi_over_bare_pyro_paired_median": statistics.median(paired(svi_times, bare_times)),
        "plain_step_ms": 1000 * plain / len(loader),
        "svi_step_phases_ms": phases(model, guide, svi_optimizer, loader, min(50, len(loader))),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each, interleaved")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--unfused-adam", action="store_true", help="plain torch.optim.Adam for all"
    )
    provenance.add_record_options(parser, smoke="the digits data, whatever is installed")
    options = parser.parse_args(argv)
    if options.epochs < 1:
        parser.error("--epochs must be at least 1")
    with provenance.torch_threads(options.threads):
        return _measure(options, provenance.run("training_cost.py", argv, options.threads))


def _measure(options, run: dict) -> list[dict]:
    pyro.set_rng_seed(0)
    fashion = os.path.isdir("/usr/share/datasets/fashion-mnist") and not options.smoke
    splits = load_dataset("fashion-mnist" if fashion else "digits")

    def adam(parameters):
        # Every side gets the optimizer pyro_bnn.fit uses by default (fused Adam).
        if options.unfused_adam:
            return torch.optim.Adam(parameters, lr=1e-3)
        return default_optimizer(parameters, lr=1e-3)

    results = []
    for batch_size in options.batch_size:
        result = {
            "benchmark": "training_cost",
            **run,
            "smoke": options.smoke,
            "pyro": pyro.__version__,
            "data": splits.name,
            "fused_adam": not options.unfused_adam,
            **compare(splits, batch_size, options.epochs, adam),
        }
        print(json.dumps(result, indent=2))
        provenance.append_record(result, output=options.output, smoke=options.smoke)
        results.append(result)
    return results


if __name__ == "__main__":
    main()
