"""Temporal averaging: the exponential moving average of the iterates, in ``fit`` and its
checkpoints, and in the deterministic trainer."""

import math

import pyro
import pyro.optim
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyro_bnn.baselines import train_deterministic
from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.infer import TrainingInterrupted, fit, load_checkpoint
from pyro_bnn.infer.averaging import ParameterAverage, RunningStatisticsWarning
from pyro_bnn.infer.fit import _parameters as _parameter_list
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood

from .common import classification_problem
from .test_fit import _Loader, _send_sigint


def _weighted_mean(iterates, decay):
    """The bias-corrected average written out term by term (module docstring's formula)."""
    t = len(iterates)
    total = sum((1 - decay) * decay ** (t - s) * value for s, value in enumerate(iterates, 1))
    return total / (1 - decay**t)


def test_average_is_the_bias_corrected_weighted_mean_of_the_iterates():
    parameter = torch.nn.Parameter(torch.zeros(3))
    average = ParameterAverage([parameter], decay=0.8)
    generator = torch.Generator().manual_seed(0)
    iterates = []
    for _ in range(7):
        with torch.no_grad():
            parameter.copy_(torch.randn(3, generator=generator, dtype=torch.float64).float())
        iterates.append(parameter.detach().double().clone())
        average.update()
        expected = _weighted_mean(iterates, 0.8)
        torch.testing.assert_close(average.averages()[0].double(), expected, rtol=1e-6, atol=1e-7)
    # The weights sum to one: a constant sequence averages to itself from the first step.
    constant = ParameterAverage([torch.nn.Parameter(torch.full((2,), 3.0))], decay=0.999)
    constant.update()
    torch.testing.assert_close(constant.averages()[0], torch.full((2,), 3.0))


def test_apply_and_restore_swap_the_values():
    parameter = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    average = ParameterAverage([parameter], decay=0.5)
    average.update()
    with torch.no_grad():
        parameter.add_(2.0)  # last iterate (3, 4); average (1, 2) by the bias correction
    last = average.apply()
    torch.testing.assert_close(parameter.detach(), torch.tensor([1.0, 2.0]))
    average.restore(last)
    torch.testing.assert_close(parameter.detach(), torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, math.nan, math.inf])
def test_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="ema_decay must lie strictly between 0 and 1"):
        ParameterAverage([torch.nn.Parameter(torch.zeros(1))], decay)


@pytest.mark.parametrize("decay", [True, "0.9", [0.9]])
def test_decay_that_is_not_a_number_is_refused(decay):
    with pytest.raises(TypeError, match="ema_decay must be a number"):
        ParameterAverage([torch.nn.Parameter(torch.zeros(1))], decay)


def test_no_average_before_the_first_step():
    average = ParameterAverage([torch.nn.Parameter(torch.zeros(1))], 0.9)
    with pytest.raises(RuntimeError, match="no optimizer step"):
        average.averages()


def test_state_round_trip_and_mismatches():
    parameters = [torch.nn.Parameter(torch.randn(2, 3)), torch.nn.Parameter(torch.randn(4))]
    average = ParameterAverage(parameters, 0.9)
    average.update()
    average.update()
    copy = ParameterAverage(parameters, 0.9)
    copy.load_state_dict(average.state_dict())
    assert copy.steps == 2
    for mine, theirs in zip(copy.averages(), average.averages(), strict=True):
        torch.testing.assert_close(mine, theirs)
    with pytest.raises(ValueError, match="used ema_decay=0.9, this one 0.5"):
        ParameterAverage(parameters, 0.5).load_state_dict(average.state_dict())
    with pytest.raises(ValueError, match="do not match"):
        ParameterAverage(parameters[:1], 0.9).load_state_dict(average.state_dict())
    with pytest.raises(ValueError, match="not a parameter-average state"):
        copy.load_state_dict({"decay": 0.9})
    assert copy.steps == 2  # the refused states changed nothing


def _trainable(model, guide):
    return {
        f"{i}.{name}": value.detach().clone()
        for i, module in enumerate((model, guide))
        for name, value in module.named_parameters()
    }


@pytest.mark.parametrize("optimizer", [None, "pyro"])
def test_fit_ends_with_the_average_of_its_iterates(optimizer):
    if optimizer == "pyro":
        optimizer = pyro.optim.Adam({"lr": 1e-2})
    pyro.set_rng_seed(0)
    # One batch per epoch, so the callback sees every iterate.
    model, guide, loader, _, _ = classification_problem(batch_size=96)
    iterates = []

    def record(epoch_record):
        iterates.append(_trainable(model, guide))

    fit(model, guide, loader, epochs=5, lr=1e-2, optimizer=optimizer, seed=1, ema_decay=0.7,
        callback=record, progress=False)  # fmt: skip
    final = _trainable(model, guide)
    for name, value in final.items():
        expected = _weighted_mean([it[name].double() for it in iterates], 0.7)
        torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    # The last iterate differs from the average: the test would notice a missing swap.
    assert any(not torch.allclose(final[k], iterates[-1][k]) for k in final)


