"""The reliability diagram: bars of accuracy per confidence bin, the gap, the ECE."""

import pytest
import torch
from matplotlib.figure import Figure

from pyro_bnn.metrics import expected_calibration_error, reliability_curve
from pyro_bnn.plots import reliability_diagram

from .common import classification


def bars(axis, label):
    """The patches of the bar container labelled ``label``."""
    (container,) = [c for c in axis.containers if c.get_label() == label]
    return list(container)


def test_one_model_draws_accuracy_bars_the_gap_and_the_ece():
    probs, labels = classification()
    fig = reliability_diagram(probs, labels, num_bins=10)
    diagram, below = fig.axes
    curve = reliability_curve(probs, labels, num_bins=10)
    occupied = (curve.counts > 0).nonzero().flatten()
    accuracy = bars(diagram, "accuracy")
    assert len(accuracy) == len(occupied)
    assert [p.get_x() for p in accuracy] == pytest.approx((occupied / 10).tolist())
    assert [p.get_width() for p in accuracy] == pytest.approx([0.1] * len(occupied))
    assert [p.get_height() for p in accuracy] == pytest.approx(curve.accuracy[occupied].tolist())
    # The gap runs from each bar's top to the bin's mean confidence.
    gap = bars(diagram, "gap")
    assert [p.get_y() for p in gap] == pytest.approx(curve.accuracy[occupied].tolist())
    assert [p.get_y() + p.get_height() for p in gap] == pytest.approx(
        curve.confidence[occupied].tolist()
    )
    ece = expected_calibration_error(probs, labels, num_bins=10)
    assert diagram.get_title() == f"ECE {ece:.4f} (10 equal-width bins)"
    (diagonal,) = diagram.get_lines()
    assert list(diagonal.get_xdata()) == list(diagonal.get_ydata()) == [0, 1]
    # Below: the share of the examples in each bin.
    (stairs,) = below.patches
    assert stairs.get_data().values.tolist() == pytest.approx((curve.counts / 60).tolist())


def test_adaptive_bins_tile_the_confidences():
    probs, labels = classification(num_examples=90)
    diagram = reliability_diagram(probs, labels, num_bins=5, binning="adaptive").axes[0]
    accuracy = bars(diagram, "accuracy")
    confidence = probs.max(-1).values.sort().values.double()
    rights = [p.get_x() + p.get_width() for p in accuracy]
    assert len(accuracy) == 5
    assert accuracy[0].get_x() == pytest.approx(confidence[0].item())
    assert rights == pytest.approx(confidence[[17, 35, 53, 71, 89]].tolist())  # 18 each
    assert [p.get_x() for p in accuracy[1:]] == pytest.approx(rights[:-1])
    curve = reliability_curve(probs, labels, num_bins=5, binning="adaptive")
    assert [p.get_height() for p in accuracy] == pytest.approx(curve.accuracy.tolist())
    ece = expected_calibration_error(probs, labels, num_bins=5, binning="adaptive")
    assert diagram.get_title() == f"ECE {ece:.4f} (5 adaptive bins)"


def test_tied_confidences_still_draw_a_visible_bar():
    probs = torch.tensor([[0.7, 0.3]] * 4 + [[0.2, 0.8]] * 4)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    diagram = reliability_diagram(probs, labels, num_bins=2, binning="adaptive").axes[0]
    accuracy = bars(diagram, "accuracy")
    assert [p.get_width() for p in accuracy] == pytest.approx([0.01, 0.1])
    assert [p.get_height() for p in accuracy] == pytest.approx([0.75, 0.75])


def test_several_models_draw_a_line_each_with_its_ece():
    probs, labels = classification()
    other, _ = classification(seed=1)
    models = {"sharp": probs, "other": other}
    diagram, below = reliability_diagram(models, labels, num_bins=8).axes
    diagonal, *lines = diagram.get_lines()
    assert [line.get_label() for line in lines] == [
        f"{name} (ECE {expected_calibration_error(p, labels, num_bins=8):.4f})"
        for name, p in models.items()
    ]
    curve = reliability_curve(other, labels, num_bins=8)
    occupied = curve.counts > 0
    assert list(lines[1].get_xdata()) == pytest.approx(curve.confidence[occupied].tolist())
    assert list(lines[1].get_ydata()) == pytest.approx(curve.accuracy[occupied].tolist())
    assert not diagram.containers  # no bars
    assert len(below.patches) == 2
    assert diagram.get_title() == "reliability (8 equal-width bins)"


def test_draws_into_a_given_axes_with_counts_on_the_bars(tmp_path):
    fig = Figure()
    left, right = fig.subplots(1, 2)
    probs, labels = classification()
    assert reliability_diagram(probs, labels, num_bins=4, ax=right) is fig
    assert len(fig.axes) == 2 and not left.has_data()
    curve = reliability_curve(probs, labels, num_bins=4)
    counts = [text.get_text() for text in right.texts]
    assert counts == [str(int(n)) for n in curve.counts if n > 0]


def test_a_single_model_in_a_mapping_is_labelled():
    probs, labels = classification()
    diagram = reliability_diagram({"mine": probs}, labels).axes[0]
    assert bars(diagram, "mine")
    assert diagram.get_title().startswith("ECE ")


@pytest.mark.parametrize(
    "probs, labels, kwargs, message",
    [
        (
            torch.full((4, 2), 0.5),
            torch.zeros(3, dtype=torch.long),
            {},
            r"probs must be \(N, C\) and labels \(N,\), got \(4, 2\) and \(3,\)",
        ),
        (
            torch.tensor([[0.5, float("nan")]]),
            torch.zeros(1, dtype=torch.long),
            {},
            "probs contains NaN",
        ),
        (torch.full((2, 2), 0.4), torch.zeros(2, dtype=torch.long), {}, "must sum to one"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), {}, "hold no examples"),
        (torch.full((2, 2), 0.5), torch.tensor([0, 2]), {}, r"labels must lie in 0..1"),
        (
            torch.full((2, 2), 0.5),
            torch.zeros(2, dtype=torch.long),
            {"num_bins": 0},
            "num_bins must be a positive integer",
        ),
        (
            torch.full((2, 2), 0.5),
            torch.zeros(2, dtype=torch.long),
            {"binning": "quantile"},
            "unknown binning 'quantile'",
        ),
        (
            torch.full((2, 2), 0.5),
            torch.zeros(2, dtype=torch.long),
            {"ax": "left"},
            "ax must be a matplotlib Axes",
        ),
        ({}, torch.zeros(2, dtype=torch.long), {}, "probs is an empty mapping"),
        (
            {"a": torch.full((2, 2), 0.5), "b": torch.full((2, 3), 0.5)},
            torch.zeros(2, dtype=torch.long),
            {},
            r"probs\['b'\]: probs must sum to one",
        ),
        (
            "probabilities",
            torch.zeros(2, dtype=torch.long),
            {},
            "probs must be a tensor or an array of numbers",
        ),
    ],
)
def test_bad_inputs_are_refused(probs, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        reliability_diagram(probs, labels, **kwargs)
