"""Which units of a network can be removed, and how pruning one layer cascades to its neighbours.

Group sparsity methods (Bayesian compression's group priors, L0 gates) prune *groups*: the input
neurons of a fully connected layer and the output channels of a convolution (Louizos' thesis,
Sec. 6.3 and 7.2.4).  A removed group takes more weights with it (App. 10.4.1): an output channel
that is never computed is not an input of the next layer, and an input neuron that no layer reads
need not be computed by the layer before.  :func:`cascade` follows these consequences through the
network, in both directions, until nothing changes, and returns for every prunable layer the
input and output units that remain (:class:`UnitMasks`).

The network is read with ``torch.fx``: between two prunable layers only operations that act on
every channel separately are allowed (elementwise activations, dropout, pooling, batch norm) and
one flatten, which turns channel ``c`` of a ``(batch, C, *spatial)`` tensor into the features
``c * S, ..., (c + 1) * S - 1`` of the next linear layer (``S`` spatial positions).  Anything else
(a residual add, a concatenation, a tensor used twice, a grouped convolution, a module that can mix
units) raises a :class:`ValueError` that names it: an export that guessed would be silently wrong.

:func:`layer_flops` counts the (expected) floating point operations of each layer, the measure of
the L0 chapter's figures.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import fx, nn

#: The layers whose units can be removed (convolutions only with ``groups=1``).
PRUNABLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Modules that act on each channel separately and keep (batch, channels) as they are.  Average
# pooling with padding is among them: it is still per channel, and a removed unit whose value then
# varies over the positions is kept by the constant check below, not refused.
_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softplus, nn.Softsign,
    nn.LogSigmoid, nn.Tanhshrink, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

_CHANNELWISE_FUNCTIONS = frozenset(
    [getattr(F, name) for name in (
        "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "tanh",
        "sigmoid", "hardtanh", "hardsigmoid", "hardswish", "softplus", "softsign", "logsigmoid",
        "tanhshrink", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
        "feature_alpha_dropout", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d",
        "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
        "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
        "adaptive_max_pool3d",
    )]
    + [torch.relu, torch.tanh, torch.sigmoid, torch.abs, torch.exp, torch.square]
)  # fmt: skip
_CHANNELWISE_METHODS = frozenset(
    ["relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_", "abs", "exp", "square", "contiguous"]
)
# Arithmetic with numbers is elementwise; with a second tensor it is a skip connection.
_ARITHMETIC = frozenset(
    [operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow,
     torch.add, torch.sub, torch.mul, torch.div]
)  # fmt: skip
_RESHAPE_METHODS = frozenset(["view", "reshape", "flatten"])
# Calls that read a tensor's shape, not its values: `x.view(x.size(0), -1)`.
_SHAPE_QUERIES = frozenset(["size", "dim"])


class UnitMasks(NamedTuple):
    """The units of a prunable layer that remain: ``inputs`` ``(in_features,)`` or
    ``(in_channels,)`` and ``outputs`` ``(out_features,)`` or ``(out_channels,)``, bool, ``True``
    where the unit is kept.  Its kept weights are ``weight[outputs][:, inputs]``."""

    inputs: torch.Tensor
    outputs: torch.Tensor


@dataclass
class Link:
    """How the outputs of ``producer`` reach the inputs of ``consumer``: unit ``c`` becomes the
    consumer's inputs ``c * features_per_unit, ..., (c + 1) * features_per_unit - 1`` (more than one
    after a flatten).  ``unit_norms`` are the batch norms before the flatten (one channel per
    producer unit), ``feature_norms`` those after it (one per consumer input)."""

    producer: str
    consumer: str
    features_per_unit: int
    unit_norms: list[str] = field(default_factory=list)
    feature_norms: list[str] = field(default_factory=list)


@dataclass
class Layer:
    """A prunable layer as the network uses it.  ``constant_input`` is the layer's input in the
    network with every prunable weight set to zero (one example, batch dimension dropped): the
    value that an input unit takes when its producer's weights for it are all zero."""

    name: str
    module: nn.Module
    node: fx.Node
    constant_input: torch.Tensor
    incoming: Link | None = None
    outgoing: Link | None = None

    @property
    def num_inputs(self) -> int:
        module = self.module
        return module.in_features if isinstance(module, nn.Linear) else module.in_channels

    @property
    def num_outputs(self) -> int:
        module = self.module
        return module.out_features if isinstance(module, nn.Linear) else module.out_channels

    @property
    def is_final(self) -> bool:
        """Whether the layer's outputs reach the network's output (they are never removed)."""
        return self.outgoing is None

    def sees_zero_padding(self) -> bool:
        """Whether some output of this convolution reads zero padding, so that a constant input
        channel does not contribute the same amount to every output position."""
        module = self.module
        if isinstance(module, nn.Linear) or module.padding_mode != "zeros":
            # Reflect, replicate and circular padding repeat a constant channel's value.
            return False
        if isinstance(module.padding, str):
            return module.padding == "same" and any(
                d * (k - 1) > 0 for d, k in zip(module.dilation, module.kernel_size, strict=True)
            )
        return any(p > 0 for p in module.padding)

    def removable_constants(self) -> torch.Tensor:
        """Which input units, if their producer's weights for them are zero (so that they carry
        a constant), can be removed from this layer exactly, folding their contribution into the
        bias; ``(num_inputs,)`` bool.

        A linear layer folds any constant (``b += W[:, i] * c_i``).  A convolution folds a channel
        that is the same at every position (``b += c_i * sum_k W[:, i, k]``) only if no output
        reads zero padding, which would see ``0`` instead of ``c_i`` at the border; a channel that
        is exactly zero everywhere needs no fold and is removable in any case.
        """
        values = self.constant_input
        if isinstance(self.module, nn.Linear):
            return torch.ones(self.num_inputs, dtype=torch.bool, device=values.device)
        flat = values.reshape(values.shape[0], -1)
        # The zero-weight network computes the same float operations at every position, so a
        # constant channel is constant to the bit; a position dependence (an average pool that
        # counts its padding) shows as a difference.
        constant = (flat == flat[:, :1]).all(dim=1)
        zero = (flat == 0).all(dim=1)
        return zero | (constant & (not self.sees_zero_padding()))


