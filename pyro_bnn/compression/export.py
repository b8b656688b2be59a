"""Export a pruned network as a smaller plain PyTorch network, and save it with ``torch.export``.

The *masked network* is the trained architecture with its prunable layers' weights replaced by
the test-time weights, pruned groups set to zero (the masked posterior mean, thesis Eq. 82 and 92):
:func:`masked_network`.  :func:`export` builds the network that computes the same function with
the removed units physically gone: standard ``nn.Linear``/``nn.Conv*d`` layers of the smaller
sizes, batch norms cut to the remaining channels, and where a layer keeps only some of what
reaches it, an index selection in front of it (:class:`KeptInputs`).  :func:`save_exported`
writes it as a ``torch.export`` program, which ``torch.export.load(path).module()`` runs without
Pyro or this package (TorchScript, its predecessor, is deprecated from torch 2.13 on).

A removed unit is not always zero downstream: a convolution's zero filter still outputs its bias,
``relu(bias)``, and after batch norm an affine function of it.  The export adds the constant's
contribution to the next layer's bias where that is exact (a linear layer, or a convolution whose
outputs never read zero padding) and refuses unit masks that would need it elsewhere;
:func:`~pyro_bnn.compression.structure.cascade` keeps such units instead.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from pyro_bnn.util import atomic_write

from .inference import rewrite_graph
from .structure import (
    PRUNABLE_LAYERS,
    Layer,
    UnitMasks,
    analyze_structure,
    check_mask,
    check_not_empty,
    check_tensors,
)


class KeptInputs(nn.Module):
    """Selects the kept units along dimension 1: ``x.index_select(1, kept)``, with ``kept`` a
    registered buffer of indices.  It lets the exported network take the original input shape
    when the first layer's inputs were pruned, and a linear layer read only some features of a
    flattened channel."""

    def __init__(self, kept: torch.Tensor):
        super().__init__()
        self.register_buffer("kept", kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.kept)


def masked_network(
    net: nn.Module,
    weights: Mapping[str, torch.Tensor],
    biases: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A copy of ``net`` with the given weights and biases loaded, in evaluation mode (as the
    export: batch norm uses its running statistics, dropout is off).

    :param weights: ``{layer name: weight}`` for linear and convolutional layers (names as in
        ``net.named_modules()``), each of the layer's weight shape; layers not named keep theirs.
    :param biases: ``{layer name: bias}`` likewise.
    """
    _check_weights_mapping(weights)
    network = copy.deepcopy(net).eval()
    layers = {
        name: module
        for name, module in network.named_modules()
        if isinstance(module, PRUNABLE_LAYERS)
    }
    check_tensors("weight", weights, {name: module.weight.shape for name, module in layers.items()})
    check_tensors(
        "bias",
        biases,
        {
            name: None if module.bias is None else module.bias.shape
            for name, module in layers.items()
        },
    )
    with torch.no_grad():
        for name, weight in weights.items():
            layers[name].weight.copy_(weight)
        for name, bias in (biases or {}).items():
            layers[name].bias.copy_(bias)
    return network


