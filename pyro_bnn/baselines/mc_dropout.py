"""MC dropout (Gal & Ghahramani, 2016): dropout kept on at test time as approximate inference.

A network trained with dropout and weight decay is, in Gal & Ghahramani's reading, a variational
approximation whose posterior samples are the network under random dropout masks; the
predictive is the average over masks.

:func:`mc_dropout_network` makes the dropout network from an ordinary one, and
:func:`predict_mc_dropout` predicts with the masks drawn afresh.  Train it with
:func:`~pyro_bnn.baselines.train_deterministic` and a ``weight_decay``, which plays the part of
the prior (Gal & Ghahramani relate it to a prior length scale, the keep probability and the
model precision).  The thesis's baselines use ``p = 0.5`` before the fully connected layers,
and for its toy regression none on the input and ``0.2`` on the hidden layer.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from pyro_bnn.models import WEIGHT_LAYERS

from ._checks import check_names, check_network, check_task
from ._prediction import (
    check_prediction_arguments,
    classification_prediction,
    in_chunks,
    regression_prediction,
)
from .deterministic import network_outputs
from .gaussian_noise import GaussianNoise

#: The name of the dropout module that :func:`mc_dropout_network` adds to a layer.
INPUT_DROPOUT = "input_dropout"

#: The module types whose masks :func:`predict_mc_dropout` keeps drawing at test time.
DROPOUT_LAYERS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def _drop_input(layer: nn.Module, args: tuple) -> tuple:
    # A forward pre-hook: the layer sees its input through its own dropout module.
    return (getattr(layer, INPUT_DROPOUT)(args[0]), *args[1:])


def mc_dropout_network(net: nn.Module, p: float, *, skip: Iterable[str] | None = None) -> nn.Module:
    """A copy of ``net`` with dropout of rate ``p`` on the input of its weight layers.

    Every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d`` except those named in
    ``skip`` gets a child module ``input_dropout = nn.Dropout(p)`` that a forward pre-hook
    applies to the layer's input, so the layer computes ``layer(dropout(input))``.  The
    network's parameter names, state dict and attributes are unchanged (``copy.fc1.weight`` is
    still the weight; a state dict of ``net`` loads into the copy and back), and the layers
    can be called from any ``forward``, not only an ``nn.Sequential``.

    Dropout is elementwise (``nn.Dropout``) everywhere, on convolutional feature maps too: one
    Bernoulli variable per input unit and position, as in Gal & Ghahramani's Bernoulli
    approximation, rather than per channel as ``nn.Dropout2d`` would drop.

    :param net: the network; it is copied, the original is left untouched.
    :param p: the dropout rate, in ``[0, 1)``.
    :param skip: names (as in ``net.named_modules()``) of the weight layers whose input is not
        dropped.  By default the first weight layer in registration order, which for an
        ``nn.Sequential`` and most hand-written networks is the one that reads the network's
        input: the data are not dropped, the hidden units and the output layer's inputs are.
        Pass ``skip=()`` to drop the network's input as well.
    :returns: the dropout network, in the training mode of ``net``.
    """
    check_network(net)
    if isinstance(p, bool) or not (isinstance(p, (int, float)) and 0 <= p < 1):
        raise ValueError(f"the dropout rate p must lie in [0, 1), got {p!r}")
    layers = [name for name, module in net.named_modules() if isinstance(module, WEIGHT_LAYERS)]
    if not layers:
        raise ValueError("the network has no nn.Linear or convolution layer to put dropout before")
    if isinstance(skip, str):
        raise TypeError("skip must be a collection of layer names, not a string")
    skipped = {layers[0]} if skip is None else check_names("skip", skip, layers)
    for name in layers:
        if hasattr(net.get_submodule(name), INPUT_DROPOUT):
            raise ValueError(f"layer {name!r} already has an {INPUT_DROPOUT}")
    dropout_net = copy.deepcopy(net)
    for name in layers:
        if name in skipped:
            continue
        layer = dropout_net.get_submodule(name)
        dropout = nn.Dropout(p)
        dropout.train(layer.training)
        layer.add_module(INPUT_DROPOUT, dropout)
        layer.register_forward_pre_hook(_drop_input)
    return dropout_net


@torch.no_grad()
def predict_mc_dropout(
    net: nn.Module,
    x: torch.Tensor,
    num_samples: int = 100,
    *,
    noise: GaussianNoise | None = None,
    y: torch.Tensor | None = None,
    batch_size: int = 100,
):
    """The MC-dropout predictive: ``num_samples`` passes with fresh dropout masks.

    The network is put in evaluation mode (BatchNorm uses its running statistics) except its
    dropout modules (:data:`DROPOUT_LAYERS`, those of :func:`mc_dropout_network` and any the
    network had), which keep drawing masks; every module's mode is restored afterwards.

    Vectorized, not a loop over samples: each chunk of ``batch_size`` inputs is repeated
    ``num_samples`` times and run in one pass, so a pass holds ``num_samples * batch_size``
    examples.  Masks are independent for every (sample, input) pair: sample ``s`` is not one
    network shared by all inputs, but each input's ``num_samples`` predictions are independent
    draws from its MC-dropout predictive, which is all that per-input predictive quantities
    (probabilities, entropies, log-likelihoods) depend on.

    :param net: a network with dropout, trained (:func:`mc_dropout_network`).
    :param x: inputs ``(N, ...)``.
    :param num_samples: dropout samples ``S``.
    :param noise: ``None`` for a classifier; a regression network's :class:`GaussianNoise`.
    :param y: targets ``(N,)``; gives the prediction's ``log_likelihood``, ``(S, N)``.
    :param batch_size: inputs per pass.
    :returns: a :class:`~pyro_bnn.infer.ClassificationPrediction` (``probs_samples``
        ``(S, N, C)``) or a :class:`~pyro_bnn.infer.RegressionPrediction` (``mean_samples`` and
        ``variance_samples`` ``(S, N)``).
    """
    check_network(net)
    task = "classification" if noise is None else "regression"
    check_task(task, noise)
    check_prediction_arguments(task, x, y, batch_size, num_samples)
    if not any(isinstance(module, DROPOUT_LAYERS) for module in net.modules()):
        raise ValueError("the network has no dropout layer; make one with mc_dropout_network")

    def one_chunk(chunk: torch.Tensor) -> tuple[torch.Tensor, ...]:
        repeated = chunk.unsqueeze(0).expand(num_samples, *chunk.shape)
        outputs = network_outputs(net, repeated.reshape(-1, *chunk.shape[1:]), noise)
        return tuple(t.reshape(num_samples, len(chunk), *t.shape[1:]) for t in outputs)

    modes = [(module, module.training) for module in net.modules()]
    net.eval()
    for module in net.modules():
        if isinstance(module, DROPOUT_LAYERS):
            module.train()
    try:
        outputs = in_chunks(one_chunk, x, batch_size)
    finally:
        for module, mode in modes:
            module.training = mode
    if noise is None:
        return classification_prediction(outputs[0], y)
    return regression_prediction(*outputs, y)
