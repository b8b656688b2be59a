"""What every plot shares: a returned figure built without pyplot, an atomic save to ``path``
and a check of ``path`` before anything is drawn."""

import inspect
import os

import pytest
import torch
from matplotlib.figure import Figure

from pyro_bnn import plots
from pyro_bnn.plots._figure import _write_figure

from .common import assert_saved_alone, classification, history, scores

X = torch.linspace(-1, 1, 9)

# Every plot whose inputs are quick to make, called with a path (the compression figures of a
# compressed network are tested in test_compression, arviz_plot in test_arviz).
CALLS = {
    "training_curves": lambda path: plots.training_curves(history(), path),
    "log_alpha_histogram": lambda path: plots.log_alpha_histogram(
        {"fc": torch.randn(4, 3)}, 3.0, path
    ),
    "signal_to_noise_histogram": lambda path: plots.signal_to_noise_histogram(
        {"fc": torch.rand(4, 3)}, 0.5, path
    ),
    "weight_masks": lambda path: plots.weight_masks({"fc": torch.rand(4, 3) > 0.5}, path),
    "reliability_diagram": lambda path: plots.reliability_diagram(*classification(), path=path),
    "entropy_histograms": lambda path: plots.entropy_histograms(*scores(), path),
    "predictive_bands": lambda path: plots.predictive_bands(X, X.sin(), 0.1 + 0 * X, path),
}


def test_every_public_plot_takes_a_path_and_is_documented():
    assert set(CALLS) | {"group_statistics", "pruned_architecture", "arviz_plot"} == set(
        plots.__all__
    )
    for name in plots.__all__:
        function = getattr(plots, name)
        assert "path" in inspect.signature(function).parameters, name
        assert ":returns:" in function.__doc__ and ":param" in function.__doc__, name
        assert name in plots.__doc__, name


@pytest.mark.parametrize("name", sorted(CALLS))
def test_returns_the_figure_and_saves_it_alone(name, tmp_path):
    path = tmp_path / f"{name}.png"
    fig = CALLS[name](path)
    assert isinstance(fig, Figure)
    assert fig.canvas.manager is None  # not a pyplot figure
    assert_saved_alone(path)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_without_a_path_nothing_is_written(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(CALLS[name](None), Figure)
    assert not os.listdir(tmp_path)


def test_the_suffix_names_the_format(tmp_path):
    CALLS["entropy_histograms"](tmp_path / "scores.svg")
    assert b"<svg" in (tmp_path / "scores.svg").read_bytes()[:400]
    CALLS["entropy_histograms"](tmp_path / "scores")  # no suffix: PNG
    assert (tmp_path / "scores").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "path, message",
    [
        ("missing-directory/figure.png", "directory .* does not exist"),
        ("figure.unknown-format", "cannot write the format 'unknown-format'; use one of"),
        (3, "path must be a string"),
    ],
)
@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_bad_path_is_refused_before_drawing(name, path, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        CALLS[name](path)
    assert not os.listdir(tmp_path)


def test_a_failed_save_keeps_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "figure.png"
    path.write_bytes(b"previous")
    fig = CALLS["entropy_histograms"](None)

    def fail(self, filename, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        _write_figure(fig, path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["figure.png"]