def export(
    net: nn.Module,
    weights: Mapping[str, torch.Tensor],
    unit_masks: Mapping[str, UnitMasks],
    biases: Mapping[str, torch.Tensor] | None = None,
    *,
    input_shape: Sequence[int],
    optimize: bool = True,
) -> nn.Module:
    """The masked network with the removed units gone: a ``torch.fx.GraphModule`` of standard
    layers, in evaluation mode, whose outputs equal ``masked_network(net, weights, biases)``'s to
    float tolerance for inputs of ``input_shape``.

    With ``optimize`` (the default) the graph is rewritten for CPU inference by
    :func:`~pyro_bnn.compression.optimize_for_inference`: channels-last convolution weights,
    non-overlapping max-pools as pairwise maxima, ReLUs moved after max-pools.  Together they
    make LeNet-5-Caffe about twice as fast at batch 1,024 on one thread.  The outputs are the
    same up to rounding.

    For every link from a layer ``P`` to the next layer ``C`` the masks must agree (every kept
    output of ``P`` is read by a kept input of ``C`` and vice versa, as
    :func:`~pyro_bnn.compression.structure.cascade` returns them), and each removed unit must be
    one the masked network does not need:

    - an input that ``C``'s kept outputs do not read (its weights are zero there) is dropped;
    - a unit of ``P`` whose weights are all zero carries a constant ``c`` (computed by running the
      network with every prunable weight zero); ``C`` absorbs it into its bias, ``b += W[:, i] c``
      for a linear layer and ``b += c sum_k W[:, i, k]`` for a convolution, which is exact only if
      ``c`` is the same at every position and no output reads zero padding (or ``c`` is 0).

    :param weights: ``{layer name: weight}`` of the masked network (the network's own where not
        given).
    :param unit_masks: ``{layer name: UnitMasks}``, typically from
        :func:`~pyro_bnn.compression.structure.cascade`; layers not named keep every unit.
    :param biases: ``{layer name: bias}`` of the masked network (the network's own where not
        given).
    :param input_shape: the shape of one input, without the batch dimension.
    :param optimize: rewrite the graph for CPU inference (see above).
    :raises ValueError: for masks of the wrong shape or type, masks that leave a dangling unit,
        remove a final output or empty a layer, removed units the masked network still uses
        non-constantly or where their constant cannot be folded exactly, and for the networks
        :func:`~pyro_bnn.compression.structure.analyze_structure` refuses.
    """
    _check_weights_mapping(weights)
    structure = analyze_structure(net, input_shape, biases)
    layers = structure.layers
    check_tensors(
        "weight", weights, {name: layer.module.weight.shape for name, layer in layers.items()}
    )
    full = {
        name: (weights[name] if name in weights else net.get_submodule(name).weight)
        .detach()
        .to(layer.module.weight)
        for name, layer in layers.items()
    }
    masks = _check_unit_masks(unit_masks, layers)
    # Constants of removed units, added to the consumer's bias.
    folds = {name: full[name].new_zeros(layer.num_outputs) for name, layer in layers.items()}
    # The network's own inputs have no producer: a removed one must be ignored.
    for name, layer in layers.items():
        if layer.incoming is None:
            removed = ~masks[name].inputs
            used = _used_inputs(full[name], masks[name].outputs)
            if (removed & used).any():
                index = int((removed & used).nonzero()[0])
                raise ValueError(
                    f"input {index} of {name!r} is removed, but the layer's weights for it are "
                    "not zero: the masked network reads it"
                )
    for link in structure.links:
        producer, consumer = layers[link.producer], layers[link.consumer]
        folds[consumer.name] += _check_link(link, producer, consumer, masks, full)

    graph_module = structure.graph_module
    for name, layer in layers.items():
        kept = masks[name]
        weight = full[name][kept.outputs][:, kept.inputs]
        bias = (
            folds[name] if layer.module.bias is None else layer.module.bias.detach() + folds[name]
        )
        needs_bias = layer.module.bias is not None or bool(folds[name].any())
        graph_module.set_submodule(
            name, _smaller_layer(layer.module, weight, bias[kept.outputs] if needs_bias else None)
        )
        arriving = (
            torch.ones_like(kept.inputs)
            if layer.incoming is None
            else masks[layer.incoming.producer].outputs.repeat_interleave(
                layer.incoming.features_per_unit
            )
        )
        if not kept.inputs[arriving].all():
            _select_before(graph_module, layer, kept.inputs[arriving].nonzero().flatten())
    for link in structure.links:
        units = masks[link.producer].outputs
        for target in link.unit_norms:
            graph_module.set_submodule(target, _cut_norm(graph_module.get_submodule(target), units))
        features = units.repeat_interleave(link.features_per_unit)
        for target in link.feature_norms:
            graph_module.set_submodule(
                target, _cut_norm(graph_module.get_submodule(target), features)
            )
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.eval()
    if optimize:
        # The graph is this function's own: rewritten in place, not copied again.
        rewrite_graph(graph_module)
    _check_same_function(graph_module, masked_network(net, weights, biases), input_shape)
    return graph_module


