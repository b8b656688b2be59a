"""From a trained Bayesian network to a smaller deterministic one (thesis Sec. 6.4, Table 9).

:func:`compress` applies each layer's pruning rule (:mod:`~pyro_bnn.compression.rules`), follows
the removed groups to the neighbouring layers (:func:`~pyro_bnn.compression.structure.cascade`),
sets the test-time weights to the masked posterior mean, chooses each layer's bit precision from
the marginal posterior variances (Eq. 93-94) and counts the three compression rates of the
thesis's Table 9.  The result gives the deterministic networks of the three scenarios (full
precision, each layer rounded to its precision, K-means weight sharing with optionally trained
centres) and the exported network with the removed neurons and channels physically gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from pyro_bnn.models import BayesianNetwork
from pyro_bnn.models.structured import GroupPosterior

from .export import export, masked_network
from .precision import (
    DEFAULT_NUM_CLUSTERS,
    CompressionRatios,
    LayerPrecision,
    compression_ratios,
    layer_precision,
    round_to_precision,
)
from .rules import layer_posteriors
from .structure import PRUNABLE_LAYERS, UnitMasks, cascade, layer_flops
from .weight_sharing import Codebook, train_codebooks

#: The scenarios of Table 9, the weights each one uses.
SCENARIOS = ("pruning", "fast_prediction", "maximum_compression")


@dataclass
class CompressedNetwork:
    """A pruned Bayesian network: the decisions, the bit widths and the three compression rates.

    :ivar posteriors: each layer's pruning decision (:class:`GroupPosterior`).
    :ivar unit_masks: the units each layer keeps after the cascade.
    :ivar precisions: each layer's bit precision (sign, exponent, mantissa).
    :ivar ratios: the compression rates of Table 9.
    :ivar network: the masked posterior-mean network (full size, zeros where pruned), the
        reference the smaller networks are compared with.
    :ivar input_shape: the shape of one input.
    :ivar num_clusters: K of the maximum-compression scenario's weight sharing.
    :ivar codebook_epochs: epochs of centre training the codebooks had
        (:meth:`train_codebooks`; 0: K-means only).
    """

    posteriors: dict[str, GroupPosterior]
    unit_masks: dict[str, UnitMasks]
    precisions: dict[str, LayerPrecision]
    ratios: CompressionRatios
    network: nn.Module
    input_shape: tuple[int, ...]
    num_clusters: int = DEFAULT_NUM_CLUSTERS
    codebook_epochs: int = 0
    _codebooks: dict[str, Codebook] | None = field(default=None, repr=False)

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The masked test-time weights ``{layer: weight}``, zero outside the kept units."""
        result = {}
        for name, masks in self.unit_masks.items():
            weight = self.posteriors[name].masked_mean
            result[name] = weight * _kept_mask(weight, masks)
        return result

    def scenario_weights(self, scenario: str) -> dict[str, torch.Tensor]:
        """The weights of a Table 9 scenario: ``"pruning"`` (full precision),
        ``"fast_prediction"`` (each layer rounded to its mantissa bits) or
        ``"maximum_compression"`` (each layer's kept weights shared through its
        :meth:`codebooks`)."""
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
        if scenario == "maximum_compression":
            return {name: codebook.weight() for name, codebook in self.codebooks().items()}
        weights = self.weights
        if scenario == "pruning":
            return weights
        return {
            name: round_to_precision(weight, self.precisions[name].mantissa) * (weight != 0)
            for name, weight in weights.items()
        }

    def codebooks(self) -> dict[str, Codebook]:
        """Each layer's weight sharing for maximum compression: K-means with ``num_clusters``
        centres over its kept non-zero weights (computed on first use), with trained centres
        after :meth:`train_codebooks`."""
        if self._codebooks is None:
            self._codebooks = {
                name: Codebook.kmeans(
                    weight,
                    self.num_clusters,
                    mask=_kept_mask(weight, self.unit_masks[name]) & (weight != 0),
                )
                for name, weight in self.weights.items()
            }
        return self._codebooks

    def train_codebooks(self, data: Iterable, *, epochs: int = 1, **options) -> list[dict]:
        """Train the centres of the :meth:`codebooks` on ``data`` (Deep Compression's centre
        training, :func:`~pyro_bnn.compression.weight_sharing.train_codebooks`), in place: the
        maximum-compression scenario then uses the trained centres.  Its storage is unchanged
        (the same assignments and number of centres).

        :param data: batches ``(inputs, labels)`` of the training set.
        :param epochs: passes over ``data``; more calls continue from the trained centres.
        :param options: ``lr``, ``seed``, ``progress``, ``scheduler`` of
            :func:`~pyro_bnn.compression.weight_sharing.train_codebooks`.
        :returns: the per-epoch training records.
        """
        trained, history = train_codebooks(
            self.network, self.codebooks(), data, epochs=epochs, **options
        )
        self._codebooks = trained
        self.codebook_epochs += epochs
        return history

    def scenario_network(self, scenario: str) -> nn.Module:
        """The full-size deterministic network of a scenario (evaluation mode)."""
        return masked_network(self.network, self.scenario_weights(scenario))

    def export(self, scenario: str = "pruning") -> nn.Module:
        """A plain torch module with the removed units physically gone, computing what
        :meth:`scenario_network` computes (see :func:`~pyro_bnn.compression.export.export`)."""
        return export(
            self.network, self.scenario_weights(scenario), self.unit_masks,
            input_shape=self.input_shape,
        )  # fmt: skip

    def architecture(self) -> str:
        """The pruned architecture as the thesis's Table 8 counts it: the input neurons of each
        linear layer and the output channels of each convolution, ``"278-98-13"``."""
        counts = []
        for name, masks in self.unit_masks.items():
            linear = self.posteriors[name].group_dim == 1
            counts.append(int((masks.inputs if linear else masks.outputs).sum()))
        return "-".join(map(str, counts))

    def original_architecture(self) -> str:
        """The same count before pruning, ``"784-300-100"``."""
        counts = []
        for name, masks in self.unit_masks.items():
            linear = self.posteriors[name].group_dim == 1
            counts.append((masks.inputs if linear else masks.outputs).numel())
        return "-".join(map(str, counts))

    def bits(self) -> str:
        """The bits per weight of each layer, ``"8-9-14"`` (Table 8)."""
        return "-".join(str(precision.total) for precision in self.precisions.values())

    def flops(self) -> tuple[float, float]:
        """Floating point operations for one input: ``(original, pruned)``."""
        original = sum(layer_flops(self.network, self.input_shape).values())
        pruned = sum(layer_flops(self.network, self.input_shape, self.unit_masks).values())
        return original, pruned

    def as_dict(self) -> dict:
        original, pruned = self.flops()
        return {
            "architecture": self.architecture(),
            "original_architecture": self.original_architecture(),
            "bits": self.bits(),
            "precisions": {
                name: {"sign": p.sign, "exponent": p.exponent, "mantissa": p.mantissa}
                for name, p in self.precisions.items()
            },
            "ratios": self.ratios.as_dict(),
            "codebook_epochs": self.codebook_epochs,
            "flops": {"original": original, "pruned": pruned},
        }

    def __str__(self) -> str:
        return (
            f"architecture {self.original_architecture()} -> {self.architecture()}, "
            f"bits {self.bits()}\n{self.ratios}"
        )


