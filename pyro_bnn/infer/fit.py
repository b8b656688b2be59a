"""``fit``: stochastic variational inference over a DataLoader, with the conveniences of a
training loop (progress bar, per-epoch report, KL schedules, checkpoints, a NaN guard)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import pyro
import torch
from pyro.infer import ELBO
from torch import nn
from tqdm import tqdm

from pyro_bnn.util import all_finite

from .checkpoint import load_checkpoint, save_checkpoint
from .kl_weight import KLWeight, blundell_weight, warmup_weight
from .trace_kl_elbo import TraceKL_ELBO


@dataclass
class EpochRecord:
    """What one epoch of :func:`fit` measured.

    ``loss`` is the mean negative ELBO estimate over the epoch's steps (nats, for the whole
    data set, with the KL weight applied); ``data`` the mean expected log-likelihood of the
    data set, ``E_q[log p(y | x, w)]`` (the plate scales each batch by ``N / B``); ``kl`` the
    KL divergence from the guide to the prior, without the KL weight; ``kl_weight`` the mean
    weight applied to it; ``lr`` the learning rate the epoch ran with.
    """

    epoch: int
    loss: float
    data: float
    kl: float
    kl_weight: float
    lr: float
    seconds: float


class NonFiniteLossError(FloatingPointError):
    """The ELBO or its gradient became NaN or infinite; no parameter was updated by that step."""


def _batch_arguments(batch) -> tuple:
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)):
        return tuple(batch)
    raise TypeError(
        "the DataLoader must yield tensors or tuples of tensors (inputs, targets), got "
        f"{type(batch).__name__}"
    )


def check_batch(model: Callable, args: tuple) -> None:
    """Reject a batch with NaN/inf values, wrong input shape or invalid targets.

    Uses the model's ``check_inputs(x)`` / ``check_targets(y)`` when it has them (the models of
    :mod:`pyro_bnn.models` do), else checks every floating-point tensor for finiteness.
    """
    check_inputs = getattr(model, "check_inputs", None)
    check_targets = getattr(model, "check_targets", None)
    for position, value in enumerate(args):
        if not isinstance(value, torch.Tensor):
            continue
        if position == 0 and check_inputs is not None:
            check_inputs(value)
        elif position == 1 and check_targets is not None:
            check_targets(value)
        elif not all_finite(value):
            name = "inputs" if position == 0 else "targets" if position == 1 else f"arg {position}"
            raise ValueError(f"the {name} contain NaN or infinite values")


def default_optimizer(parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam, fused where the parameters' device and dtype allow it.

    A mean-field guide doubles the parameters, so the optimizer's share of a step doubles too;
    the fused implementation updates all of them in one kernel.
    """
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(parameters, lr=lr)


def _make_optimizer(optimizer, parameters: list[nn.Parameter], lr: float):
    if optimizer is None:
        return default_optimizer(parameters, lr)
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    return optimizer(parameters)


def _parameters(*modules) -> list[nn.Parameter]:
    seen, result = set(), []
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                result.append(parameter)
    return result


def _kl_at(model, guide, args) -> float:
    elbo = TraceKL_ELBO()
    with torch.no_grad():
        elbo.loss(model, guide, *args)
    return elbo.last_terms["kl"]


