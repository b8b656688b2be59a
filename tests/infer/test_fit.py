import math
import os
import signal
import threading
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from torch.utils.data import DataLoader, Subset, TensorDataset

from pyro_bnn.data import load_dataset
from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.infer import (
    CheckpointMismatchError,
    NonFiniteLossError,
    PosteriorCollapseWarning,
    TraceKL_ELBO,
    TrainingInterrupted,
    fit,
    load_checkpoint,
)
from pyro_bnn.infer.collapse import MIN_STEPS, ConstantPredictor, collapse_symptoms
from pyro_bnn.infer.fit import gradients_finite
from pyro_bnn.models import (
    BayesianNetwork,
    CategoricalLikelihood,
    GaussianLikelihood,
    normal_prior,
)

from .common import classification_problem, parameters, regression_problem


def test_fit_reports_data_term_and_kl_separately():
    model, guide, loader, _, _ = classification_problem()
    history = fit(model, guide, loader, epochs=3, lr=1e-2, progress=False)
    assert [record.epoch for record in history] == [1, 2, 3]
    for record in history:
        assert all(math.isfinite(v) for v in (record.loss, record.data, record.kl))
        assert record.kl > 0 and record.data < 0
        # With TraceKL_ELBO and KL weight 1 the loss is exactly KL - E[log p(y|w)].
        assert record.loss == pytest.approx(record.kl - record.data, rel=1e-5)
        assert record.kl_weight == 1.0
    assert history[-1].data > history[0].data


@pytest.mark.parametrize("elbo", [Trace_ELBO(), TraceMeanField_ELBO(), TraceKL_ELBO()])
def test_fit_works_with_pyro_elbos(elbo):
    model, guide, loader, _, _ = classification_problem()
    history = fit(model, guide, loader, epochs=2, lr=1e-2, elbo=elbo, progress=False)
    assert all(math.isfinite(r.loss) and math.isfinite(r.kl) for r in history)


def test_fit_works_with_renyi_elbo():
    # The Renyi bound needs a normalized prior.
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model = BayesianNetwork(net, CategoricalLikelihood(64, 2), prior=normal_prior(1.0))
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    history = fit(
        model, guide, loader, epochs=2, elbo=RenyiELBO(alpha=0.5, num_particles=2), progress=False
    )
    assert all(math.isfinite(r.loss) for r in history)


def _trained_state(seed):
    pyro.set_rng_seed(123)  # same initialization for both runs
    model, guide, loader, _, _ = classification_problem()
    fit(model, guide, loader, epochs=2, lr=1e-2, seed=seed, progress=False)
    return parameters(model, guide)


def test_fit_is_repeatable_with_a_seed():
    first, second, other = _trained_state(7), _trained_state(7), _trained_state(8)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_kl_warmup_is_linear():
    model, guide, loader, _, _ = classification_problem(num_data=64, batch_size=16)
    history = fit(model, guide, loader, epochs=3, kl_warmup_epochs=2, progress=False)
    # Four steps per epoch at progress 0, .25, .5, .75 (epoch 1) and 1, 1.25, ... (epoch 2).
    assert history[0].kl_weight == pytest.approx((0 + 0.25 + 0.5 + 0.75) / 4 / 2)
    assert history[1].kl_weight == pytest.approx((1 + 1.25 + 1.5 + 1.75) / 4 / 2)
    assert history[2].kl_weight == 1.0


def test_blundell_reweighting_averages_to_one_per_epoch():
    model, guide, loader, _, _ = classification_problem(num_data=64, batch_size=16)
    history = fit(model, guide, loader, epochs=1, kl_reweighting="blundell", progress=False)
    assert history[0].kl_weight == pytest.approx(1.0)


def test_learning_rate_schedule_steps_per_epoch():
    model, guide, loader, _, _ = classification_problem()
    history = fit(
        model,
        guide,
        loader,
        epochs=3,
        lr=0.1,
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        progress=False,
    )
    assert [r.lr for r in history] == pytest.approx([0.1, 0.05, 0.025])


