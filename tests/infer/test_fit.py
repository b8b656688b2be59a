import math

import pyro
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from torch.utils.data import DataLoader, TensorDataset

from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.infer import NonFiniteLossError, TraceKL_ELBO, fit
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood, normal_prior

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


@pytest.mark.parametrize("validate", [True, False])
def test_non_finite_loss_stops_and_keeps_the_last_good_state(validate):
    model, guide, loader, x, y = classification_problem()
    good = (x[:32], y[:32])
    overflow = (x[32:64] * 1e38, y[32:64])  # finite inputs, non-finite logits
    pyro.set_rng_seed(5)
    fit(model, guide, [good], epochs=1, lr=0.01, progress=False)
    expected = parameters(model, guide)

    pyro.set_rng_seed(0)
    model2, guide2, _, _, _ = classification_problem()
    pyro.set_rng_seed(5)
    # The logits overflow to NaN; with or without Pyro's validation the loss is NaN and the guard
    # stops training before the optimizer step, so no parameter changes.
    with pyro.validation_enabled(validate), pytest.raises(NonFiniteLossError, match="step 2"):
        fit(model2, guide2, [good, overflow], epochs=1, lr=0.01, progress=False)
    state = parameters(model2, guide2)
    assert all(torch.equal(v, state[k]) for k, v in expected.items())


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
