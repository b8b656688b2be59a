"""The deterministic baseline: the network trained by maximum likelihood, or by MAP with a
Gaussian prior through weight decay.

Classification minimizes the cross-entropy of integer labels (a softmax over the network's
``(N, C)`` logits).  Regression minimizes the Gaussian negative log-likelihood of real targets
``(N,)`` under a :class:`~pyro_bnn.baselines.GaussianNoise`: the network outputs the mean,
shape ``(N, 1)`` or ``(N,)``, and the homoscedastic noise variance is fitted by maximum
likelihood together with the network.

``weight_decay`` is an L2 penalty in the loss, not decoupled weight decay (AdamW).  Training
minimizes

.. math:: \\frac1N \\sum_n -\\log p(y_n \\mid x_n, \\theta) + \\frac{\\lambda}{2} \\|\\theta\\|^2,

which is ``1/N`` times the negative log posterior under the prior
:math:`\\theta \\sim \\mathcal{N}(0, \\tau^{-1} I)` with prior precision :math:`\\tau = N\\lambda`:
the minimizer is the MAP estimate, the mean of the last-layer Laplace approximation
(:mod:`pyro_bnn.baselines.last_layer_laplace`), whose ``prior_precision`` should then be
:math:`N\\lambda`.  It is implemented as Adam's own ``weight_decay``, which adds
:math:`\\lambda\\theta` to the gradient before Adam's moment estimates, exactly the gradient of
that penalty.  It applies to every parameter of the network (weights and biases, the isotropic
prior of the Laplace approximation), never to the noise variance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pyro_bnn.infer.averaging import (
    ParameterAverage,
    check_ema_decay,
    warn_if_running_statistics,
)

from ._checks import (
    batch_tensors,
    check_inputs,
    check_logits,
    check_network,
    check_non_negative,
    check_non_negative_int,
    check_positive,
    check_targets,
    check_task,
    regression_mean,
)
from ._prediction import (
    check_prediction_arguments,
    classification_prediction,
    in_chunks,
    regression_prediction,
)
from .gaussian_noise import GaussianNoise


def _adam(groups: list[dict], lr: float) -> torch.optim.Adam:
    # Fused where the parameters' device and dtype allow it, as pyro_bnn.fit's default.
    try:
        return torch.optim.Adam(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(groups, lr=lr)


def training_loss(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, noise: GaussianNoise | None
) -> torch.Tensor:
    """The mean negative log-likelihood of a batch (the cross-entropy for classification),
    after checking the batch and the network's output shape."""
    check_inputs(x, "the inputs")
    check_targets(y, task, len(x), "the targets")
    output = net(x)
    if task == "classification":
        check_logits(output, y)
        return F.cross_entropy(output, y)
    return noise.negative_log_likelihood(regression_mean(output), y.to(output)).mean()