@dataclass
class NetworkStructure:
    """A network read by :func:`analyze_structure`: its traced copy (evaluation mode, every
    prunable weight zero, biases as given), its prunable layers in the order they run, and the
    links between them."""

    graph_module: fx.GraphModule
    layers: dict[str, Layer]
    links: list[Link]


def analyze_structure(
    net: nn.Module,
    input_shape: Sequence[int],
    biases: Mapping[str, torch.Tensor] | None = None,
) -> NetworkStructure:
    """Trace ``net`` with ``torch.fx`` and find which prunable layer feeds which.

    :param input_shape: the shape of one input, without the batch dimension.
    :param biases: ``{layer name: bias}`` replacing the network's own biases (as in
        :func:`~pyro_bnn.compression.export.masked_network`); they set the constants that removed
        units carry.
    :raises ValueError: when the network cannot be traced or does not run on ``input_shape``, when
        a prunable layer is shared, is a grouped convolution or is a linear layer on more than
        ``(batch, features)``, and when something that may mix units (a skip connection, a
        concatenation, a branch, an unknown module or function) lies between prunable layers.
    """
    input_shape = _check_input_shape(input_shape)
    network = copy.deepcopy(net).eval()
    try:
        graph_module = fx.symbolic_trace(network)
    except Exception as error:  # fx raises many kinds; say which step failed.
        raise ValueError(
            f"could not trace the network with torch.fx ({type(error).__name__}: {error}); "
            "structured pruning needs a forward without data-dependent control flow"
        ) from error
    graph_module.eval()
    layer_nodes = _prunable_nodes(graph_module)
    check_tensors(
        "bias",
        biases,
        {name: _bias_shape(graph_module.get_submodule(name)) for name in layer_nodes},
    )
    with torch.no_grad():
        for name in layer_nodes:
            module = graph_module.get_submodule(name)
            module.weight.zero_()
            if biases is not None and name in biases:
                module.bias.copy_(biases[name])
    values = _run(graph_module, input_shape)

    layers = {}
    for name, node in layer_nodes.items():
        module = graph_module.get_submodule(name)
        inputs = values[node.args[0].name]
        if isinstance(module, nn.Linear) and inputs.dim() != 2:
            raise ValueError(
                f"the linear layer {name!r} receives inputs of shape {tuple(inputs.shape)}: only "
                "linear layers on (batch, features) inputs can be pruned"
            )
        layers[name] = Layer(name, module, node, inputs[0])
    reaches_layer = _reaches_layer(graph_module, layer_nodes)
    links = []
    for layer in layers.values():
        link = _follow(layer, layers, values, reaches_layer, graph_module)
        if link is not None:
            layer.outgoing = link
            layers[link.consumer].incoming = link
            links.append(link)
    return NetworkStructure(graph_module, layers, links)


