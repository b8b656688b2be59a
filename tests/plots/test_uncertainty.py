"""Histograms and CDFs of an uncertainty score in and out of distribution, with the AUROC."""

import numpy as np
import pytest
import torch

from pyro_bnn.metrics import auroc
from pyro_bnn.plots import entropy_histograms

from .common import scores


def test_one_score_draws_densities_and_cdfs_with_the_auroc():
    inside, outside = scores()
    fig = entropy_histograms(inside, outside, num_bins=12)
    top, bottom = fig.axes
    assert top.get_title() == f"AUROC {auroc(inside, outside):.3f}"
    # Two density histograms on shared bins, each integrating to one.
    patches = top.patches
    assert len(patches) == 24
    for histogram in (patches[:12], patches[12:]):
        assert sum(p.get_height() * p.get_width() for p in histogram) == pytest.approx(1.0)
    assert [p.get_x() for p in patches[:12]] == [p.get_x() for p in patches[12:]]
    low = min(inside.min(), outside.min()).item()
    high = max(inside.max(), outside.max()).item()
    assert patches[0].get_x() == pytest.approx(low)
    assert patches[11].get_x() + patches[11].get_width() == pytest.approx(high)
    # Two empirical CDFs rising to one at the largest score of each.
    in_cdf, out_cdf = bottom.get_lines()
    for line, values in ((in_cdf, inside), (out_cdf, outside)):
        assert np.nanmax(line.get_ydata()) == 1.0
        assert np.nanmax(line.get_xdata()) == pytest.approx(values.max().item())
    assert top.get_xlabel() == bottom.get_xlabel() == "predictive entropy"
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert labels == ["in distribution", "out of distribution"]


def test_several_methods_draw_a_column_each():
    inside, outside = scores()
    methods_in = {"entropy": inside, "mutual information": inside / 2, "constant": torch.ones(5)}
    methods_out = {"constant": torch.ones(7), "mutual information": outside / 2, "entropy": outside}
    fig = entropy_histograms(methods_in, methods_out, score_name="score")
    assert len(fig.axes) == 6
    titles = [axis.get_title() for axis in fig.axes[:3]]
    assert titles == [
        f"entropy\nAUROC {auroc(inside, outside):.3f}",
        f"mutual information\nAUROC {auroc(inside, outside):.3f}",
        "constant\nAUROC 0.500",
    ]
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (2, 3)


def test_arrays_are_accepted():
    fig = entropy_histograms(np.array([0.1, 0.2]), [0.5, 0.9])
    assert fig.axes[0].get_title() == "AUROC 1.000"


@pytest.mark.parametrize(
    "in_scores, out_scores, kwargs, message",
    [
        (
            torch.rand(3, 2),
            torch.rand(3),
            {},
            r"in_scores must be one-dimensional \(N,\), got shape \(3, 2\)",
        ),
        (torch.rand(3), torch.zeros(0), {}, "out_scores is empty"),
        (torch.tensor([0.1, float("nan")]), torch.rand(3), {}, "in_scores contains NaN"),
        (torch.rand(3), torch.tensor([float("inf")]), {}, "out_scores contains infinite values"),
        ({"a": torch.rand(3)}, torch.rand(3), {}, "both be tensors or both be mappings"),
        (
            {"a": torch.rand(3)},
            {"b": torch.rand(3)},
            {},
            "must have the same methods: 'a' against 'b'",
        ),
        ({}, {}, {}, "in_scores is an empty mapping"),
        (
            {"a": torch.rand(3)},
            {"a": torch.rand(2, 2)},
            {},
            r"out_scores\['a'\] must be one-dimensional",
        ),
        (
            torch.rand(3),
            torch.rand(3),
            {"num_bins": 0},
            "num_bins must be a positive integer, got 0",
        ),
        (torch.rand(3), torch.rand(3), {"num_bins": 2.5}, "num_bins must be a positive integer"),
    ],
)
def test_bad_inputs_are_refused(in_scores, out_scores, kwargs, message):
    with pytest.raises(ValueError, match=message):
        entropy_histograms(in_scores, out_scores, **kwargs)