def train_deterministic(
    net: nn.Module,
    data: Iterable,
    *,
    epochs: int,
    lr: float = 1e-3,
    seed: int | None = None,
    scheduler: Callable | None = None,
    progress: bool = True,
    weight_decay: float = 0.0,
    ema_decay: float | None = None,
    task: str = "classification",
    noise: GaussianNoise | None = None,
    callback: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``net`` with Adam (as :func:`pyro_bnn.fit` does) on the mean negative
    log-likelihood, one pass over ``data`` per epoch.

    :param net: the network, trained in place (in training mode).
    :param data: batches ``(inputs, targets)``, usually a ``DataLoader``.  Each batch is checked
        (finite inputs; integer labels ``(B,)`` for classification, finite real targets ``(B,)``
        for regression) before it can change a parameter.
    :param epochs: passes over ``data``.
    :param lr: Adam's learning rate.
    :param seed: seeds torch's global generator first; it then decides the data order and the
        dropout masks (the network is already initialized), making a CPU run repeatable.
    :param scheduler: optional factory ``optimizer -> LRScheduler``, stepped once per epoch
        (the same contract as :func:`pyro_bnn.fit`'s).
    :param weight_decay: the L2 penalty :math:`\\lambda` in the loss, on every network parameter
        (MAP with prior precision :math:`N\\lambda`; see the module docstring).
    :param ema_decay: temporal averaging (:mod:`pyro_bnn.infer.averaging`): when training
        ends, ``net`` holds the exponential moving average of its parameters over the steps,
        with this decay, instead of the last step's values; ``None``: the last step's.
    :param task: ``"classification"`` (cross-entropy on the logits) or ``"regression"``
        (Gaussian negative log-likelihood of the network's mean under ``noise``).
    :param noise: for regression, the :class:`GaussianNoise` whose variance is learned (unless
        it was made with ``learn=False``) and afterwards holds the fitted value.
    :param callback: called with each epoch's record when the epoch ends (as
        :func:`pyro_bnn.fit`'s); an exception it raises ends training there.
    :returns: one ``{"epoch", "loss", "lr"}`` record per epoch (mean training negative
        log-likelihood per example, without the penalty, and the learning rate the epoch used);
        for regression also ``"noise_variance"`` at the end of the epoch.
    :raises ValueError: for bad arguments (before anything changes) or a bad batch (before that
        batch changes anything).
    :raises FloatingPointError: the loss became NaN or infinite; that step changed nothing.
    """
    check_network(net)
    check_non_negative_int("epochs", epochs)
    check_positive("lr", lr)
    check_non_negative("weight_decay", weight_decay)
    check_task(task, noise)
    ema_decay = check_ema_decay(ema_decay)
    if ema_decay is not None:
        warn_if_running_statistics(net)
    if seed is not None:
        torch.manual_seed(seed)
    learned = [noise.log_variance] if noise is not None and noise.log_variance.requires_grad else []
    # The noise may be a submodule of the network; it is never decayed.
    weights = [p for p in net.parameters() if all(p is not q for q in learned)]
    groups = [{"params": weights, "weight_decay": weight_decay}]
    if learned:
        groups.append({"params": learned, "weight_decay": 0.0})
    optimizer = _adam(groups, lr)
    schedule = scheduler(optimizer) if scheduler is not None else None
    average = None if ema_decay is None else ParameterAverage(net.parameters(), ema_decay)
    history = []
    net.train()
    total = epochs * len(data) if hasattr(data, "__len__") else None
    with tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True) as bar:
        for epoch in range(epochs):
            losses = []
            epoch_lr = optimizer.param_groups[0]["lr"]
            for batch in data:
                x, y = batch_tensors(batch)
                if y is None:
                    raise ValueError("training needs batches of (inputs, targets)")
                optimizer.zero_grad(set_to_none=True)
                loss = training_loss(net, x, y, task, noise)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss.item()} at epoch {epoch + 1}")
                loss.backward()
                optimizer.step()
                if average is not None:
                    average.update()
                losses.append(loss.item())
                bar.update(1)
            if not losses:
                raise ValueError("the data yielded no batch")
            record = {"epoch": epoch + 1, "loss": sum(losses) / len(losses), "lr": epoch_lr}
            if noise is not None:
                record["noise_variance"] = noise.variance.item()
            history.append(record)
            if schedule is not None:
                schedule.step()
            bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]['loss']:.4f}")
            if callback is not None:
                callback(record)
    if average is not None and average.steps:
        average.apply()
    return history


def network_outputs(
    net: nn.Module, x: torch.Tensor, noise: GaussianNoise | None
) -> tuple[torch.Tensor, ...]:
    """One pass of ``net`` in its current mode: ``(probs,)``, ``(N, C)``, for classification,
    ``(mean, variance)``, ``(N,)`` each, for regression."""
    output = net(x)
    if noise is None:
        check_logits(output)
        return (output.softmax(-1),)
    mean = regression_mean(output)
    return mean, noise.variance.to(mean).expand_as(mean)


@torch.no_grad()
def predict_deterministic(
    net: nn.Module,
    x: torch.Tensor,
    batch_size: int = 1000,
    *,
    noise: GaussianNoise | None = None,
    per_sample: bool = False,
    y: torch.Tensor | None = None,
):
    """Predictions of ``net`` in evaluation mode (dropout off, BatchNorm's running statistics),
    the mode restored afterwards.

    :param x: inputs ``(N, ...)``, processed ``batch_size`` at a time.
    :param noise: ``None`` for a classifier; a regression network's :class:`GaussianNoise`.
    :param per_sample: return the common layout of the baselines, a
        :class:`~pyro_bnn.infer.ClassificationPrediction` or
        :class:`~pyro_bnn.infer.RegressionPrediction` with one sample (``S = 1``).
    :param y: targets, with ``per_sample=True``: the prediction's ``log_likelihood`` ``(1, N)``.
    :returns: without ``per_sample``, class probabilities ``softmax(net(x))`` of shape
        ``(N, C)``, or for regression the pair ``(mean, variance)``, each ``(N,)`` (the
        variance is the noise variance, the same for every input).
    """
    check_network(net)
    task = "classification" if noise is None else "regression"
    check_task(task, noise)
    check_prediction_arguments(task, x, y, batch_size)
    if y is not None and not per_sample:
        raise ValueError("y= gives per-sample log-likelihoods; pass per_sample=True with it")
    was_training = net.training
    net.eval()
    try:
        outputs = in_chunks(
            lambda chunk: tuple(t.unsqueeze(0) for t in network_outputs(net, chunk, noise)),
            x,
            batch_size,
        )
    finally:
        net.train(was_training)
    if per_sample:
        if noise is None:
            return classification_prediction(outputs[0], y)
        return regression_prediction(*outputs, y)
    if noise is None:
        return outputs[0].squeeze(0)
    return outputs[0].squeeze(0), outputs[1].squeeze(0)
