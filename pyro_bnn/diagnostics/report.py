"""A trained classifier's diagnostics written to a directory: what ``pyro-bnn diagnose`` does.

Files (each written through a temporary name and renamed, so a reader never sees half a file):

- ``posterior.nc`` (netCDF through h5netcdf) or ``posterior.zarr``: the DataTree of
  :func:`~pyro_bnn.diagnostics.from_svi` on the training data given;
- ``summary.csv``: ArviZ's summary of every posterior variable;
- ``diagnostics.json``: Pareto k-hat of the importance ratios with its threshold, PSIS-LOO
  (corrected for the variational proposal, and with the draws taken as posterior draws),
  the test error, NLL and ECE, the entropy AUROC
  against out-of-distribution inputs, and the files written;
- ``reliability_diagram.png``, ``entropy_in_vs_out.png``, ``log_alpha_histogram.png`` (guides
  with a log alpha), and ``arviz_posterior.png`` where ``arviz-plots`` is installed.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable

import numpy as np
import torch

from pyro_bnn import metrics, plots
from pyro_bnn.infer import ClassificationPrediction, predict
from pyro_bnn.util import atomic_write, atomic_write_json, atomic_write_text

from .arviz_compat import arviz_plots
from .convert import from_svi
from .importance import khat_threshold, loo, pareto_khat, summary

#: The DataTree formats :func:`write_diagnostics` writes.
FORMATS = {"netcdf": "posterior.nc", "zarr": "posterior.zarr"}


def write_datatree(datatree, path: str | os.PathLike, format: str = "netcdf") -> None:
    """Write ``datatree`` to ``path`` atomically: into a temporary sibling, then renamed over
    ``path`` (a zarr store is a directory; an old one is removed only after the new one is
    complete)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "netcdf":
        atomic_write(path, lambda temporary: datatree.to_netcdf(temporary, engine="h5netcdf"))
        return
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=directory)
    try:
        datatree.to_zarr(os.path.join(staging, name))
        if os.path.isdir(path):
            os.replace(path, os.path.join(staging, f"{name}.old"))
        os.replace(os.path.join(staging, name), path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined estimate is ``null``."""
    return float(value) if math.isfinite(value) else None


def _loo_report(datatree, correct: bool) -> dict:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = loo(datatree, correct=correct)
        except ValueError as error:
            # ArviZ cannot fit a tail whose values are all equal (an observation predicted with
            # probability one by every draw in float32, say): no estimate, and why.
            return {"elpd": None, "se": None, "p": None, "good_k": None,
                    "share_above_good_k": None, "warnings": [], "error": str(error)}  # fmt: skip
    pareto_k = result.pareto_k.values.ravel()
    return {
        "elpd": _finite_or_none(result.elpd),
        "se": _finite_or_none(result.se),
        "p": _finite_or_none(result.p),
        "good_k": float(result.good_k),
        "share_above_good_k": (
            None if np.isnan(pareto_k).any() else float((pareto_k > result.good_k).mean())
        ),
        "warnings": sorted({str(warning.message) for warning in caught}),
    }


def write_diagnostics(
    directory: str | os.PathLike,
    model: Callable,
    guide: Callable,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    out_of_distribution: torch.Tensor | None = None,
    *,
    num_samples: int = 200,
    max_entries: int | None = 10_000,
    format: str = "netcdf",
    log_alpha_threshold: float = 3.0,
    batch_size: int = 250,
    extra: dict | None = None,
) -> dict:
    """Write the diagnostics of a trained classifier's guide into ``directory``.

    :param model, guide: a classification model (a ``Categorical`` likelihood at ``obs``) and
        its trained guide.
    :param train: ``(x, y)`` for the DataTree and the importance ratios: the training data,
        or a subset (the model's likelihood scales a subset to the training-set size, so
        ``lp`` is then an unbiased estimate of the log joint, and k-hat an approximation).
    :param test: ``(x, y)`` held out: calibration and error.
    :param out_of_distribution: inputs of no class; their predictive entropy against the test
        inputs' gives the AUROC and the entropy figure.
    :param num_samples: posterior draws, for the DataTree and for the test predictions.
    :param max_entries: weights with more entries per draw are thinned in the DataTree.
    :param format: ``"netcdf"`` or ``"zarr"``.
    :param log_alpha_threshold: the line drawn on the log alpha histograms.
    :param batch_size: inputs per vectorized pass of the test predictions.
    :param extra: entries to record in ``diagnostics.json`` first (the command, the run).
    :returns: what ``diagnostics.json`` holds.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    directory = os.fspath(directory)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        datatree = from_svi(model, guide, *train, num_samples=num_samples, max_entries=max_entries)
    files = [FORMATS[format], "summary.csv", "diagnostics.json"]
    khat = pareto_khat(datatree)
    report: dict = {
        **(extra or {}),
        "num_samples": num_samples,
        "num_observations": len(train[0]),
        # JSON has no infinity: an unbounded k-hat is recorded as null and said in words.
        "pareto_khat": _finite_or_none(khat),
        "khat_threshold": khat_threshold(num_samples),
        "guide_reliable": bool(khat < khat_threshold(num_samples)),
        "loo": _loo_report(datatree, correct=True),
        # The guide's draws taken as posterior draws: defined where the correction overflows.
        "loo_draws_as_posterior": _loo_report(datatree, correct=False),
        "warnings": sorted({str(warning.message) for warning in caught}),
    }
    prediction = predict(
        model, guide, test[0], y=test[1], num_samples=num_samples, batch_size=batch_size
    )
    if not isinstance(prediction, ClassificationPrediction):
        raise ValueError("write_diagnostics diagnoses classifiers; the model is a regression")
    probs, labels = prediction.probs, test[1]
    report["test"] = metrics.classification_report(probs, labels)
    plots.reliability_diagram(
        probs, labels, path=os.path.join(directory, "reliability_diagram.png")
    )
    files.append("reliability_diagram.png")
    if out_of_distribution is not None:
        outside = predict(
            model, guide, out_of_distribution, num_samples=num_samples, batch_size=batch_size
        )
        report["out_of_distribution"] = {
            "num_inputs": len(out_of_distribution),
            "entropy_auroc": metrics.auroc(prediction.entropy, outside.entropy),
            "mutual_information_auroc": metrics.auroc(
                prediction.mutual_information, outside.mutual_information
            ),
        }
        plots.entropy_histograms(
            prediction.entropy,
            outside.entropy,
            path=os.path.join(directory, "entropy_in_vs_out.png"),
        )
        files.append("entropy_in_vs_out.png")
    log_alpha = guide.log_alpha() if hasattr(guide, "log_alpha") else {}
    if log_alpha:
        plots.log_alpha_histogram(
            {name.removeprefix("net."): value for name, value in log_alpha.items()},
            log_alpha_threshold,
            os.path.join(directory, "log_alpha_histogram.png"),
        )
        files.append("log_alpha_histogram.png")
    if arviz_plots() is not None:
        plots.arviz_plot("plot_dist", datatree, path=os.path.join(directory, "arviz_posterior.png"))
        files.append("arviz_posterior.png")
    report["arviz_plots"] = arviz_plots() is not None
    write_datatree(datatree, os.path.join(directory, FORMATS[format]), format)
    table = summary(datatree, kind="stats")
    atomic_write_text(os.path.join(directory, "summary.csv"), table.to_csv())
    report["files"] = files
    atomic_write_json(os.path.join(directory, "diagnostics.json"), report)
    return report