def fit(
    model: nn.Module,
    guide: nn.Module,
    data: Iterable,
    *,
    epochs: int,
    elbo: ELBO | None = None,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | Callable | None = None,
    scheduler: Callable | None = None,
    kl_warmup_epochs: float = 0.0,
    kl_reweighting: str = "uniform",
    max_grad_norm: float | None = None,
    seed: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    callback: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
) -> list[EpochRecord]:
    """Train ``guide`` to approximate ``model``'s posterior by stochastic variational inference.

    Each step draws one mini-batch from ``data``, estimates the ELBO with ``elbo`` (default
    :class:`TraceKL_ELBO`, which uses registered KL divergences and local reparameterization
    when the guide provides it), and takes one optimizer step on the parameters of both the
    model and the guide.  The KL is scaled by the data-set size through the model's plate,
    never by the batch size.

    :param model: a Pyro model called as ``model(*batch)``; an ``nn.Module``
        (``PyroModule``), whose deterministic parameters are trained too.
    :param guide: a guide ``nn.Module`` (e.g. :class:`~pyro_bnn.guides.AutoMeanFieldNormal`).
    :param data: an iterable of batches, usually a ``torch.utils.data.DataLoader`` yielding
        ``(inputs, targets)``; every batch is checked (finite values, input shape, labels in
        range) before it can change a parameter.
    :param epochs: number of passes over ``data`` (in total, including resumed ones).
    :param elbo: a Pyro ELBO: ``TraceKL_ELBO()`` (default), ``Trace_ELBO()``,
        ``TraceMeanField_ELBO()``, ``RenyiELBO()``...
    :param lr: learning rate of the default optimizer, ``torch.optim.Adam`` (fused where the
        parameters' device and dtype allow it).
    :param optimizer: an optimizer over ``model`` and ``guide`` parameters, or a factory
        ``parameters -> Optimizer``.
    :param scheduler: a factory ``optimizer -> torch.optim.lr_scheduler.LRScheduler``,
        stepped once per epoch (``lambda opt: CosineAnnealingLR(opt, T_max=epochs)``).
    :param kl_warmup_epochs: scale the KL linearly from 0 to 1 over this many epochs.
    :param kl_reweighting: ``"uniform"`` (every mini-batch weighs the KL equally) or
        ``"blundell"`` (Bayes by Backprop's geometric weights over an epoch's mini-batches).
    :param max_grad_norm: clip the gradient's global norm to this value.
    :param seed: seeds torch and Pyro first, making a CPU run exactly repeatable (including the
        DataLoader's shuffling when it uses the global generator).
    :param checkpoint: write a checkpoint of model, guide, optimizer and history to this path
        after every epoch (atomically).
    :param resume: continue from ``checkpoint`` if the file exists.
    :param callback: called with each :class:`EpochRecord`.
    :param progress: show a tqdm progress bar.
    :returns: one :class:`EpochRecord` per epoch (including resumed epochs).
    :raises NonFiniteLossError: the loss or gradient became NaN/inf; the parameters keep their
        values from before the failing step.
    """
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if kl_reweighting not in ("uniform", "blundell"):
        raise ValueError(f"kl_reweighting must be 'uniform' or 'blundell', got {kl_reweighting!r}")
    if kl_warmup_epochs < 0:
        raise ValueError(f"kl_warmup_epochs must be non-negative, got {kl_warmup_epochs}")
    for name, value in (("model", model), ("guide", guide)):
        if not isinstance(value, nn.Module):
            raise TypeError(
                f"fit trains nn.Module models and guides (PyroModule, AutoGuide); the {name} is "
                f"a {type(value).__name__}. For functions with pyro.param statements use "
                "pyro.infer.SVI directly."
            )
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if seed is not None:
        pyro.set_rng_seed(seed)
    elbo = TraceKL_ELBO() if elbo is None else elbo
    num_steps = len(data) if hasattr(data, "__len__") else None
    if kl_reweighting == "blundell" and not num_steps:
        raise ValueError("kl_reweighting='blundell' needs a data loader with a length")

    kl_weight = KLWeight()
    weighted_model, weighted_guide = kl_weight(model), kl_weight(guide)

    # One isolated parameter store per call: PyroModules register their parameters by name, and
    # two models with equal names must not share them.
    with pyro.get_param_store().scope():
        first = None
        for batch in data:
            first = _batch_arguments(batch)
            break
        if first is None:
            raise ValueError("the data loader is empty")
        check_batch(model, first)
        with torch.no_grad():
            guide(*first)  # creates the guide's parameters from the model's structure
        parameters = _parameters(model, guide)
        optimizer = _make_optimizer(optimizer, parameters, lr)
        lr_scheduler = scheduler(optimizer) if scheduler is not None else None

        history: list[EpochRecord] = []
        start = 0
        if resume and os.path.exists(checkpoint):
            state = load_checkpoint(
                checkpoint,
                model=model,
                guide=guide,
                optimizer=optimizer,
                scheduler=lr_scheduler,
                restore_rng=True,
            )
            start = state["epoch"]
            history = [EpochRecord(**record) for record in state["history"]]

        total = (epochs - start) * num_steps if num_steps else None
        bar = tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True)
        try:
            for epoch in range(start, epochs):
                record = _run_epoch(
                    epoch, model, guide, weighted_model, weighted_guide, data, elbo, kl_weight,
                    optimizer, parameters, num_steps, kl_warmup_epochs, kl_reweighting,
                    max_grad_norm, bar,
                )  # fmt: skip
                if lr_scheduler is not None:
                    lr_scheduler.step()
                history.append(record)
                bar.set_postfix(epoch=epoch + 1, loss=f"{record.loss:.4g}", kl=f"{record.kl:.4g}")
                if checkpoint is not None:
                    save_checkpoint(
                        checkpoint,
                        model=model,
                        guide=guide,
                        optimizer=optimizer,
                        scheduler=lr_scheduler,
                        epoch=epoch + 1,
                        history=[asdict(r) for r in history],
                    )
                if callback is not None:
                    callback(record)
        finally:
            bar.close()
    return history


