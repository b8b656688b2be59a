"""ArviZ's own plots: through arviz_compat only, with a clear error when unavailable.

arviz-plots 0.8 (Python 3.11) does not import with matplotlib 3.11, so a fake module stands
for it here; the real one is exercised where it imports.
"""

import os
import types

import numpy as np
import pytest
from matplotlib.figure import Figure

from pyro_bnn.diagnostics import arviz_compat
from pyro_bnn.plots import arviz_plot

from .common import assert_saved_alone


class FakePlotCollection:
    """What arviz-plots' functions return: ``viz`` holds the figure as a 0-d object array
    (``viz["figure"]``; ``viz["chart"]`` before 0.6)."""

    def __init__(self, figure, key="figure"):
        self.viz = {key: np.array(figure, dtype=object)}


class FakeCurrentPlotCollection(FakePlotCollection):
    def __init__(self, figure):
        super().__init__(None, key="other")
        self.figure = figure

    def get_viz(self, name):
        assert name == "figure"
        return self.figure


def fake_arviz_plots(calls, result=None):
    module = types.ModuleType("arviz_plots")
    module.__version__ = "9.9"

    def plot_dist(data, **kwargs):
        calls.append(("plot_dist", data, kwargs))
        figure = Figure()
        figure.subplots().plot([0, 1], [1, 0])
        return FakePlotCollection(figure) if result is None else result(figure)

    def plot_forest(data, **kwargs):
        calls.append(("plot_forest", data, kwargs))
        return FakePlotCollection(Figure(), key="chart")

    module.plot_dist, module.plot_forest = plot_dist, plot_forest
    module.PlotCollection, module.style = FakePlotCollection, types.SimpleNamespace()
    module.__all__ = ["PlotCollection", "plot_dist", "plot_forest", "style"]
    return module


@pytest.fixture
def calls(monkeypatch):
    calls = []
    monkeypatch.setattr(arviz_compat, "arviz_plots", lambda: fake_arviz_plots(calls))
    return calls


def test_missing_arviz_plots_says_how_to_install(monkeypatch):
    monkeypatch.setattr(arviz_compat, "arviz_plots", lambda: None)
    with pytest.raises(ImportError) as error:
        arviz_plot("plot_dist", {"posterior": {}})
    message = str(error.value)
    assert "'arviz-plots'" in message and "not installed or does not import" in message
    assert "Python >= 3.12" in message and "pip install 'pyro-bnn[diagnostics]'" in message


def test_returns_the_figure_of_the_plot_collection(calls, tmp_path):
    data = object()
    path = tmp_path / "dist.png"
    fig = arviz_plot("plot_dist", data, path=path, var_names=["w"])
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert calls == [("plot_dist", data, {"var_names": ["w"], "backend": "matplotlib"})]
    assert_saved_alone(path)


def test_kind_without_its_prefix_and_the_old_chart_key(calls):
    assert isinstance(arviz_plot("forest", object()), Figure)
    assert calls[0][0] == "plot_forest"


@pytest.mark.parametrize(
    "result",
    [
        lambda figure: figure,
        lambda figure: figure.axes[0],
        lambda figure: FakeCurrentPlotCollection(figure),
        lambda figure: FakePlotCollection(figure.subfigures(1, 2)[0]),
    ],
    ids=["figure", "axes", "get_viz", "subfigure"],
)
def test_figure_found_in_any_result(monkeypatch, result):
    calls = []
    monkeypatch.setattr(arviz_compat, "arviz_plots", lambda: fake_arviz_plots(calls, result))
    fig = arviz_plot("plot_dist", object())
    assert isinstance(fig, Figure) and fig.figure is fig


def test_a_result_without_a_figure_is_an_error(monkeypatch):
    monkeypatch.setattr(
        arviz_compat, "arviz_plots", lambda: fake_arviz_plots([], lambda figure: "html")
    )
    with pytest.raises(TypeError, match="plot_dist returned a str holding no matplotlib figure"):
        arviz_plot("plot_dist", object())


@pytest.mark.parametrize(
    "kind, data, kwargs, message",
    [
        (
            "plot_trace",
            object(),
            {},
            "unknown kind 'plot_trace': arviz_plots 9.9 has plot_dist, plot_forest$",
        ),
        ("style", object(), {}, "unknown kind 'style'"),
        ("", object(), {}, "kind must be the name of an ArviZ plot"),
        (None, object(), {}, "kind must be the name of an ArviZ plot"),
        ("plot_dist", None, {}, "data is None"),
        ("plot_dist", object(), {"backend": "bokeh"}, "backend must be 'matplotlib', got 'bokeh'"),
        ("plot_dist", object(), {"path": "figure.nope"}, "cannot write the format 'nope'"),
    ],
)
def test_bad_inputs_are_refused(calls, tmp_path, monkeypatch, kind, data, kwargs, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        arviz_plot(kind, data, **kwargs)
    assert calls == [] and not os.listdir(tmp_path)


@pytest.mark.skipif(arviz_compat.arviz_plots() is None, reason="arviz-plots does not import here")
def test_real_plot_dist():  # pragma: no cover - needs a working arviz-plots
    base = arviz_compat.arviz_base()
    data = base.from_dict({"posterior": {"w": np.random.default_rng(0).normal(size=(2, 50))}})
    assert isinstance(arviz_plot("plot_dist", data), Figure)
