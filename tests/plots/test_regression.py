"""The posterior predictive of a 1-D regression: mean, nested bands, data and truth."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from pyro_bnn.plots import predictive_bands

# Unsorted on purpose: the plot draws in the order of x.
X = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])
MEAN = X.sin()
STD = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.05])
ORDER = X.argsort()


def band_bounds(collection):
    """The lower and upper curves of a ``fill_between`` band, as ``{x: y}`` point sets."""
    vertices = collection.get_paths()[0].vertices
    return {(round(x, 6), round(y, 6)) for x, y in vertices}


def points(x, y):
    return {(round(a, 6), round(b, 6)) for a, b in zip(x.tolist(), y.tolist(), strict=True)}


def test_band_is_the_mean_plus_minus_k_std():
    fig = predictive_bands(X, MEAN, STD, num_std=2)
    (axis,) = fig.axes
    (band,) = axis.collections
    assert band.get_label() == "mean ± 2 std"
    expected = points(X, MEAN + 2 * STD) | points(X, MEAN - 2 * STD)
    assert expected <= band_bounds(band)
    (mean,) = axis.get_lines()
    assert list(mean.get_xdata()) == X[ORDER].tolist()
    assert list(mean.get_ydata()) == pytest.approx(MEAN[ORDER].double().tolist())


def test_several_multiples_draw_nested_bands_widest_first():
    axis = predictive_bands(X, MEAN, STD, num_std=(1, 3, 2)).axes[0]
    labels = [band.get_label() for band in axis.collections]
    assert labels == ["mean ± 3 std", "mean ± 2 std", "mean ± 1 std"]
    colours = [band.get_facecolor()[0] for band in axis.collections]
    assert colours[0][0] > colours[1][0] > colours[2][0]  # darker inwards
    assert points(X, MEAN + STD) <= band_bounds(axis.collections[2])


def test_given_intervals_are_labelled_by_probability():
    q25, q75, q05, q95 = MEAN - 0.1, MEAN + 0.1, MEAN - 0.5, MEAN + 0.5
    axis = predictive_bands(X, MEAN, intervals={0.5: (q25, q75), 0.9: (q05, q95)}).axes[0]
    assert [band.get_label() for band in axis.collections] == ["90% interval", "50% interval"]
    assert points(X, q95) | points(X, q05) <= band_bounds(axis.collections[0])
    axis = predictive_bands(X, MEAN, intervals=(q25, q75)).axes[0]
    assert [band.get_label() for band in axis.collections] == ["interval"]
    axis = predictive_bands(X, MEAN, intervals={"quartiles": (q25, q75)}).axes[0]
    assert [band.get_label() for band in axis.collections] == ["quartiles"]


def test_training_points_and_the_truth():
    x_train, y_train = torch.tensor([0.2, 1.5]), torch.tensor([0.3, 0.9])
    seen = []

    def truth(x):
        seen.append(x)
        return x.sin()

    axis = predictive_bands(X, MEAN, STD, x_train=x_train, y_train=y_train, truth=truth).axes[0]
    _, dashed = axis.get_lines()
    assert dashed.get_linestyle() == "--"
    assert seen[0].tolist() == X[ORDER].tolist()  # called once, with the sorted inputs
    assert list(dashed.get_ydata()) == pytest.approx(X[ORDER].sin().tolist())
    (dots,) = [c for c in axis.collections if c.get_label() == "training data"]
    assert np.allclose(dots.get_offsets(), [[0.2, 0.3], [1.5, 0.9]])
    # The truth as values at the (unsorted) inputs is sorted with them.
    axis = predictive_bands(X, MEAN, STD, truth=X.cos()).axes[0]
    assert list(axis.get_lines()[1].get_ydata()) == pytest.approx(X[ORDER].cos().tolist())


def test_draws_into_a_given_axes():
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert predictive_bands(X.numpy(), MEAN.numpy(), STD.tolist(), ax=axes[1]) is fig
    assert axes[1].collections and not axes[0].has_data()


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((X, MEAN[:4], STD), {}, "mean has 4 entries but x has 5; they must match"),
        ((X[:, None], MEAN, STD), {}, r"x must be one-dimensional \(N,\), got shape \(5, 1\)"),
        ((torch.zeros(0), torch.zeros(0), torch.zeros(0)), {}, "x is empty"),
        ((X, torch.full((5,), float("nan")), STD), {}, r"mean contains NaN \(first at index 0\)"),
        ((X, MEAN, -STD), {}, r"std must be non-negative, but std\[0\] = -0.1"),
        ((X, MEAN), {}, "give either std .* or intervals .*got neither"),
        ((X, MEAN, STD), {"intervals": (MEAN, MEAN)}, "give either std .* not both"),
        ((X, MEAN, STD), {"num_std": 0}, "num_std must be positive, got 0"),
        ((X, MEAN, STD), {"num_std": (1, float("nan"))}, r"num_std\[1\] must be finite"),
        ((X, MEAN, STD), {"num_std": ()}, "num_std is empty"),
        (
            (X, MEAN),
            {"intervals": {0.9: (MEAN + 1, MEAN)}},
            r"intervals\[0.9\]: the lower bound exceeds the upper bound at 5 of 5 points "
            r"\(first at x = 0.5\)",
        ),
        (
            (X, MEAN),
            {"intervals": {1.5: (MEAN, MEAN)}},
            r"probabilities in \(0, 1\) or labels \(strings\), got 1.5",
        ),
        (
            (X, MEAN),
            {"intervals": {0.9: MEAN}},
            r"intervals\[0.9\] must be a pair \(lower, upper\)",
        ),
        (
            (X, MEAN),
            {"intervals": {0.9: (MEAN, MEAN[:3])}},
            r"intervals\[0.9\]'s upper bound has 3 entries but x has 5",
        ),
        ((X, MEAN), {"intervals": {}}, "intervals is an empty mapping"),
        ((X, MEAN, STD), {"x_train": X}, "give x_train and y_train together"),
        (
            (X, MEAN, STD),
            {"x_train": X, "y_train": MEAN[:2]},
            "y_train has 2 entries but x_train has 5",
        ),
        ((X, MEAN, STD), {"truth": MEAN[:2]}, "truth has 2 entries but x has 5"),
        ((X, MEAN, STD), {"truth": lambda x: x[:, None]}, r"truth\(x\) must be one-dimensional"),
        ((X, MEAN, STD), {"ax": 1}, "ax must be a matplotlib Axes or None, got int"),
    ],
)
def test_bad_inputs_are_refused(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predictive_bands(*args, **kwargs)