def test_checkpoints_hold_the_average_and_resume_continues_it_exactly(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"

    def run(epochs, checkpoint, resume=False, **options):
        pyro.set_rng_seed(42)
        model, guide, loader, _, _ = classification_problem()
        fit(model, guide, loader, epochs=epochs, lr=1e-2, seed=3, checkpoint=checkpoint,
            resume=resume, progress=False, **options)  # fmt: skip
        return model, guide

    straight = _trainable(*run(4, None, ema_decay=0.9))
    run(2, path, ema_decay=0.9)
    model, guide = run(4, path, resume=True, ema_decay=0.9)
    resumed = _trainable(model, guide)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # A loader of the final checkpoint gets the averaged network.
    fresh_model, fresh_guide, loader, _, _ = classification_problem()
    with torch.no_grad():
        fresh_guide(*next(iter(loader)))
    load_checkpoint(path, model=fresh_model, guide=fresh_guide)
    loaded = _trainable(fresh_model, fresh_guide)
    assert all(torch.equal(straight[k], loaded[k]) for k in straight)


def test_resuming_with_other_averaging_is_refused_before_any_change(tmp_path):
    averaged, plain = tmp_path / "averaged.pt", tmp_path / "plain.pt"
    for path, decay in ((averaged, 0.9), (plain, None)):
        model, guide, loader, _, _ = classification_problem()
        fit(model, guide, loader, epochs=1, checkpoint=path, ema_decay=decay, progress=False)
    cases = [
        (averaged, None, "trained with ema_decay=0.9"),
        (averaged, 0.5, "used ema_decay=0.9, this one 0.5"),
        (plain, 0.9, "trained without ema_decay"),
    ]
    for path, decay, message in cases:
        model, guide, loader, _, _ = classification_problem()
        with torch.no_grad():
            guide(*next(iter(loader)))
        before = _trainable(model, guide)
        with pytest.raises(ValueError, match=message):
            fit(model, guide, loader, epochs=2, checkpoint=path, resume=True, ema_decay=decay,
                progress=False)  # fmt: skip
        after = _trainable(model, guide)
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_fit_refuses_a_bad_decay_and_its_checkpoint_key(tmp_path):
    model, guide, loader, _, _ = classification_problem()
    with pytest.raises(ValueError, match="ema_decay must lie strictly between 0 and 1"):
        fit(model, guide, loader, epochs=1, ema_decay=1.0, progress=False)
    with pytest.raises(ValueError, match="reserved"):
        fit(model, guide, loader, epochs=1, checkpoint=tmp_path / "c.pt",
            checkpoint_extra={"parameter_average": 1}, progress=False)  # fmt: skip


def test_train_deterministic_ends_with_the_average():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=generator)
    y = (x[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=64)  # one step per epoch

    def network():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    # The iterates of the same training without averaging, one epoch at a time (Adam's state
    # carries over through one optimizer, so each call trains from scratch for e epochs).
    iterates = []
    for epochs in range(1, 5):
        net = network()
        train_deterministic(net, loader, epochs=epochs, lr=1e-2, seed=0, progress=False)
        iterates.append([p.detach().double().clone() for p in net.parameters()])
    averaged = network()
    train_deterministic(averaged, loader, epochs=4, lr=1e-2, seed=0, ema_decay=0.6,
                        progress=False)  # fmt: skip
    for index, value in enumerate(averaged.parameters()):
        expected = _weighted_mean([it[index] for it in iterates], 0.6)
        torch.testing.assert_close(value.detach().double(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ema_decay"):
        train_deterministic(network(), loader, epochs=1, ema_decay=0.0, progress=False)


def test_ctrl_c_leaves_the_last_step_and_checkpoints_both(tmp_path, interruptible):
    path = tmp_path / "checkpoint.pt"
    model, guide, _, x, y = classification_problem()
    batches = [(x[i : i + 32], y[i : i + 32]) for i in (0, 32, 64)]

    def before(epoch, step):
        if (epoch, step) == (2, 1):
            _send_sigint()  # while the batch loads: epoch 2 stops before its second step

    with pytest.raises(TrainingInterrupted):
        fit(model, guide, _Loader(batches, before), epochs=3, lr=0.01, ema_decay=0.5,
            checkpoint=path, progress=False)  # fmt: skip
    payload = torch.load(path, weights_only=True)
    saved = payload["extra"]["parameter_average"]
    assert saved["steps"] == 4  # three steps of epoch 1, one of epoch 2
    last = [p.detach() for p in _parameter_list(model, guide)]
    for value, stored in zip(last, saved["last_step"], strict=True):
        assert torch.equal(value, stored)
    averaged = dict(payload["guide"])
    assert any(
        not torch.equal(averaged[name], value.detach()) for name, value in guide.named_parameters()
    )


def _batch_norm_network():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
    )


def test_averaging_a_network_with_running_statistics_says_they_are_not_averaged(recwarn):
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)
    with pytest.warns(RunningStatisticsWarning, match="running statistics of '1' keep"):
        train_deterministic(_batch_norm_network(), loader, epochs=1, ema_decay=0.9,
                            progress=False)  # fmt: skip
    model = BayesianNetwork(_batch_norm_network(), CategoricalLikelihood(32, 2), input_shape=(5,))
    guide = AutoMeanFieldNormal(model)
    with pytest.warns(RunningStatisticsWarning, match="update_bn"):
        fit(model, guide, loader, epochs=1, ema_decay=0.9, progress=False)
    # Without averaging, or without running statistics, nothing is said.
    recwarn.clear()
    train_deterministic(_batch_norm_network(), loader, epochs=1, progress=False)
    model, guide, loader, _, _ = classification_problem()
    fit(model, guide, loader, epochs=1, ema_decay=0.9, progress=False)
    assert not [w for w in recwarn if issubclass(w.category, RunningStatisticsWarning)]