def save_exported(
    module: nn.Module, path: str | os.PathLike, example_input: torch.Tensor
) -> torch.export.ExportedProgram:
    """Save ``module`` as a ``torch.export`` program (a ``.pt2`` file), exported on
    ``example_input`` in evaluation mode with a dynamic batch dimension, so that
    ``torch.export.load(path).module()`` runs it on batches of any size with neither Pyro nor
    this package installed.

    The file is written next to ``path`` under a temporary name and then moved into place
    (``os.replace``), so ``path`` is never left half written.

    :returns: the exported program.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be an nn.Module, got {type(module).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1:
        raise ValueError(
            "example_input must be a batch of inputs the module accepts, got "
            f"{type(example_input).__name__}"
        )
    # Exporting records the mode it runs in; a copy keeps the caller's module as it was.
    module = copy.deepcopy(module).eval()
    if len(example_input) < 2:
        # torch.export specializes a batch dimension of size 1 to a constant.
        example_input = example_input.expand(2, *example_input.shape[1:])
    # A copy: the program stores its example, and a view would store the whole tensor it views.
    example_input = example_input.detach().clone()
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        program = torch.export.export(module, (example_input,), dynamic_shapes=({0: batch},))
    # torch.export wants the .pt2 ending, on the temporary file too.
    atomic_write(path, lambda temporary: _save_program(program, temporary), ".tmp.pt2")
    return program


def _save_program(program: torch.export.ExportedProgram, path: str) -> None:
    with warnings.catch_warnings():
        # torch.export's writer looks for a tensor spanning each weight's storage and does not
        # recognize a channels-last one as such; it warns and writes that tensor's storage
        # whole, strides recorded, which is the right thing (loading gives it back as it was).
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        torch.export.save(program, path)


def _check_weights_mapping(weights) -> None:
    if not isinstance(weights, Mapping):
        raise ValueError(
            f"weights must be a mapping from layer names to tensors, got {type(weights).__name__}"
        )


def _check_unit_masks(
    unit_masks: Mapping[str, UnitMasks], layers: Mapping[str, Layer]
) -> dict[str, UnitMasks]:
    if not isinstance(unit_masks, Mapping):
        raise ValueError(
            f"unit_masks must be a mapping from layer names to UnitMasks, got {unit_masks!r}"
        )
    for name in unit_masks:
        if name not in layers:
            raise ValueError(
                f"there are unit masks for {name!r}, which is not a prunable layer the network "
                f"calls; those are {', '.join(map(repr, layers))}"
            )
    masks = {}
    for name, layer in layers.items():
        device = layer.module.weight.device
        given = unit_masks.get(name)
        if given is None:
            given = UnitMasks(
                torch.ones(layer.num_inputs, dtype=torch.bool),
                torch.ones(layer.num_outputs, dtype=torch.bool),
            )
        if not isinstance(given, tuple) or len(given) != 2:
            raise ValueError(f"the unit masks of {name!r} must be UnitMasks, got {given!r}")
        for side, mask, size in (
            ("inputs", given[0], layer.num_inputs),
            ("outputs", given[1], layer.num_outputs),
        ):
            check_mask(f"the {side} mask of {name!r}", mask, size, f"one entry per {side[:-1]}")
        masks[name] = UnitMasks(given[0].to(device), given[1].to(device))
        check_not_empty(name, masks[name])
        if layer.is_final and not masks[name].outputs.all():
            raise ValueError(
                f"{name!r} is a final layer (its outputs are the network's); its outputs are "
                "never removed"
            )
    return masks


def _used_inputs(weight: torch.Tensor, kept_outputs: torch.Tensor) -> torch.Tensor:
    """Which inputs the kept outputs read (a non-zero weight), ``(in,)`` bool."""
    rows = weight[kept_outputs]
    return (rows != 0).transpose(0, 1).reshape(weight.shape[1], -1).any(dim=1)


def _check_link(
    link,
    producer: Layer,
    consumer: Layer,
    masks: Mapping[str, UnitMasks],
    full: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """Check that the masks of two linked layers agree and that every removed unit is one the
    consumer ignores or can fold; returns the consumer's bias correction ``(out,)``."""
    size = link.features_per_unit
    units = masks[producer.name].outputs
    inputs = masks[consumer.name].inputs
    arriving = units.repeat_interleave(size)
    between = f"between {producer.name!r} and {consumer.name!r}"
    if (inputs & ~arriving).any():
        index = int((inputs & ~arriving).nonzero()[0])
        raise ValueError(
            f"unit masks do not chain {between}: input {index} of {consumer.name!r} is kept but "
            f"its producer, unit {index // size} of {producer.name!r}, is removed"
        )
    read = inputs.view(-1, size).any(dim=1)
    if (units & ~read).any():
        index = int((units & ~read).nonzero()[0])
        raise ValueError(
            f"unit masks leave a dangling unit {between}: output {index} of {producer.name!r} is "
            f"kept but {consumer.name!r} reads none of its inputs"
        )
    used = _used_inputs(full[consumer.name], masks[consumer.name].outputs)
    dropped = arriving & ~inputs & used
    if dropped.any():
        index = int(dropped.nonzero()[0])
        raise ValueError(
            f"input {index} of {consumer.name!r} is removed, but the layer's weights for it are "
            f"not zero and {producer.name!r} still computes it: the masked network reads it"
        )
    folded = ~arriving & used
    if not folded.any():
        return full[consumer.name].new_zeros(consumer.num_outputs)
    zero_units = (full[producer.name].reshape(producer.num_outputs, -1) == 0).all(dim=1)
    live = folded & ~zero_units.repeat_interleave(size)
    if live.any():
        index = int(live.nonzero()[0])
        raise ValueError(
            f"unit {index // size} of {producer.name!r} is removed, but its weights are not zero "
            f"and {consumer.name!r} reads it (input {index}): the masked network uses it"
        )
    unfoldable = folded & ~consumer.removable_constants()
    if unfoldable.any():
        index = int(unfoldable.nonzero()[0])
        raise ValueError(
            f"unit {index} of {producer.name!r} is removed; its weights are zero but it carries a "
            f"non-zero constant that {consumer.name!r} cannot absorb exactly (its outputs read "
            "zero padding, or the value changes over positions); keep the unit, as cascade does"
        )
    weight = full[consumer.name][:, folded]
    constants = consumer.constant_input[folded]
    if isinstance(consumer.module, nn.Linear):
        return weight @ constants
    # The channel is constant: any one position gives its value.
    per_channel = constants.reshape(constants.shape[0], -1)[:, 0]
    return weight.reshape(weight.shape[0], weight.shape[1], -1).sum(dim=2) @ per_channel


