"""The compression figures: per-weight statistics (log alpha, signal-to-noise) and masks, one
histogram per layer of a structured method's group statistic, and the pruned architecture with
the bits per layer."""

import math
import os

import pytest
import torch
from torch import nn

from pyro_bnn.compression import compress
from pyro_bnn.guides import AutoSiteGuide
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood
from pyro_bnn.models.structured import structured_prior
from pyro_bnn.plots import (
    group_statistics,
    log_alpha_histogram,
    pruned_architecture,
    signal_to_noise_histogram,
    weight_masks,
)

INPUT_SHAPE = (1, 8, 8)
LAYERS = ("0", "3", "5")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_network() -> nn.Sequential:
    # conv (4 output channels) - flatten - linear (144 inputs) - linear (6 inputs)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 6), nn.ReLU(),
        nn.Linear(6, 3),
    )  # fmt: skip


def untrained(method: str):
    """A structured model and its guide, called once so that the guide has its parameters."""
    model = BayesianNetwork(
        tiny_network(), CategoricalLikelihood(10, 3), prior=structured_prior(method),
        input_shape=INPUT_SHAPE,
    )  # fmt: skip
    guide = AutoSiteGuide(model)
    guide(torch.rand(10, *INPUT_SHAPE), torch.randint(0, 3, (10,)))
    return model, guide