def test_fit_uses_a_private_parameter_store():
    pyro.set_rng_seed(0)
    first = classification_problem()
    pyro.set_rng_seed(1)
    second = classification_problem()
    before = parameters(second[0])
    fit(*first[:3], epochs=1, progress=False)
    assert not list(pyro.get_param_store().keys())
    # The second model has the same parameter names; training the first must not touch it,
    # and training the second must start from its own values.
    assert all(torch.equal(v, parameters(second[0])[k]) for k, v in before.items())
    fit(*second[:3], epochs=1, lr=0.0, progress=False)
    assert all(torch.equal(v, parameters(second[0])[k]) for k, v in before.items())


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda x, y: (x.index_fill(0, torch.tensor([3]), float("nan")), y), "NaN or infinite"),
        (lambda x, y: (x, y.index_fill(0, torch.tensor([0]), 7)), "labels must lie in 0..2"),
        (lambda x, y: (x[:, :5], y), "each input must have shape (6,)"),
        (lambda x, y: (x, y.float()), "1-D integer tensor"),
    ],
)
def test_bad_batches_raise_before_any_change(corrupt, message):
    model, guide, loader, x, y = classification_problem()
    good = next(iter(loader))
    bad = corrupt(*good)
    before = parameters(model)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fit(model, guide, [bad], epochs=1, progress=False)
    assert guide.prototype_trace is None
    assert all(torch.equal(v, parameters(model)[k]) for k, v in before.items())
    # A bad batch later in an epoch stops training before it reaches the optimizer.
    fit(model, guide, [good], epochs=1, progress=False)
    before = parameters(model, guide)
    with pytest.raises(ValueError, match="labels|NaN|shape|integer"):
        fit(model, guide, [bad], epochs=1, progress=False)
    assert all(torch.equal(v, parameters(model, guide)[k]) for k, v in before.items())


def test_regression_targets_with_inf_are_rejected():
    model, guide, loader, x, y = regression_problem()
    with pytest.raises(ValueError, match="the targets contain 1 NaN or infinite"):
        fit(model, guide, [(x, y.index_fill(0, torch.tensor([2]), math.inf))], epochs=1,
            progress=False)  # fmt: skip


#: Fresh optimizers of each kind fit accepts (a PyroOptim keeps state, so one per run).
OPTIMIZERS = {
    "default": lambda: None,
    "factory": lambda: lambda parameters: torch.optim.Adam(parameters, lr=0.01),
    "pyro.optim": lambda: pyro.optim.Adam({"lr": 0.01}),
}


@pytest.mark.parametrize("kind", OPTIMIZERS)
@pytest.mark.parametrize("validate", [True, False])
def test_non_finite_loss_stops_and_keeps_the_last_good_state(validate, kind):
    model, guide, loader, x, y = classification_problem()
    good = (x[:32], y[:32])
    overflow = (x[32:64] * 1e38, y[32:64])  # finite inputs, non-finite logits
    pyro.set_rng_seed(5)
    fit(model, guide, [good], epochs=1, lr=0.01, optimizer=OPTIMIZERS[kind](), progress=False)
    expected = parameters(model, guide)

    pyro.set_rng_seed(0)
    model2, guide2, _, _, _ = classification_problem()
    pyro.set_rng_seed(5)
    # The logits overflow to NaN; with or without Pyro's validation the loss is NaN and the guard
    # stops training before the optimizer step, so no parameter changes.
    with pyro.validation_enabled(validate), pytest.raises(NonFiniteLossError, match="step 2"):
        fit(model2, guide2, [good, overflow], epochs=1, lr=0.01, optimizer=OPTIMIZERS[kind](),
            progress=False)  # fmt: skip
    state = parameters(model2, guide2)
    assert all(torch.equal(v, state[k]) for k, v in expected.items())
    assert all(p.grad is None for p in [*model2.parameters(), *guide2.parameters()])