def _smaller_layer(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    options = {"bias": bias is not None, "device": weight.device, "dtype": weight.dtype}
    if isinstance(module, nn.Linear):
        layer = nn.Linear(weight.shape[1], weight.shape[0], **options)
    else:
        convolution = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[weight.dim() - 2]
        layer = convolution(
            weight.shape[1],
            weight.shape[0],
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            padding_mode=module.padding_mode,
            **options,
        )
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.eval()


def _select_before(graph_module, layer: Layer, kept: torch.Tensor) -> None:
    """Insert ``KeptInputs(kept)`` between ``layer`` and its input."""
    name = f"{layer.name.replace('.', '_')}_kept_inputs"
    while hasattr(graph_module, name):
        name = f"_{name}"
    graph_module.add_submodule(name, KeptInputs(kept))
    (source,) = layer.node.args
    with graph_module.graph.inserting_before(layer.node):
        selection = graph_module.graph.call_module(name, (source,))
    layer.node.replace_input_with(source, selection)


def _cut_norm(norm: nn.Module, kept: torch.Tensor) -> nn.Module:
    """A copy of a batch norm over the kept channels only."""
    cut = copy.deepcopy(norm)
    cut.num_features = int(kept.sum())
    for attribute in ("weight", "bias", "running_mean", "running_var"):
        tensor = getattr(norm, attribute)
        if tensor is None:
            continue
        value = tensor.detach()[kept].clone()
        if isinstance(tensor, nn.Parameter):
            setattr(cut, attribute, nn.Parameter(value, requires_grad=tensor.requires_grad))
        else:
            setattr(cut, attribute, value)
    return cut


def _check_same_function(exported: nn.Module, masked: nn.Module, input_shape) -> None:
    """Compare the export with the masked network on a random input: a structure the analysis
    misjudged must fail here, not in the user's hands."""
    parameter = next(masked.parameters())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2, *input_shape), generator=generator, dtype=parameter.dtype)
    x = x.to(parameter.device)
    with torch.no_grad():
        expected = masked(x)
        try:
            got = exported(x)
        except Exception as error:  # any failure of the rewritten forward
            raise ValueError(
                "the exported network does not run; the forward may depend on a unit count "
                f"({type(error).__name__}: {error})"
            ) from error
    for want, have in zip(_tensors(expected), _tensors(got), strict=True):
        scale = float(want.abs().max()) if want.numel() else 0.0
        if want.shape != have.shape or not torch.allclose(
            have, want, rtol=1e-4, atol=1e-5 * max(scale, 1.0)
        ):
            difference = float((have - want).abs().max()) if want.shape == have.shape else math.inf
            raise ValueError(
                "the exported network differs from the masked network on a random input "
                f"(largest difference {difference:.3g}); this network has a structure the export "
                "does not handle exactly"
            )


def _tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        output = list(output.values())
    return [tensor for item in output for tensor in _tensors(item)]