def cascade(
    net: nn.Module,
    group_masks: Mapping[str, torch.Tensor],
    input_shape: Sequence[int],
    *,
    biases: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, UnitMasks]:
    """The units of every prunable layer that remain after removing the pruned groups and
    everything that depends on them (Louizos' thesis, App. 10.4.1).

    A group mask is a pruning method's decision, ``True`` where the group is kept: for a linear
    layer over its input neurons ``(in_features,)``, for a convolution over its output channels
    ``(out_channels,)``.  The masked network sets a pruned group's weights to zero.  Then, until
    nothing changes:

    - a unit is removed from its consumer's inputs when its producer removed it;
    - a producer's unit is removed when its consumer removed all of its inputs (for a channel that
      is flattened, all of its ``S`` features);
    - a convolution's pruned output channel still outputs a constant (``relu(bias)``, after batch
      norm an affine function of it).  It is removed when the consumer can absorb that constant
      into its bias (:meth:`Layer.removable_constants`) and kept, as a zero filter with its bias,
      when it cannot: a convolution with zero padding reading a channel that is not exactly zero.

    The outputs of the last layers (those reaching the network's output) are never removed; the
    inputs of the first layers (the network's input features or channels) may be.

    :param input_shape: the shape of one input, without the batch dimension.
    :param biases: ``{layer name: bias}`` of the masked network, if not the network's own: the
        constants of pruned channels depend on them.
    :returns: ``{layer name: UnitMasks}`` for every prunable layer, in the order they run.
    :raises ValueError: for a group mask of the wrong shape or type, for a layer that is not
        prunable, when a layer would lose all its units (the network would ignore its input), and
        for the structures :func:`analyze_structure` refuses.
    """
    structure = analyze_structure(net, input_shape, biases)
    layers = structure.layers
    _check_group_masks(group_masks, layers)
    inputs = {}
    outputs = {}
    for name, layer in layers.items():
        device = layer.constant_input.device
        inputs[name] = torch.ones(layer.num_inputs, dtype=torch.bool, device=device)
        outputs[name] = torch.ones(layer.num_outputs, dtype=torch.bool, device=device)
        mask = group_masks.get(name)
        if mask is None:
            continue
        if isinstance(layer.module, nn.Linear):
            inputs[name] = mask.to(device).clone()
        elif not layer.is_final:
            link = layer.outgoing
            removable = layers[link.consumer].removable_constants()
            removable = removable.view(layer.num_outputs, link.features_per_unit).all(dim=1)
            outputs[name] = mask.to(device) | ~removable
    changed = True
    while changed:
        changed = False
        for link in structure.links:
            arriving = outputs[link.producer].repeat_interleave(link.features_per_unit)
            read = inputs[link.consumer].view(-1, link.features_per_unit).any(dim=1)
            new_inputs = inputs[link.consumer] & arriving
            new_outputs = outputs[link.producer] & read
            if not (
                torch.equal(new_inputs, inputs[link.consumer])
                and torch.equal(new_outputs, outputs[link.producer])
            ):
                inputs[link.consumer], outputs[link.producer] = new_inputs, new_outputs
                changed = True
    result = {name: UnitMasks(inputs[name], outputs[name]) for name in layers}
    for name, masks in result.items():
        check_not_empty(name, masks)
    return result


def kept_weights(weight: torch.Tensor, masks: UnitMasks) -> torch.Tensor:
    """The weights of a layer that remain: ``weight[outputs][:, inputs]``, shape
    ``(kept outputs, kept inputs, *kernel)``.  Works for any tensor shaped like the weight (its
    posterior variances, say)."""
    if weight.dim() < 2:
        raise ValueError(f"a weight has at least 2 dimensions, got shape {tuple(weight.shape)}")
    if not (
        isinstance(masks, tuple)
        and len(masks) == 2
        and all(isinstance(mask, torch.Tensor) and mask.dtype == torch.bool for mask in masks)
    ):
        raise ValueError(f"masks must be UnitMasks of two bool tensors, got {masks!r}")
    masks = UnitMasks(*masks)
    expected = (weight.shape[0], weight.shape[1])
    got = (masks.outputs.numel(), masks.inputs.numel())
    if got != expected:
        raise ValueError(
            f"unit masks over {got[0]} outputs and {got[1]} inputs do not fit a weight of shape "
            f"{tuple(weight.shape)}"
        )
    outputs = masks.outputs.to(weight.device)
    inputs = masks.inputs.to(weight.device)
    return weight[outputs][:, inputs]