def _stop(optimizer, what: str, epoch: int, step: int, remedies: str):
    optimizer.zero_grad(set_to_none=True)
    raise NonFiniteLossError(
        f"{what} at epoch {epoch + 1}, step {step + 1}; no parameter was changed by this "
        f"step. Try a smaller learning rate, {remedies}."
    )


def _run_epoch(
    epoch, model, guide, weighted_model, weighted_guide, data, elbo, kl_weight, optimizer,
    parameters, num_steps, kl_warmup_epochs, kl_reweighting, max_grad_norm, bar,
) -> EpochRecord:  # fmt: skip
    started = time.perf_counter()
    losses, data_terms, kls, weights = [], [], [], []
    step = -1
    args = ()
    for step, batch in enumerate(data):
        args = _batch_arguments(batch)
        check_batch(model, args)
        progress = epoch + (step / num_steps if num_steps else 0.0)
        weight = warmup_weight(progress, kl_warmup_epochs)
        if kl_reweighting == "blundell":
            weight *= blundell_weight(step, num_steps)
        kl_weight.weight = weight

        optimizer.zero_grad(set_to_none=True)
        if hasattr(elbo, "differentiable_loss"):
            surrogate = elbo.differentiable_loss(weighted_model, weighted_guide, *args)
            loss = surrogate.item()
            if math.isfinite(loss):
                surrogate.backward()
        else:
            # ELBOs such as RenyiELBO only offer loss_and_grads, which runs backward itself.
            loss = elbo.loss_and_grads(weighted_model, weighted_guide, *args)
        if not math.isfinite(loss):
            _stop(optimizer, f"the loss became {loss}", epoch, step, "a KL warm-up, max_scale")
        grads = [p.grad for p in parameters if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if not torch.isfinite(norm):
            _stop(optimizer, "the gradient became non-finite", epoch, step, "max_grad_norm")
        if max_grad_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(grads, max_grad_norm, norm)
        optimizer.step()

        losses.append(loss)
        weights.append(weight)
        terms = getattr(elbo, "last_terms", None)
        if terms:
            data_terms.append(terms["data"])
            if weight > 0:
                kls.append(terms["kl"] / weight)
        bar.update(1)
    if step < 0:
        raise ValueError("the data loader yielded no batch")
    mean_weight = sum(weights) / len(weights)
    mean_loss = sum(losses) / len(losses)
    if kls:
        kl = sum(kls) / len(kls)
    else:
        # The ELBO does not split its terms (or the KL weight was 0): the KL of the guide at the
        # end of the epoch, analytic wherever a KL is registered.
        kl = _kl_at(model, guide, args)
    data_term = sum(data_terms) / len(data_terms) if data_terms else mean_weight * kl - mean_loss
    return EpochRecord(
        epoch=epoch + 1,
        loss=mean_loss,
        data=data_term,
        kl=kl,
        kl_weight=mean_weight,
        lr=optimizer.param_groups[0]["lr"],
        seconds=time.perf_counter() - started,
    )
