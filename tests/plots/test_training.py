"""The training curves: expected log-likelihood and KL apart for variational inference."""

import pytest

from pyro_bnn.infer import EpochRecord
from pyro_bnn.plots import training_curves

from .common import history


def test_variational_history_draws_the_likelihood_and_the_kl_apart():
    records = history()
    fig = training_curves(records)
    likelihood, kl = fig.axes
    assert likelihood.get_title() == "negative expected log-likelihood"
    assert kl.get_title() == "KL(q || p)"
    (line,) = likelihood.get_lines()
    assert list(line.get_xdata()) == [1, 2, 3]
    assert list(line.get_ydata()) == [-r["data"] for r in records]
    assert list(kl.get_lines()[0].get_ydata()) == [r["kl"] for r in records]
    assert likelihood.get_yscale() == kl.get_yscale() == "log"


def test_epoch_records_are_accepted_and_non_positive_curves_stay_linear():
    records = [
        EpochRecord(epoch=e, loss=1.0, data=d, kl=2.0, kl_weight=1.0, lr=0.1, seconds=0.1)
        for e, d in ((1, -1.0), (2, 0.5))  # a density: the log-likelihood may be positive
    ]
    likelihood, kl = training_curves(records).axes
    assert list(likelihood.get_lines()[0].get_ydata()) == [1.0, -0.5]
    assert likelihood.get_yscale() == "linear"
    assert kl.get_yscale() == "log"


def test_deterministic_history_draws_the_loss():
    (axis,) = training_curves(history(variational=False)).axes
    assert list(axis.get_lines()[0].get_ydata()) == [1.5, 0.9]
    assert axis.get_title() == "training negative log-likelihood"


@pytest.mark.parametrize(
    "records, message",
    [
        ([], "history is empty"),
        ({"epoch": 1, "loss": 1.0}, "history must be a sequence of per-epoch records"),
        ([{"epoch": 1, "loss": 1.0}, 3], r"history\[1\] must be a mapping or an EpochRecord"),
        (
            [{"epoch": 1, "data": -1.0, "kl": 1.0}, {"epoch": 2, "data": -1.0}],
            r"history\[1\] has no 'kl'",
        ),
        ([{"epoch": 1}], r"history\[0\] has no 'loss' \(its keys: 'epoch'\)"),
        ([{"epoch": 1, "loss": float("nan")}], r"history\[0\]\['loss'\] is nan, not a finite"),
        ([{"epoch": 1, "loss": "1.0"}], r"history\[0\]\['loss'\] must be a number"),
    ],
)
def test_bad_histories_are_refused(records, message):
    with pytest.raises(ValueError, match=message):
        training_curves(records)