def pruned_gnj():
    """A group normal-Jeffreys network with some groups at log alpha = 0, which the default
    threshold (-3) removes: the second half of the groups of layers "0" and "5", every other
    input of layer "3"."""
    model, guide = untrained("group-nj")
    with torch.no_grad():
        for layer in LAYERS:
            loc = guide.get_parameter(f"params.net.{layer}.weight.group_scale.loc_unconstrained")
            log_variance = guide.get_parameter(
                f"params.net.{layer}.weight.group_scale.log_variance_unconstrained"
            )
            removed = slice(1, None, 2) if layer == "3" else slice(len(loc) // 2, None)
            log_variance[removed] = loc[removed].square().log()
    return compress(model, guide)


@pytest.fixture(scope="module")
def compressed():
    return pruned_gnj()


def test_group_statistics_draws_one_histogram_per_layer(compressed, tmp_path):
    path = tmp_path / "group_statistics.png"
    fig = group_statistics(compressed, path, thresholds=-3.0)
    assert len(fig.axes) == len(LAYERS)
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert os.listdir(tmp_path) == ["group_statistics.png"]  # no temporary file left
    for axis, layer in zip(fig.axes, compressed.posteriors, strict=True):
        keep = compressed.posteriors[layer].keep
        assert axis.get_title().startswith(f"{layer}: {int(keep.sum())}/{keep.numel()} kept")
        # The threshold is drawn as a vertical line at -3.
        assert [line.get_xdata()[0] for line in axis.get_lines()] == [-3.0]


def test_group_statistics_titles_count_the_cascade(compressed):
    fig = group_statistics(compressed)
    # The 144 inputs of the linear layer "3" are 4 channels x 36 positions: the rule keeps the
    # 72 even inputs, and removing the last two channels of the convolution leaves 36 of them.
    assert int(compressed.posteriors["3"].keep.sum()) == 72
    assert int(compressed.unit_masks["3"].inputs.sum()) == 36
    assert fig.axes[1].get_title() == "3: 72/144 kept\n(36 after the cascade)"


def test_group_statistics_without_thresholds_draws_the_boundary(compressed):
    fig = group_statistics(compressed)
    for axis, layer in zip(fig.axes, compressed.posteriors, strict=True):
        post = compressed.posteriors[layer]
        (line,) = axis.get_lines()
        boundary = line.get_xdata()[0]
        assert (post.statistic[post.keep] < boundary).all()
        assert (post.statistic[~post.keep] > boundary).all()


def test_group_statistics_takes_thresholds_per_layer(compressed):
    fig = group_statistics(compressed, thresholds={"0": -1.0, "3": -2.0, "5.weight": -4.0})
    assert [axis.get_lines()[0].get_xdata()[0] for axis in fig.axes] == [-1.0, -2.0, -4.0]


@pytest.mark.parametrize(
    "thresholds, message",
    [
        ({"0": -3.0}, "no entry for the layer '3'"),
        ("-3", "must be a number"),
        (True, "number"),
        (float("nan"), "thresholds must be finite"),
        ({"0": 1.0, "3": "x", "5": 1.0}, r"thresholds\['3'\] must be a number"),
    ],
)
def test_group_statistics_refuses_bad_thresholds(compressed, tmp_path, thresholds, message):
    path = tmp_path / "group_statistics.png"
    with pytest.raises(ValueError, match=message):
        group_statistics(compressed, path, thresholds=thresholds)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("method", ["group-horseshoe", "l0", "spike-and-slab"])
def test_group_statistics_of_other_methods(method):
    model, guide = untrained(method)
    compressed = compress(model, guide)
    fig = group_statistics(compressed)
    assert len(fig.axes) == len(LAYERS)
    # Nothing is removed before training: no boundary to draw, every group counted as kept.
    assert all(not axis.get_lines() for axis in fig.axes)
    assert fig.axes[0].get_title() == "0: 4/4 kept"


def test_pruned_architecture_annotates_groups_and_bits(compressed, tmp_path):
    path = tmp_path / "architecture.png"
    fig = pruned_architecture(compressed, path)
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert os.listdir(tmp_path) == ["architecture.png"]
    (axis,) = fig.axes
    kept, original = compressed.architecture().split("-"), compressed.original_architecture()
    heights = [patch.get_height() for patch in axis.patches]
    assert heights == [float(n) for n in original.split("-")] + [float(n) for n in kept]
    notes = [text.get_text() for text in axis.texts]
    for note, layer, count, total in zip(
        notes, compressed.unit_masks, kept, original.split("-"), strict=True
    ):
        assert note.startswith(f"{count}/{total}\n{compressed.precisions[layer].total} bits")
    assert compressed.architecture() in axis.get_title()


def test_a_failed_save_leaves_no_file(compressed, tmp_path):
    path = tmp_path / "figure.png"
    with pytest.raises(ValueError):
        pruned_architecture(compressed, tmp_path / "figure.unknown-format")
    assert not os.listdir(tmp_path)
    assert not path.exists()


# ------------------------------------------------------------------ per-weight statistics

LOG_ALPHA = {
    "fc1": torch.tensor([[-5.0, -4.0, 2.0], [3.0, 4.0, 6.0]]),  # 2 of 6 below 1
    "fc2": torch.tensor([-2.0, 5.0, float("inf"), 0.5]),  # 2 of 4 below 1, one infinite
}


def vertical_lines(axis) -> list[float]:
    return [line.get_xdata()[0] for line in axis.get_lines()]


def test_log_alpha_histogram_titles_the_share_kept():
    fig = log_alpha_histogram(LOG_ALPHA, 1.0)
    first, second = fig.axes
    assert first.get_title() == "fc1\n33.3% kept"
    assert second.get_title() == "fc2\n50.0% kept (1 infinite, not drawn)"
    assert vertical_lines(first) == vertical_lines(second) == [1.0]
    # Every finite value is in a bin.
    assert sum(patch.get_height() for patch in first.patches) == 6
    assert sum(patch.get_height() for patch in second.patches) == 3
    assert first.get_legend().get_texts()[0].get_text() == "threshold 1"


def test_log_alpha_histogram_without_threshold_draws_no_line():
    fig = log_alpha_histogram({"fc": torch.randn(5)}, None)
    assert fig.axes[0].get_lines() == [] and fig.axes[0].get_legend() is None
    assert fig.axes[0].get_title() == "fc"


def test_signal_to_noise_histogram_in_decibels():
    snr = {"fc": torch.tensor([0.0, 0.1, 1.0, 10.0, 100.0])}
    (axis,) = signal_to_noise_histogram(snr, 2.0).axes
    assert vertical_lines(axis) == [pytest.approx(10 * math.log10(2.0))]
    assert axis.get_title() == "fc\n40.0% kept (1 infinite, not drawn)"  # 10 and 100
    low, high = axis.patches[0].get_x(), axis.patches[-1].get_x() + axis.patches[-1].get_width()
    assert (low, high) == (pytest.approx(-10.0), pytest.approx(20.0))
    assert axis.get_legend().get_texts()[0].get_text() == "threshold 2 (3.01 dB)"


def test_signal_to_noise_histogram_in_its_own_units():
    (axis,) = signal_to_noise_histogram(
        {"fc": torch.tensor([0.0, 0.5, 3.0])}, 1.0, decibels=False
    ).axes
    assert vertical_lines(axis) == [1.0]
    assert axis.get_title() == "fc\n33.3% kept"


@pytest.mark.parametrize(
    "plot", [log_alpha_histogram, signal_to_noise_histogram], ids=["log_alpha", "snr"]
)
@pytest.mark.parametrize(
    "values, threshold, message",
    [
        ({}, 1.0, "is an empty mapping"),
        (torch.ones(3), 1.0, "must be a mapping of layer names to tensors, got Tensor"),
        (
            {"fc": torch.tensor([1.0, float("nan")])},
            1.0,
            r"\['fc'\] contains NaN \(first at index 1\)",
        ),
        ({"fc": torch.ones(0, 3)}, 1.0, r"\['fc'\] is empty \(shape \(0, 3\)\)"),
        ({"fc": ["a"]}, 1.0, r"\['fc'\] must be a tensor or an array of numbers"),
        ({"fc": torch.ones(3)}, "1", "threshold must be a number"),
        ({"fc": torch.ones(3)}, float("inf"), "threshold must be finite"),
    ],
)
def test_per_weight_histograms_refuse_bad_inputs(plot, values, threshold, message):
    with pytest.raises(ValueError, match=message):
        plot(values, threshold)


@pytest.mark.parametrize(
    "snr, threshold, message",
    [
        ({"fc": torch.tensor([1.0, -0.5])}, 1.0, r"snr\['fc'\] must be non-negative .* -0.5"),
        ({"fc": torch.ones(3)}, 0.0, "threshold must be positive to be drawn in decibels"),
    ],
)
def test_signal_to_noise_histogram_refuses_bad_inputs(snr, threshold, message):
    with pytest.raises(ValueError, match=message):
        signal_to_noise_histogram(snr, threshold)


def test_weight_masks_draws_each_mask_outputs_by_inputs():
    conv = torch.rand(4, 2, 3, 3) > 0.5
    masks = {"conv": conv, "fc": torch.tensor([[1, 0, 1], [0, 0, 0]])}
    fig = weight_masks(masks)
    first, second = fig.axes
    assert (first.get_images()[0].get_array() == conv.reshape(4, 18).numpy()).all()
    assert first.get_title() == f"conv\n{100 * conv.float().mean().item():.1f}% kept"
    assert second.get_title() == "fc\n33.3% kept"


@pytest.mark.parametrize(
    "masks, message",
    [
        ({}, "masks is an empty mapping"),
        ({"fc": torch.tensor([[0.0, 0.5]])}, r"masks\['fc'\] must hold booleans \(or 0 and 1\)"),
        ({"fc": torch.tensor(True)}, r"masks\['fc'\] must have the weight's shape"),
        ({"fc": torch.zeros(0, 2)}, r"masks\['fc'\] is empty"),
    ],
)
def test_weight_masks_refuses_bad_masks(masks, message):
    with pytest.raises(ValueError, match=message):
        weight_masks(masks)