@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_non_finite_gradient_of_a_finite_loss_stops_before_the_step(max_grad_norm):
    model, guide, _, x, y = classification_problem()
    fit(model, guide, [(x[:32], y[:32])], epochs=1, lr=0.01, progress=False)
    before = parameters(model, guide)
    # The loss stays finite; one entry of one gradient becomes NaN, as a where() over a
    # branch with an undefined derivative makes it.
    poisoned = next(p for p in guide.parameters() if p.dim() == 2)
    poisoned.register_hook(lambda grad: grad.index_fill(0, torch.tensor([0]), math.nan))
    with pytest.raises(NonFiniteLossError, match="the gradient became non-finite at epoch 1"):
        fit(model, guide, [(x[:32], y[:32])], epochs=1, lr=0.01, max_grad_norm=max_grad_norm,
            progress=False)  # fmt: skip
    assert all(torch.equal(v, parameters(model, guide)[k]) for k, v in before.items())


def test_gradients_finite_on_every_kind_of_gradient_list():
    grads = [torch.randn(3, 4), torch.randn(4, dtype=torch.float64), torch.randn(2).half()]
    assert gradients_finite(grads) and gradients_finite([])
    # Large finite half-precision gradients: their norms' sum would overflow in half precision.
    assert gradients_finite([torch.full((3,), 1000.0).half()] * 100)
    # Float64 sums are not rounded to float32 (1e300 would become inf there).
    assert gradients_finite([torch.full((2,), 1e300, dtype=torch.float64), torch.ones(3)])
    assert gradients_finite([torch.randn(3, dtype=torch.complex64)])
    for bad in (math.nan, math.inf, -math.inf):
        assert not gradients_finite([*grads, torch.tensor([0.0, bad])])
        assert not gradients_finite([*grads, torch.tensor([1j, complex(0.0, bad)])])
    # inf and -inf in one tensor: their sum is NaN, not a cancellation.
    assert not gradients_finite([torch.tensor([math.inf, -math.inf])])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": -1}, "epochs"),
        ({"epochs": 1, "kl_reweighting": "geometric"}, "kl_reweighting"),
        ({"epochs": 1, "kl_warmup_epochs": -2}, "kl_warmup_epochs"),
        ({"epochs": 1, "resume": True}, "checkpoint path"),
    ],
)
def test_invalid_arguments(kwargs, message):
    model, guide, loader, _, _ = classification_problem()
    with pytest.raises(ValueError, match=message):
        fit(model, guide, loader, progress=False, **kwargs)


def test_empty_loader():
    model, guide, _, _, _ = classification_problem()
    with pytest.raises(ValueError, match="empty"):
        fit(model, guide, [], epochs=1, progress=False)


def test_resume_continues_exactly(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"

    def run(epochs, resume):
        pyro.set_rng_seed(42)
        model, guide, loader, _, _ = classification_problem()
        history = fit(model, guide, loader, epochs=epochs, lr=1e-2, seed=3,
                      checkpoint=path if resume is not None else None,
                      resume=bool(resume), progress=False)  # fmt: skip
        return history, parameters(model, guide)

    straight_history, straight = run(3, None)
    run(2, False)
    resumed_history, resumed = run(3, True)
    assert [r.epoch for r in resumed_history] == [1, 2, 3]
    assert resumed_history[-1].loss == pytest.approx(straight_history[-1].loss, rel=1e-6)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_function_guides_are_pointed_to_svi():
    model, _, loader, _, _ = classification_problem()

    def guide(x, y=None):
        pass

    with pytest.raises(TypeError, match="pyro.infer.SVI"):
        fit(model, guide, loader, epochs=1, progress=False)


# --------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize(
    "optimizer, rates",
    [
        (lambda: pyro.optim.Adam({"lr": 0.01}), [0.01] * 3),
        # ClippedAdam multiplies its rate by lrd at every step; three steps per epoch.
        (lambda: pyro.optim.ClippedAdam({"lr": 0.01, "lrd": 0.9}), [0.01 * 0.9 ** (3 * k)
                                                                     for k in (1, 2, 3)]),
        (
            lambda: pyro.optim.StepLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.1},
                                       "step_size": 1, "gamma": 0.5}),
            [0.1, 0.05, 0.025],
        ),
    ],
)  # fmt: skip
def test_fit_trains_with_pyro_optim(optimizer, rates):
    model, guide, loader, _, _ = classification_problem()
    guide(*next(iter(loader)))
    before = parameters(model, guide)
    history = fit(model, guide, loader, epochs=3, optimizer=optimizer(), progress=False)
    after = parameters(model, guide)
    # Every tensor moved: model biases, guide means and log-variances.
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert all(math.isfinite(r.loss) and r.kl > 0 for r in history)
    assert [r.lr for r in history] == pytest.approx(rates)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.1, "scheduler": lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=0, threshold=10.0)},
        {"optimizer": pyro.optim.ReduceLROnPlateau({"optimizer": torch.optim.Adam,
            "optim_args": {"lr": 0.1}, "factor": 0.5, "patience": 0, "threshold": 10.0})},
    ],
)  # fmt: skip
def test_reduce_on_plateau_gets_each_epochs_loss(kwargs):
    # No loss beats the best by 1000%: every epoch is a plateau and halves the rate.
    model, guide, loader, _, _ = classification_problem()
    history = fit(model, guide, loader, epochs=3, progress=False, **kwargs)
    assert [r.lr for r in history] == pytest.approx([0.1, 0.05, 0.025])