def _kept_mask(weight: torch.Tensor, masks: UnitMasks) -> torch.Tensor:
    extra = [1] * (weight.dim() - 2)
    return masks.outputs.reshape(-1, 1, *extra) & masks.inputs.reshape(1, -1, *extra)


def compress(
    model: BayesianNetwork,
    guide,
    input_shape: Sequence[int] | None = None,
    thresholds: float | Mapping[str, float] | None = None,
    *,
    exponent_bits: int | None = None,
    num_clusters: int = DEFAULT_NUM_CLUSTERS,
) -> CompressedNetwork:
    """Prune, cascade and quantize a trained :class:`~pyro_bnn.models.BayesianNetwork`.

    :param model: the trained model; every layer with a prior must be prunable (linear or
        convolutional).
    :param guide: its trained guide (:class:`~pyro_bnn.guides.AutoSiteGuide` or a subclass).
    :param input_shape: the shape of one input; default the model's ``input_shape``.
    :param thresholds: the pruning thresholds (see
        :func:`~pyro_bnn.compression.rules.layer_posteriors`); default each method's.
    :param exponent_bits: a fixed number of exponent bits for every layer (3 in the thesis's
        text); default computed per layer from its largest weight, as the reference code does.
    :param num_clusters: K of the K-means weight sharing of the maximum-compression scenario.
    """
    if input_shape is None:
        if model.input_shape is None:
            raise ValueError(
                "compress needs the shape of one input: pass input_shape, or build the "
                "BayesianNetwork with input_shape"
            )
        input_shape = model.input_shape
    input_shape = tuple(input_shape)
    posteriors = layer_posteriors(model, guide, thresholds)
    layers = {
        name: module
        for name, module in model.architecture.named_modules()
        if isinstance(module, PRUNABLE_LAYERS)
    }
    unpruned = sorted(set(layers) - set(posteriors))
    if unpruned:
        raise ValueError(
            f"the layers {', '.join(unpruned)} have no prior, so no pruning rule; compress needs "
            "every linear and convolutional layer to be random"
        )
    weights = {f"{name}.weight": post.masked_mean for name, post in posteriors.items()}
    network = model.deterministic_network(weights)
    group_masks = {name: post.keep for name, post in posteriors.items()}
    unit_masks = cascade(network, group_masks, input_shape)
    precisions = {}
    for name, masks in unit_masks.items():
        post = posteriors[name]
        kept = _kept_mask(post.mean, masks) & post.mask
        precisions[name] = layer_precision(
            post.mean[kept], post.variance[kept], exponent=exponent_bits
        )
    masked = {name: posteriors[name].masked_mean for name in unit_masks}
    ratios = compression_ratios(masked, unit_masks, precisions, num_clusters=num_clusters)
    return CompressedNetwork(
        posteriors=posteriors,
        unit_masks=unit_masks,
        precisions=precisions,
        ratios=ratios,
        network=network,
        input_shape=input_shape,
        num_clusters=num_clusters,
    )


__all__ = ["SCENARIOS", "CompressedNetwork", "compress"]
