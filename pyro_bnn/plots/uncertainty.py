"""How an uncertainty score separates in-distribution from out-of-distribution inputs."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from matplotlib.figure import Figure

from pyro_bnn.metrics import auroc

from . import _checks
from ._figure import _bin_edges, _check_path, _figure, _finish


def _score_pairs(in_scores, out_scores) -> dict[str | None, tuple[torch.Tensor, torch.Tensor]]:
    """``{method: (in, out)}`` of checked ``(N,)`` scores; the method is ``None`` for a single
    pair of tensors."""
    if isinstance(in_scores, Mapping) != isinstance(out_scores, Mapping):
        raise ValueError(
            "in_scores and out_scores must both be tensors or both be mappings {method: "
            f"scores}}, got {type(in_scores).__name__} and {type(out_scores).__name__}"
        )
    if not isinstance(in_scores, Mapping):
        return {
            None: (
                _checks.vector("in_scores", in_scores),
                _checks.vector("out_scores", out_scores),
            )
        }
    inside = _checks.mapping("in_scores", in_scores, "method names to scores")
    outside = _checks.mapping("out_scores", out_scores, "method names to scores")
    if set(inside) != set(outside):
        raise ValueError(
            "in_scores and out_scores must have the same methods: "
            f"{', '.join(map(repr, inside))} against {', '.join(map(repr, outside))}"
        )
    return {
        method: (
            _checks.vector(f"in_scores[{method!r}]", scores),
            _checks.vector(f"out_scores[{method!r}]", outside[method]),
        )
        for method, scores in inside.items()
    }


def entropy_histograms(
    in_scores: torch.Tensor | Mapping[str, torch.Tensor],
    out_scores: torch.Tensor | Mapping[str, torch.Tensor],
    path: str | os.PathLike | None = None,
    *,
    score_name: str = "predictive entropy",
    num_bins: int = 30,
    in_label: str = "in distribution",
    out_label: str = "out of distribution",
) -> Figure:
    """An uncertainty score on in-distribution and on out-of-distribution inputs: overlaid
    histograms (as densities, on shared bins) above, their empirical cumulative distribution
    functions below, and the AUROC of the detector "out of distribution when the score is
    high" (:func:`~pyro_bnn.metrics.auroc`; 0.5 is chance, 1 a perfect separation) in the
    title.  The better the score, the further right the out-of-distribution histogram and the
    lower its CDF: Louizos and Welling (2017) compare methods by the CDF of the predictive
    entropy on unseen classes, a lower curve meaning more uncertainty where it belongs.

    One column per method: give a single pair of score tensors, or two mappings ``{method:
    scores}`` with the same methods (the columns follow ``in_scores``' order, each titled with
    the method and its AUROC).

    :param in_scores: ``(N_in,)`` scores of in-distribution inputs (a tensor or an array, no
        NaN or infinity), e.g. :func:`~pyro_bnn.metrics.predictive_entropy` or
        :func:`~pyro_bnn.metrics.mutual_information`, or ``{method: (N_in,) scores}``.
    :param out_scores: ``(N_out,)`` scores of out-of-distribution inputs, or ``{method:
        (N_out,) scores}``; ``N_out`` need not equal ``N_in``.
    :param path: also save the figure there (PNG unless the suffix names another format).
    :param score_name: the x-axis label.
    :param num_bins: the number of histogram bins, at least 1.
    :param in_label: the legend label of the in-distribution scores.
    :param out_label: the legend label of the out-of-distribution scores.
    :returns: the figure, with two axes per method: the histograms in the first row, the
        CDFs in the second.

    C. Louizos and M. Welling, *Multiplicative normalizing flows for variational Bayesian
    neural networks*, ICML 2017.  D. Hendrycks and K. Gimpel, *A baseline for detecting
    misclassified and out-of-distribution examples in neural networks*, ICLR 2017.
    """
    path = _check_path(path)
    pairs = _score_pairs(in_scores, out_scores)
    num_bins = _checks.positive_integer("num_bins", num_bins)
    fig = _figure(4.0 * len(pairs), 5.6)
    columns = fig.subplots(2, len(pairs), squeeze=False).T
    for (method, (inside, outside)), (top, bottom) in zip(pairs.items(), columns, strict=True):
        both = torch.cat([inside, outside])
        edges = _bin_edges(both.min().item(), both.max().item(), num_bins).numpy()
        for scores, label, color in ((inside, in_label, "C0"), (outside, out_label, "C1")):
            top.hist(scores.numpy(), bins=edges, density=True, alpha=0.5, color=color, label=label)
            bottom.ecdf(scores.numpy(), color=color, label=label)
        area = auroc(inside, outside)
        top.set_title(("" if method is None else f"{method}\n") + f"AUROC {area:.3f}", fontsize=10)
        top.set_ylabel("density")
        bottom.set_ylabel("cumulative fraction")
        for axis in (top, bottom):
            axis.set_xlabel(score_name)
    columns[0][0].legend(fontsize=8)
    return _finish(fig, path)