def test_pyro_optim_per_parameter_arguments_get_the_parameter_store_names():
    model, guide, loader, _, _ = classification_problem()
    seen = []

    def optim_args(name):
        seen.append(name)
        return {"lr": 0.0 if name.startswith("net.") else 0.01}

    before = parameters(model)
    fit(model, guide, loader, epochs=1, optimizer=pyro.optim.Adam(optim_args), progress=False)
    # The names Pyro's SVI would use: the model's own parameters under their module paths,
    # one call per trained tensor.
    num_tensors = len(list(model.parameters())) + len(list(guide.parameters()))
    assert len(seen) == len(set(seen)) == num_tensors
    assert {"net.0.bias", "net.2.bias"} <= set(seen)
    assert all(torch.equal(v, parameters(model)[k]) for k, v in before.items())  # lr 0


def test_max_grad_norm_clips_with_every_kind_of_optimizer():
    for optimizer in (
        lambda parameters: torch.optim.SGD(parameters, lr=1.0),
        pyro.optim.SGD({"lr": 1.0}),
    ):
        model, guide, loader, x, y = classification_problem()
        guide(x[:2], y[:2])
        before = parameters(model, guide)
        fit(model, guide, [(x, y)], epochs=1, optimizer=optimizer, max_grad_norm=1e-3,
            progress=False)  # fmt: skip
        after = parameters(model, guide)
        # One SGD step of rate 1 moves the parameters by the clipped gradient.
        moved = torch.cat([(after[k] - before[k]).flatten() for k in before]).norm()
        assert 0 < moved <= 1e-3 * (1 + 1e-5)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: pyro.optim.ClippedAdam({"lr": 0.01, "lrd": 0.95}),
        lambda: pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam,
                                          "optim_args": {"lr": 0.01}, "gamma": 0.7}),
    ],
)  # fmt: skip
def test_resume_with_pyro_optim_continues_exactly(tmp_path, optimizer):
    path = tmp_path / "checkpoint.pt"

    def run(epochs, resume):
        pyro.set_rng_seed(42)
        model, guide, loader, _, _ = classification_problem()
        history = fit(model, guide, loader, epochs=epochs, optimizer=optimizer(), seed=3,
                      checkpoint=path if resume is not None else None, resume=bool(resume),
                      progress=False)  # fmt: skip
        return history, parameters(model, guide)

    straight_history, straight = run(3, None)
    run(2, False)
    resumed_history, resumed = run(3, True)
    # The per-parameter optimizer states (moments, decayed rates, schedules) came back.
    assert [r.lr for r in resumed_history] == [r.lr for r in straight_history]
    assert resumed_history[-1].loss == straight_history[-1].loss
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_optimizer_kinds_do_not_resume_from_each_other(tmp_path):
    path = tmp_path / "checkpoint.pt"
    model, guide, loader, _, _ = classification_problem()
    fit(model, guide, loader, epochs=1, checkpoint=path, progress=False)
    model, guide, loader, x, y = classification_problem()
    guide(x[:2], y[:2])
    before = parameters(model, guide)
    with pytest.raises(CheckpointMismatchError, match="parameter groups"):
        fit(model, guide, loader, epochs=2, optimizer=pyro.optim.Adam({"lr": 0.01}),
            checkpoint=path, resume=True, progress=False)  # fmt: skip
    assert all(torch.equal(v, parameters(model, guide)[k]) for k, v in before.items())


