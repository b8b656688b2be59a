"""
The evaluation protocol: how good a predictive distribution is.

* :mod:`~pyro_bnn.metrics.classification`: :func:`accuracy`, :func:`negative_log_likelihood`,
  :func:`brier_score`, :func:`expected_calibration_error` and its :func:`reliability_curve`.
* :mod:`~pyro_bnn.metrics.regression`: :func:`root_mean_squared_error`,
  :func:`gaussian_negative_log_likelihood` and the UCI protocol's
  :func:`predictive_log_likelihood`, each reporting in original units for a model trained on
  standardized targets (``target_scale=``).
* :mod:`~pyro_bnn.metrics.out_of_distribution`: uncertainty scores (:func:`predictive_entropy`,
  :func:`mutual_information`) and how well they detect out-of-distribution inputs
  (:func:`auroc`, :func:`aupr`, :func:`fpr_at_tpr`, :func:`detection_report`).

Metrics return Python floats; scores are tensors with one entry per input.
"""

from .classification import (
    BINNINGS,
    ReliabilityCurve,
    accuracy,
    brier_score,
    classification_report,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_curve,
)
from .out_of_distribution import (
    aupr,
    auroc,
    detection_report,
    fpr_at_tpr,
    mutual_information,
    predictive_entropy,
)
from .regression import (
    gaussian_negative_log_likelihood,
    predictive_log_likelihood,
    root_mean_squared_error,
)

__all__ = [
    "BINNINGS",
    "ReliabilityCurve",
    "accuracy",
    "aupr",
    "auroc",
    "brier_score",
    "classification_report",
    "detection_report",
    "expected_calibration_error",
    "fpr_at_tpr",
    "gaussian_negative_log_likelihood",
    "mutual_information",
    "negative_log_likelihood",
    "predictive_entropy",
    "predictive_log_likelihood",
    "reliability_curve",
    "root_mean_squared_error",
]