def layer_flops(
    net: nn.Module,
    input_shape: Sequence[int],
    keep_probabilities: Mapping[str, tuple[torch.Tensor | None, torch.Tensor | None]] | None = None,
) -> dict[str, float]:
    """The expected floating point operations of each linear and convolutional layer for one
    input, with a multiply-add counted as 2 (Louizos' thesis, Sec. 7.3, Figures 20-21).

    Output unit ``j``, kept with probability ``q_j``, computes at each of its ``P`` positions a
    dot product over its inputs, of which ``n = sum_i p_i * K`` are expected to be active (``p_i``
    the input keep probabilities, ``K`` the kernel size, 1 for a linear layer): ``n``
    multiplications and ``n - 1`` additions, plus one for the bias::

        flops = sum_j q_j * P * (max(2 n - 1, 0) + [bias])

    With ``q = 1`` this is the L0 reference code's ``(2 * sum(p) - 1) * out (+ out)`` for a linear
    layer, and its convolution formula (``P`` positions per filter, times the expected number of
    filters) with ``p = 1``.  The ``max`` keeps a layer with (almost) no active inputs at zero
    instead of the reference's negative count.  With 0/1 masks it is the exact count of the
    pruned network.  ``P`` is measured by running the network on one all-zero input.

    :param input_shape: the shape of one input, without the batch dimension.
    :param keep_probabilities: ``{layer name: (inputs, outputs)}`` keep probabilities, shapes
        ``(in_features,)``/``(in_channels,)`` and ``(out_features,)``/``(out_channels,)``, either
        ``None`` for "all kept" (a :class:`UnitMasks` works too).  Layers not named are dense.
    :returns: ``{layer name: flops}`` for every layer the forward calls, in call order (a layer
        called twice counts twice).
    """
    input_shape = _check_input_shape(input_shape)
    network = copy.deepcopy(net).eval()
    positions: dict[str, list[int]] = {}
    names = {
        module: name
        for name, module in network.named_modules()
        if isinstance(module, (nn.Linear, *_CONVOLUTIONS))
    }

    def record(module, args, output):
        # A convolution computes each output channel at every spatial position; a linear layer
        # on (batch, ..., features) once per leading position.
        shape = output.shape[1:-1] if isinstance(module, nn.Linear) else output.shape[2:]
        positions.setdefault(names[module], []).append(math.prod(shape))

    for module in names:
        module.register_forward_hook(record)
    parameter = next(network.parameters(), None)
    options = (
        {"dtype": parameter.dtype, "device": parameter.device} if parameter is not None else {}
    )
    try:
        with torch.no_grad():
            network(torch.zeros((1, *input_shape), **options))
    except Exception as error:  # any failure of the user's forward
        raise ValueError(
            f"the network does not run on inputs of shape {input_shape} "
            f"({type(error).__name__}: {error})"
        ) from error
    modules = {name: module for module, name in names.items()}
    keep_probabilities = dict(keep_probabilities or {})
    for name in keep_probabilities:
        if name not in positions:
            raise ValueError(
                f"there are keep probabilities for {name!r}, which is not a linear or "
                "convolutional layer the forward calls; those are "
                f"{', '.join(map(repr, positions))}"
            )
    flops = {}
    for name, counts in positions.items():
        module = modules[name]
        p_in, q_out = _probabilities(name, module, keep_probabilities.get(name, (None, None)))
        if isinstance(module, nn.Linear):
            active = p_in.sum().expand(module.out_features)
        else:
            # Output channel j reads the input channels of its group.
            kernel = math.prod(module.kernel_size)
            per_group = p_in.view(module.groups, -1).sum(dim=1) * kernel
            active = per_group.repeat_interleave(module.out_channels // module.groups)
        per_position = (2 * active - 1).clamp(min=0) + (module.bias is not None)
        flops[name] = float((q_out * per_position).sum()) * sum(counts)
    return flops


def check_tensors(
    kind: str,
    tensors: Mapping[str, torch.Tensor] | None,
    shapes: Mapping[str, torch.Size | None],
) -> None:
    """Check ``{layer name: tensor}`` against the expected shapes (``None``: the layer has no such
    tensor): known names, matching shapes, finite floating point values."""
    if tensors is None:
        return
    if not isinstance(tensors, Mapping):
        plural = "biases" if kind == "bias" else f"{kind}s"
        raise ValueError(f"{plural} must be a mapping from layer names to tensors, got {tensors!r}")
    for name, tensor in tensors.items():
        if name not in shapes:
            raise ValueError(
                f"there is a {kind} for {name!r}, which is not a prunable layer of the network; "
                f"those are {', '.join(map(repr, shapes)) or 'none'}"
            )
        if shapes[name] is None:
            raise ValueError(f"there is a {kind} for {name!r}, but that layer has no {kind}")
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ValueError(f"the {kind} of {name!r} must be a floating point tensor")
        if tensor.shape != shapes[name]:
            raise ValueError(
                f"the {kind} of {name!r} has shape {tuple(tensor.shape)}, the layer's has shape "
                f"{tuple(shapes[name])}"
            )
        if not torch.isfinite(tensor).all():
            raise ValueError(f"the {kind} of {name!r} has NaN or infinite values")


def check_mask(what: str, mask, size: int, entries: str) -> None:
    """Raise a ``ValueError`` unless ``mask`` is a bool tensor of shape ``(size,)``."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"{what} must be a bool tensor, got {mask!r}")
    if mask.shape != (size,):
        raise ValueError(
            f"{what} has shape {tuple(mask.shape)}; it must have {entries}: shape ({size},)"
        )


def check_not_empty(name: str, masks: UnitMasks) -> None:
    """Refuse a layer left without inputs or outputs: the network would not depend on its input."""
    for side, mask in (("input", masks.inputs), ("output", masks.outputs)):
        if not mask.any():
            raise ValueError(
                f"layer {name!r} would lose all its {mask.numel()} {side} units: the network's "
                "output would no longer depend on its input"
            )


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    if (
        isinstance(input_shape, (str, bytes))
        or not isinstance(input_shape, Sequence)
        or not all(isinstance(size, int) and size > 0 for size in input_shape)
    ):
        raise ValueError(
            "input_shape must be the shape of one input without the batch dimension, a sequence "
            f"of positive integers such as (1, 28, 28); got {input_shape!r}"
        )
    return tuple(input_shape)


def _bias_shape(module: nn.Module) -> torch.Size | None:
    return None if module.bias is None else module.bias.shape


def _prunable_nodes(graph_module: fx.GraphModule) -> dict[str, fx.Node]:
    """The prunable layers the forward calls, in order; refuses shared layers, grouped
    convolutions and direct uses of a layer's parameters."""
    nodes: dict[str, fx.Node] = {}
    for node in graph_module.graph.nodes:
        if node.op != "call_module":
            continue
        module = graph_module.get_submodule(node.target)
        if isinstance(module, _CONVOLUTIONS) and module.groups != 1:
            raise ValueError(
                f"{node.target!r} is a grouped convolution (groups={module.groups}): structured "
                "pruning of grouped convolutions is not supported"
            )
        if not isinstance(module, PRUNABLE_LAYERS):
            continue
        if node.target in nodes:
            raise ValueError(
                f"layer {node.target!r} is called more than once in forward: a shared layer "
                "cannot lose units for one call and keep them for another"
            )
        nodes[node.target] = node
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.target.rpartition(".")[0] in nodes:
            raise ValueError(
                f"forward uses {node.target!r} directly; structured pruning needs the layers' "
                "parameters to be used only by the layers themselves"
            )
    if not nodes:
        raise ValueError("the network has no Linear or Conv1d/2d/3d layer to prune")
    return nodes


def _run(graph_module: fx.GraphModule, input_shape: tuple[int, ...]) -> dict[str, object]:
    """Every node's value for one all-zero input."""
    values: dict[str, object] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node):
            values[node.name] = result = super().run_node(node)
            return result

    placeholders = [node for node in graph_module.graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(
            f"the network's forward takes {len(placeholders)} arguments; structured pruning "
            "supports networks with one input tensor"
        )
    parameter = next(graph_module.parameters())
    x = torch.zeros((1, *input_shape), dtype=parameter.dtype, device=parameter.device)
    with torch.no_grad():
        try:
            # A plain call first: fx's interpreter decorates a failure with a slow, long report.
            graph_module(x)
        except Exception as error:  # any failure of the user's forward
            raise ValueError(
                f"the network does not run on inputs of shape {input_shape} "
                f"({type(error).__name__}: {error})"
            ) from error
        Recorder(graph_module).run(x)
    return values


def _reaches_layer(graph_module: fx.GraphModule, layer_nodes: Mapping[str, fx.Node]) -> set:
    """The nodes from which some prunable layer can be reached (the layers' inputs included)."""
    layer_set = set(layer_nodes.values())
    reaches: set[fx.Node] = set()
    for node in reversed(graph_module.graph.nodes):
        users = [user for user in node.users if not _is_shape_query(user)]
        if any(user in layer_set or user in reaches for user in users):
            reaches.add(node)
    return reaches


def _describe(node: fx.Node, graph_module: fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"{node.target!r} ({type(graph_module.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        return f"{node.name!r} (the method .{node.target}())"
    if node.op == "call_function":
        name = getattr(node.target, "__name__", repr(node.target))
        return f"{node.name!r} (the function {name})"
    return f"{node.name!r} ({node.op})"


def _tensor_inputs(node: fx.Node, values: Mapping[str, object]) -> list[fx.Node]:
    return [arg for arg in node.all_input_nodes if isinstance(values.get(arg.name), torch.Tensor)]


def _is_shape_query(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target in _SHAPE_QUERIES) or (
        node.op == "call_function"
        and node.target is getattr
        and len(node.args) > 1
        and node.args[1] == "shape"
    )


def _follow(
    layer: Layer,
    layers: Mapping[str, Layer],
    values: Mapping[str, object],
    reaches_layer: set,
    graph_module: fx.GraphModule,
) -> Link | None:
    """Walk from ``layer``'s output to the next prunable layer; ``None`` when the output reaches
    no other layer (the layer is final)."""
    link = Link(layer.name, "", 1)
    node = layer.node
    layer_by_node = {other.node: other for other in layers.values()}
    while node in reaches_layer:
        users = [user for user in node.users if not _is_shape_query(user)]
        combining = [user for user in users if len(_tensor_inputs(user, values)) > 1]
        if len(users) != 1 and combining:
            raise ValueError(
                f"skip connection at {_describe(combining[0], graph_module)}: it reads the output "
                f"of {_describe(node, graph_module)}, after layer {layer.name!r}, which also feeds "
                f"{len(users) - 1} other operation(s); structured pruning through residual adds "
                "and concatenations is not supported"
            )
        if len(users) != 1:
            raise ValueError(
                f"the output of {_describe(node, graph_module)}, after layer {layer.name!r}, "
                f"feeds {len(users)} operations ({', '.join(user.name for user in users)}): a "
                "skip connection or a branch; structured pruning through residual adds, "
                "concatenations and branches is not supported"
            )
        (user,) = users
        tensors = _tensor_inputs(user, values)
        if len(tensors) > 1:
            raise ValueError(
                f"skip connection at {_describe(user, graph_module)}, after layer "
                f"{layer.name!r}: it combines {len(tensors)} tensors "
                f"({', '.join(tensor.name for tensor in tensors)}); structured pruning through "
                "residual adds and concatenations is not supported"
            )
        if user in layer_by_node:
            link.consumer = layer_by_node[user].name
            return link
        _step(user, link, layer.name, values, graph_module)
        node = user
    return None


def _step(
    node: fx.Node,
    link: Link,
    producer: str,
    values: Mapping[str, object],
    graph_module: fx.GraphModule,
) -> None:
    """Check that ``node`` keeps units apart, and record a flatten or a batch norm in ``link``."""
    where = (
        f"{_describe(node, graph_module)}, between layer {producer!r} and a later prunable layer"
    )
    source, result = values[_tensor_inputs(node, values)[0].name], values[node.name]
    if not isinstance(result, torch.Tensor):
        raise ValueError(f"{where}, does not return a tensor; structured pruning cannot follow it")
    module = graph_module.get_submodule(node.target) if node.op == "call_module" else None
    reshape = (
        isinstance(module, nn.Flatten)
        or (node.op == "call_function" and node.target is torch.flatten)
        or (node.op == "call_method" and node.target in _RESHAPE_METHODS)
    )
    if reshape:
        _check_flatten(node, source, result, where)
        if source.dim() > 2:
            link.features_per_unit = math.prod(source.shape[2:])
        return
    channelwise = (
        isinstance(module, _CHANNELWISE_MODULES + _BATCH_NORMS)
        or (isinstance(module, nn.PReLU) and module.num_parameters == 1)
        or (node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS | _ARITHMETIC)
        or (node.op == "call_method" and node.target in _CHANNELWISE_METHODS)
    )
    if not channelwise:
        raise ValueError(
            f"{where}, may mix units; structured pruning can only follow elementwise "
            "activations, dropout, pooling, batch norm and a flatten between prunable layers"
        )
    if result.shape[:2] != source.shape[:2] or result.dim() != source.dim():
        raise ValueError(
            f"{where}, changes the shape {tuple(source.shape)} to {tuple(result.shape)}; an "
            "operation between prunable layers must keep (batch, units)"
        )
    if isinstance(module, _BATCH_NORMS):
        # Before a flatten (or after one with a single position) a channel is a producer unit.
        norms = link.feature_norms if link.features_per_unit > 1 else link.unit_norms
        norms.append(node.target)


def _check_flatten(node: fx.Node, source: torch.Tensor, result: torch.Tensor, where: str) -> None:
    flattened = (source.shape[0], math.prod(source.shape[1:]))
    if tuple(result.shape) != flattened:
        raise ValueError(
            f"{where}, reshapes {tuple(source.shape)} to {tuple(result.shape)}; between prunable "
            "layers only flattening (batch, channels, ...) to (batch, features) is supported"
        )
    if node.op == "call_method" and node.target in ("view", "reshape"):
        sizes = list(node.args[1:]) or list(node.kwargs.get("size", node.kwargs.get("shape", ())))
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = list(sizes[0])
        if not sizes or sizes[-1] != -1:
            raise ValueError(
                f"{where}, reshapes to a fixed number of features, which changes when units are "
                "removed; write x.flatten(1) or x.view(x.size(0), -1)"
            )


def _check_group_masks(group_masks: Mapping[str, torch.Tensor], layers: Mapping[str, Layer]):
    if not isinstance(group_masks, Mapping):
        raise ValueError(
            f"group_masks must be a mapping from layer names to bool tensors, got {group_masks!r}"
        )
    for name, mask in group_masks.items():
        if name not in layers:
            raise ValueError(
                f"there is a group mask for {name!r}, which is not a prunable layer the network "
                f"calls (Linear or Conv1d/2d/3d with groups=1); those are "
                f"{', '.join(map(repr, layers))}"
            )
        layer = layers[name]
        linear = isinstance(layer.module, nn.Linear)
        size = layer.num_inputs if linear else layer.num_outputs
        groups = "input features" if linear else "output channels"
        check_mask(
            f"the group mask of {name!r}",
            mask,
            size,
            f"one entry per group, the layer's {size} {groups}",
        )
        if not mask.any():
            raise ValueError(
                f"the group mask of {name!r} removes all its {size} {groups}: the network's output "
                "would no longer depend on its input"
            )


def _probabilities(name: str, module: nn.Module, given) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(given, tuple) or len(given) != 2:
        raise ValueError(
            f"the keep probabilities of {name!r} must be a pair (inputs, outputs), got {given!r}"
        )
    linear = isinstance(module, nn.Linear)
    sizes = (
        (module.in_features, module.out_features)
        if linear
        else (module.in_channels, module.out_channels)
    )
    result = []
    for side, probabilities, size in zip(("input", "output"), given, sizes, strict=True):
        if probabilities is None:
            result.append(torch.ones(size, dtype=torch.float64))
            continue
        if not isinstance(probabilities, torch.Tensor) or probabilities.shape != (size,):
            raise ValueError(
                f"the {side} keep probabilities of {name!r} must be a tensor of shape ({size},), "
                f"got {getattr(probabilities, 'shape', probabilities)!r}"
            )
        probabilities = probabilities.detach().to("cpu", torch.float64)
        if not ((probabilities >= 0) & (probabilities <= 1)).all():
            raise ValueError(
                f"the {side} keep probabilities of {name!r} must lie in [0, 1] (no NaN)"
            )
        result.append(probabilities)
    return result[0], result[1]