class _PlainModel(torch.nn.Module):
    """A model that is a plain nn.Module: its parameters never reach Pyro's parameter store."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 3)

    def forward(self, x, y=None):
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", len(x)):
            return pyro.sample("obs", dist.Categorical(logits=self.linear(x) + shift), obs=y)


def _foreign_pyro_optim():
    optim = pyro.optim.Adam({"lr": 0.01})
    stranger = torch.nn.Parameter(torch.zeros(2))
    stranger.grad = torch.ones(2)
    optim([stranger])
    return optim


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda m, g: "adam", TypeError, "optimizer must be a torch.optim.Optimizer"),
        (lambda m, g: torch.optim.Adam, TypeError, "optimizer is the class torch.optim"),
        (lambda m, g: pyro.optim.Adam, TypeError, r"call it with the optimizer's arguments"),
        (lambda m, g: torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=1.0),
         ValueError, "not parameters of the model or the guide"),
        (lambda m, g: lambda parameters: "sgd", TypeError, "the factory must return"),
        (lambda m, g: torch.optim.SGD(m.parameters(), lr=1.0), ValueError,
         "none of the guide's parameters"),
        (lambda m, g: _foreign_pyro_optim(), ValueError, "already stepped"),
    ],
)  # fmt: skip
def test_bad_optimizers_are_refused_before_any_change(make, error, message):
    model, guide, loader, x, y = classification_problem()
    guide(x[:2], y[:2])
    before = parameters(model, guide)
    with pytest.raises(error, match=message):
        fit(model, guide, loader, epochs=1, optimizer=make(model, guide), progress=False)
    assert all(torch.equal(v, parameters(model, guide)[k]) for k, v in before.items())


def test_pyro_optim_refusals_name_the_way_out():
    model, guide, loader, x, y = classification_problem()
    step_lr = pyro.optim.Adam({"lr": 0.01})
    with pytest.raises(ValueError, match="Use a pyro.optim scheduler instead"):
        fit(model, guide, loader, epochs=1, optimizer=step_lr, progress=False,
            scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1))  # fmt: skip
    with (
        pyro.settings.context(module_local_params=True),
        pytest.raises(ValueError, match="module_local_params"),
    ):
        fit(model, guide, loader, epochs=1, optimizer=step_lr, progress=False)
    # Parameters outside Pyro's store have no name: refused at the first step, before it updates.
    model = _PlainModel()
    guide = AutoMeanFieldNormal(model)
    guide(x[:2], y[:2])
    before = parameters(model, guide)
    with pytest.raises(TypeError, match="Make the model a PyroModule"):
        fit(model, guide, loader, epochs=1, optimizer=pyro.optim.Adam({"lr": 0.1}),
            progress=False)  # fmt: skip
    assert all(torch.equal(v, parameters(model, guide)[k]) for k, v in before.items())
    # A torch optimizer does not need names.
    fit(model, guide, loader, epochs=1, progress=False)
    assert not all(torch.equal(v, parameters(model, guide)[k]) for k, v in before.items())


# --------------------------------------------------------------------------- posterior collapse


def _digits_network(num_data, hidden=32):
    splits = load_dataset("digits")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, 10))  # fmt: skip
    model = BayesianNetwork(
        net, CategoricalLikelihood(num_data, 10), input_shape=splits.input_shape
    )
    loader = DataLoader(Subset(splits.train, range(num_data)), batch_size=64, shuffle=True)
    return model, loader


def test_collapsed_posterior_warns_how_to_avoid_it():
    # A huge initial variance and no warm-up: the noise drowns every weight and the KL keeps it
    # there; after 100 steps the network predicts worse than the class frequencies.
    model, loader = _digits_network(256)
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values, init_log_variance=2.0)
    with pytest.warns(PosteriorCollapseWarning) as caught:
        history = fit(model, guide, loader, epochs=25, lr=3e-3, progress=False)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("the posterior has collapsed: after 100 steps")
    assert "no better than the -2.29" in message and "class frequencies" in message
    assert "all 2368 weights have log alpha above 3" in message
    for remedy in ("kl_warmup_epochs", "pretrained=", "init_log_variance"):
        assert remedy in message
    assert history[-1].data / 256 < -2.3
    assert caught[0].filename == __file__  # points at the call of fit


def test_healthy_run_does_not_warn():
    # The same network with the default variance and a KL warm-up learns: no warning.
    model, loader = _digits_network(512)
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = fit(model, guide, loader, epochs=13, lr=1e-2, kl_warmup_epochs=13,
                      progress=False)  # fmt: skip
    assert 13 * len(loader) >= MIN_STEPS  # long enough for the data term to be judged
    assert history[-1].data / 512 > -1.0


def test_short_runs_are_judged_by_log_alpha_only():
    model, guide, loader, _, _ = classification_problem()
    # Three steps: worse than the class frequencies, as every run starts, but not a collapse.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = fit(model, guide, loader, epochs=1, lr=1e-2, progress=False)
    baseline = ConstantPredictor.for_model(model)
    for _, y in loader:
        baseline.update(y)
    assert history[-1].data / 96 < baseline.log_likelihood()
    # A variance so large that every weight would be pruned is a collapse at any length.
    model, guide, loader, _, _ = classification_problem()
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values, init_log_variance=4.0)
    with pytest.warns(PosteriorCollapseWarning, match="all 144 weights have log alpha") as caught:
        fit(model, guide, loader, epochs=1, lr=1e-2, progress=False)
    assert "expected log-likelihood" not in str(caught[0].message)


def test_constant_predictor_of_classification():
    likelihood = CategoricalLikelihood(6, 3)
    baseline = ConstantPredictor(likelihood)
    assert baseline.log_likelihood() is None
    baseline.update(torch.tensor([0, 0, 1, 0]))
    baseline.update(torch.tensor([2, 0]))
    # Batch frequencies (3/4, 1/4, 0) and (1/2, 0, 1/2), averaged over the two steps as the
    # epoch's data term averages them.
    f = torch.tensor([5 / 8, 1 / 8, 2 / 8])
    assert baseline.log_likelihood() == pytest.approx((f * f.log()).sum().item())
    # That is what the constant prediction f scores in the same bookkeeping, and the best one.
    scores = [
        sum(dist.Categorical(probs=p).log_prob(y).mean() for y in (torch.tensor([0, 0, 1, 0]),
            torch.tensor([2, 0]))).item() / 2
        for p in (f, torch.tensor([0.5, 0.25, 0.25]), torch.full((3,), 1 / 3))
    ]  # fmt: skip
    assert scores[0] == pytest.approx(baseline.log_likelihood())
    assert scores[0] > max(scores[1:])
    assert collapse_symptoms(6 * (scores[0] - 0.01), MIN_STEPS, baseline, torch.nn.Module())
    assert not collapse_symptoms(6 * (scores[0] + 0.01), MIN_STEPS, baseline, torch.nn.Module())
    assert not collapse_symptoms(6 * (scores[0] - 1), MIN_STEPS - 1, baseline, torch.nn.Module())


@pytest.mark.parametrize("noise", ["learned", "fixed"])
def test_constant_predictor_of_regression(noise):
    likelihood = GaussianLikelihood(4, noise=noise, scale=2.0)
    baseline = ConstantPredictor.for_model(BayesianNetwork(torch.nn.Linear(1, 1), likelihood))
    baseline.update(torch.tensor([1.0, 3.0]))
    baseline.update(torch.tensor([0.0, 4.0]))
    mean, variance = 2.0, (1 + 1 + 4 + 4) / 4
    # Learned noise fits the targets' variance; fixed noise keeps its own scale.
    scale = math.sqrt(variance) if noise == "learned" else 2.0
    expected = sum(dist.Normal(mean, scale).log_prob(torch.tensor([1.0, 3.0, 0.0, 4.0]))) / 4
    assert baseline.log_likelihood() == pytest.approx(expected.item())


def test_models_without_a_known_likelihood_have_no_baseline():
    assert ConstantPredictor.for_model(_PlainModel()) is None


# --------------------------------------------------------------------------- Ctrl-C


def _send_sigint():
    # Only while fit's handler is installed: Python's default one would stop the test session.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        raise AssertionError("fit installed no SIGINT handler")
    os.kill(os.getpid(), signal.SIGINT)


class _Loader:
    """Yields fixed batches; ``before(epoch, step)`` runs before each one is handed out."""

    def __init__(self, batches, before=None):
        # fit draws one batch to set up the guide first: that pass is epoch 0.
        self.batches, self.before, self.epoch, self.yielded = batches, before, -1, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.epoch += 1
        for step, batch in enumerate(self.batches):
            if self.before is not None:
                self.before(self.epoch, step)
            self.yielded += 1
            yield batch


def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_resume_continues(tmp_path, interruptible):
    path = tmp_path / "checkpoint.pt"
    model, guide, _, x, y = classification_problem()
    batches = [(x[i : i + 32], y[i : i + 32]) for i in (0, 32, 64)]
    armed, snapshots = [], []

    def before(epoch, step):
        if (epoch, step) == (2, 1):  # the second step of the second epoch
            armed.append(True)
            snapshots.append(parameters(model, guide))

    def interrupt_inside_the_model(module, inputs, output):
        if armed:  # Ctrl-C in the middle of the step's forward pass
            armed.clear()
            _send_sigint()

    model.net[0].register_forward_hook(interrupt_inside_the_model)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(model, guide, _Loader(batches, before), epochs=3, lr=0.01, checkpoint=path,
            checkpoint_extra={"run": "mine"}, progress=False)  # fmt: skip
    assert signal.getsignal(signal.SIGINT) is handler
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert (stopped.value.epoch, stopped.value.step) == (2, 2)
    assert stopped.value.checkpoint == str(path)
    assert [r.epoch for r in stopped.value.history] == [1]
    assert str(stopped.value) == (
        f"training interrupted at epoch 2, step 2; checkpoint written to {path}; continue with "
        "resume=True"
    )
    # The interrupted step finished, and the checkpoint holds its result.
    interrupted = parameters(model, guide)
    assert not all(torch.equal(v, interrupted[k]) for k, v in snapshots[0].items())
    payload = torch.load(path, weights_only=True)
    assert payload["epoch"] == 1 and len(payload["history"]) == 1
    assert payload["extra"] == {"run": "mine", "interrupted": {"epoch": 2, "step": 2}}

    model, guide, _, _, _ = classification_problem()
    guide(x[:2], y[:2])
    load_checkpoint(path, model=model, guide=guide)
    assert all(torch.equal(v, parameters(model, guide)[k]) for k, v in interrupted.items())
    # Resuming restarts epoch 2 from its first batch and runs to the end.
    loader = _Loader(batches)
    history = fit(model, guide, loader, epochs=3, lr=0.01, checkpoint=path, resume=True,
                  progress=False)  # fmt: skip
    assert [r.epoch for r in history] == [1, 2, 3]
    assert loader.yielded == 1 + 2 * 3  # the set-up batch, then two full epochs
    payload = torch.load(path, weights_only=True)
    assert payload["epoch"] == 3 and "interrupted" not in payload["extra"]


def test_ctrl_c_while_a_batch_loads_starts_no_new_step(interruptible):
    model, guide, _, x, y = classification_problem()
    batches = [(x[i : i + 32], y[i : i + 32]) for i in (0, 32, 64)]

    def before(epoch, step):
        if (epoch, step) == (1, 2):
            _send_sigint()

    with pytest.raises(TrainingInterrupted, match="no checkpoint= was given") as stopped:
        fit(model, guide, _Loader(batches, before), epochs=2, progress=False)
    assert (stopped.value.epoch, stopped.value.step, stopped.value.checkpoint) == (1, 2, None)
    assert stopped.value.history == []


def test_second_ctrl_c_stops_at_once(interruptible):
    model, guide, _, x, y = classification_problem()

    def before(epoch, step):
        if step == 1:
            _send_sigint()
            _send_sigint()

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as stopped:
        fit(model, guide, _Loader([(x[:32], y[:32])] * 3, before), epochs=1, progress=False)
    assert not isinstance(stopped.value, TrainingInterrupted)
    assert signal.getsignal(signal.SIGINT) is handler


def test_fit_off_the_main_thread_leaves_signals_alone():
    model, guide, loader, _, _ = classification_problem()
    handler = signal.getsignal(signal.SIGINT)
    result = {}

    def train():
        try:
            result["history"] = fit(model, guide, loader, epochs=1, progress=False)
        except BaseException as error:  # reported below
            result["error"] = error

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert "error" not in result, result.get("error")
    assert len(result["history"]) == 1
    assert signal.getsignal(signal.SIGINT) is handler


def test_checkpoint_extra_cannot_take_fits_key(tmp_path):
    model, guide, loader, _, _ = classification_problem()
    with pytest.raises(ValueError, match="reserved"):
        fit(model, guide, loader, epochs=1, checkpoint=tmp_path / "c.pt",
            checkpoint_extra={"interrupted": True}, progress=False)  # fmt: skip


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_constant_predictor_reduces_in_chunks_as_at_once(kind, monkeypatch):
    # Batches are held and reduced together; a small buffer reduces them in several chunks,
    # which must give the same statistics as reducing them one by one or all at once.
    generator = torch.Generator().manual_seed(0)
    if kind == "classification":
        likelihood = CategoricalLikelihood(100, 4)
        batches = [torch.randint(0, 4, (size,), generator=generator) for size in (7, 3, 11, 5)]
    else:
        likelihood = GaussianLikelihood(100, out_features=2)
        batches = [torch.randn(size, 2, generator=generator) for size in (7, 3, 11, 5)]
    values = []
    for limit in (1, 12, 1 << 20):
        monkeypatch.setattr(ConstantPredictor, "PENDING_ELEMENTS", limit)
        baseline = ConstantPredictor(likelihood)
        for batch in batches:
            baseline.update(batch)
        values.append(baseline.log_likelihood())
    assert values[0] == pytest.approx(values[1], rel=1e-12)
    assert values[0] == pytest.approx(values[2], rel=1e-12)


def test_structure_is_validated_on_each_epochs_first_step(monkeypatch):
    # The model/guide match is checked once per epoch (3 steps each), with validation on; the
    # distributions' arguments stay validated, and the flag is restored afterwards.
    from pyro.infer import util as infer_util

    from pyro_bnn.infer import trace_kl_elbo

    calls = []
    original = trace_kl_elbo.check_model_guide_match
    monkeypatch.setattr(
        trace_kl_elbo,
        "check_model_guide_match",
        lambda *args: calls.append(1) or original(*args),
    )
    model, guide, loader, _, _ = classification_problem()
    assert len(loader) == 3
    with pyro.validation_enabled(True):
        fit(model, guide, loader, epochs=2, progress=False)
        assert infer_util.is_validation_enabled()
    # The first call of the guide (fit's set-up) is not an ELBO evaluation.
    assert len(calls) == 2
