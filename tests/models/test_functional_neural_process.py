"""The functional neural process as a Pyro model: graphs, priors, the bound, prediction."""

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn

import pyro_bnn
from pyro_bnn.guides import FunctionalNeuralProcessGuide
from pyro_bnn.models import FunctionalNeuralProcess, choose_reference_set, split_reference_set


def _regression(reference=3, num_data=4, plus=False, free_bits=None, **kwargs):
    generator = torch.Generator().manual_seed(0)
    x_r = torch.randn(reference, 2, generator=generator)
    y_r = torch.randn(reference, generator=generator)
    torso = nn.Sequential(nn.Linear(2, 8), nn.ReLU())
    model = FunctionalNeuralProcess(
        torso, 8, x_r, y_r, num_data, dim_u=2, dim_z=3, plus=plus, free_bits=free_bits,
        output_hidden=5, **kwargs,
    )  # fmt: skip
    return model, FunctionalNeuralProcessGuide(model)


def _classifier(reference=6, num_data=10, plus=True):
    generator = torch.Generator().manual_seed(0)
    x_r = torch.randn(reference, 1, 6, 6, generator=generator)
    y_r = torch.arange(reference) % 3
    torso = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 8), nn.ReLU())
    model = FunctionalNeuralProcess(
        torso, 8, x_r, y_r, num_data, num_classes=3, dim_u=2, dim_z=4, plus=plus
    )
    return model, FunctionalNeuralProcessGuide(model)


def test_a_point_without_parents_gets_the_standard_normal_prior():
    messages = (torch.randn(4, 3), torch.randn(4, 3))
    prior = FunctionalNeuralProcess.conditional_prior(torch.zeros(2, 4), messages)
    torch.testing.assert_close(prior.base_dist.loc, torch.zeros(2, 3))
    torch.testing.assert_close(prior.base_dist.scale, torch.ones(2, 3))


def test_the_conditional_prior_averages_the_parents_messages():
    loc, log_scale = torch.randn(4, 3), torch.randn(4, 3)
    adjacency = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    prior = FunctionalNeuralProcess.conditional_prior(adjacency, (loc, log_scale))
    torch.testing.assert_close(prior.base_dist.loc[0], (loc[0] + loc[2]) / 2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(prior.base_dist.scale[1], log_scale[3].exp(), rtol=1e-6, atol=1e-6)


def test_the_model_samples_an_acyclic_reference_graph():
    model, _ = _regression(reference=12)
    x, y = torch.randn(4, 2), torch.randn(4)
    trace = poutine.trace(model).get_trace(x, y)
    dag = trace.nodes["reference.dag"]["value"]
    assert dag.shape == (12, 12)
    order = pyro_bnn.distributions.dag_order(trace.nodes["reference.u"]["value"])
    child, parent = (dag > 0).nonzero(as_tuple=True)
    assert (order[parent] < order[child]).all()
    assert trace.nodes["parents"]["value"].shape == (4, 12)


def _data_plate_terms(model, guide, x, y, values=None):
    """The data plate's share of the bound, sum of scaled log p - log q over its sites, for one
    run of the guide (conditioned on ``values`` when given) and the model replayed on it."""
    guide_trace = poutine.trace(poutine.condition(guide, data=values or {})).get_trace(x, y)
    drawn = {
        name: node["value"]
        for name, node in guide_trace.nodes.items()
        if node["type"] == "sample" and name not in ("data", "reference")
    }
    model_trace = poutine.trace(poutine.condition(model, data=drawn)).get_trace(x, y)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    total = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for node in trace.nodes.values():
            if node["type"] == "sample" and any(f.name == "data" for f in node["cond_indep_stack"]):
                total += sign * node["log_prob"].sum().item()
    return total, guide_trace


def test_minibatch_terms_scaled_by_m_over_batch_average_to_the_full_batch():
    # L_{M|R} over all of M, against the mean over a partition of M into mini-batches, each
    # scaled by |M| / |M_hat|, with the same latent values for every point (Eq. 134-137).
    model, guide = _regression(reference=3, num_data=4)
    x, y = torch.randn(4, 2), torch.randn(4)
    with torch.no_grad():
        full, trace = _data_plate_terms(model, guide, x, y)
        shared = {
            name: trace.nodes[name]["value"]
            for name in ("reference.u", "reference.dag", "reference.z")
        }
        batches = []
        for index in (torch.tensor([0, 1]), torch.tensor([2, 3])):
            values = dict(shared)
            for name in ("u", "parents", "z"):
                values[name] = trace.nodes[name]["value"][index]
            batches.append(_data_plate_terms(model, guide, x[index], y[index], values)[0])
    assert sum(batches) / 2 == pytest.approx(full, rel=1e-5)


def test_embeddings_and_graphs_cancel_between_model_and_guide():
    model, guide = _regression()
    x, y = torch.randn(4, 2), torch.randn(4)
    guide_trace = poutine.trace(guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    for name in ("reference.u", "u", "parents", "reference.dag"):
        p = model_trace.nodes[name]["fn"].log_prob(model_trace.nodes[name]["value"])
        q = guide_trace.nodes[name]["fn"].log_prob(guide_trace.nodes[name]["value"])
        assert torch.equal(p, q)


def test_free_bits_weight_rises_above_the_budget_and_falls_below():
    model, _ = _regression(free_bits=1.0)
    # The authors' start: the KL of z is free at first.
    assert model.free_bits_weight.item() == pytest.approx(1e-8)
    model.free_bits_weight.fill_(0.5)
    weight = 0.5
    model.update_free_bits(torch.tensor(1e6), num_points=7)
    assert model.free_bits_weight.item() == pytest.approx(1.1 * weight)
    model.update_free_bits(torch.tensor(0.0), num_points=7)
    assert model.free_bits_weight.item() == pytest.approx(0.99 * weight)


@pytest.mark.parametrize("plus", [False, True])
def test_classifier_trains_and_predicts_with_pyro_bnn_and_pyro(plus):
    model, guide = _classifier(plus=plus)
    x, y = torch.randn(10, 1, 6, 6), torch.arange(10) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    history = pyro_bnn.fit(model, guide, loader, epochs=3, lr=1e-2, progress=False)
    assert len(history) == 3
    model.eval()
    prediction = pyro_bnn.predict(model, guide, torch.randn(7, 1, 6, 6), num_samples=11)
    assert prediction.probs_samples.shape == (11, 7, 3)
    torch.testing.assert_close(prediction.probs.sum(-1), torch.ones(7))
    predictive = pyro.infer.Predictive(model, guide=guide, num_samples=4)(torch.randn(5, 1, 6, 6))
    assert predictive["obs"].shape == (4, 5)
    assert predictive["parents"].shape == (4, 5, 6)
    assert set(predictive["parents"].unique().tolist()) <= {0.0, 1.0}  # hard edges


def test_features_are_shared_by_guide_and_model_within_a_step():
    model, guide = _regression()
    calls = []
    model.torso.register_forward_hook(lambda *args: calls.append(1))
    x, y = torch.randn(4, 2), torch.randn(4)
    loss = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x, y)
    assert len(calls) == 1
    loss.backward()
    with torch.no_grad():
        for parameter in model.torso.parameters():
            parameter.add_(0.01)  # an optimizer step: the torso must run again
    pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x, y)
    assert len(calls) == 2


def test_reference_sets_random_stratified_and_bad_input():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    index = choose_reference_set(labels, 10, "stratified", seed=1)
    assert torch.bincount(labels[index]).tolist() == [6, 3, 1]
    assert len(choose_reference_set(labels, 10).unique()) == 10
    (x_r, y_r), rest = split_reference_set(
        torch.utils.data.TensorDataset(torch.randn(100, 2), labels), 20
    )
    assert len(x_r) == 20 and len(rest) == 80
    with pytest.raises(ValueError, match="leaves none"):
        choose_reference_set(labels, 100)
    with pytest.raises(ValueError, match="positive integer"):
        choose_reference_set(labels, 0)
    with pytest.raises(ValueError, match="unknown strategy"):
        choose_reference_set(labels, 5, "nearest")


def test_bad_input_gets_clear_errors():
    model, guide = _regression()
    with pytest.raises(ValueError, match="at least one point"):
        model.set_reference(torch.empty(0, 2), torch.empty(0))
    with pytest.raises(ValueError, match="3 inputs but 2 targets"):
        model.set_reference(torch.randn(3, 2), torch.randn(2))
    with pytest.raises(ValueError, match="NaN"):
        model.set_reference(torch.full((3, 2), float("nan")), torch.randn(3))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model(torch.randn(4, 5), torch.randn(4))
    with pytest.raises(ValueError, match="NaN"):
        pyro_bnn.fit(
            model,
            guide,
            [(torch.full((4, 2), float("nan")), torch.randn(4))],
            epochs=1,
            progress=False,
        )
    classifier, _ = _classifier()
    with pytest.raises(ValueError, match=r"0\.\.2"):
        classifier.check_targets(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="dim_z must be a positive integer"):
        _regression(dim_z=0) if False else FunctionalNeuralProcess(
            nn.Identity(), 2, torch.randn(3, 2), torch.randn(3), 4, dim_z=0
        )
    with pytest.raises(TypeError, match="FunctionalNeuralProcess"):
        FunctionalNeuralProcessGuide(nn.Linear(2, 2))


def test_prediction_reuses_the_reference_features_until_the_reference_set_changes():
    model, guide = _regression(reference=5)
    calls = []
    model.torso.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    model.eval()
    with torch.no_grad():
        first = model.features(torch.randn(3, 2))[0]
        model.features(torch.randn(4, 2))
        assert calls == [5, 3, 4]
        model.set_reference(torch.randn(6, 2), torch.randn(6))
        replaced = model.features(torch.randn(2, 2))[0]
    assert calls == [5, 3, 4, 6, 2]
    assert first.shape == (5, 8) and replaced.shape == (6, 8)


def test_a_second_loss_on_the_same_batch_runs_the_torso_afresh():
    # Gradient accumulation: two losses and backward passes on one batch without a step.
    model, guide = _regression()
    x, y = torch.randn(4, 2), torch.randn(4)
    for _ in range(2):
        pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x, y).backward()


def test_shared_sites_are_left_out_of_both_densities():
    model, guide = _regression()
    x, y = torch.randn(4, 2), torch.randn(4)
    guide_trace = poutine.trace(guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    for trace in (guide_trace, model_trace):
        trace.compute_log_prob()
        for name in ("reference.u", "u", "parents", "reference.dag"):
            assert (trace.nodes[name]["log_prob"] == 0).all()
        assert trace.nodes["z"]["log_prob"].abs().sum() > 0


def test_prediction_sees_parameters_a_fused_optimizer_changed_in_place():
    model, _ = _regression(reference=5)
    model.eval()
    x = torch.randn(3, 2)
    with torch.no_grad():
        before = model.features(x)[0].clone()
    optimizer = torch.optim.Adam(model.torso.parameters(), lr=0.1, fused=True)
    model.torso(torch.randn(4, 2)).square().sum().backward()
    optimizer.step()  # in place, without bumping the parameters' version counters
    with torch.no_grad():
        after = model.features(x)[0]
        expected = model.torso(model.reference_x)
    torch.testing.assert_close(after, expected)
    assert not torch.equal(after, before)


def test_guide_draws_without_gradients_leave_the_free_bits_alone():
    model, guide = _regression(free_bits=1.0)
    x, y = torch.randn(4, 2), torch.randn(4)
    before = model.free_bits_weight.clone()
    with torch.no_grad():
        poutine.trace(guide).get_trace(x, y)
    assert torch.equal(model.free_bits_weight, before)
    pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x, y)  # a training step moves it
    assert not torch.equal(model.free_bits_weight, before)


def test_partial_differentiation_is_exact_in_value_and_unbiased_in_gradient():
    from itertools import combinations

    from models.functional_neural_process import partially_differentiated

    torch.manual_seed(0)
    function = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    inputs, also = torch.randn(5, 3), torch.randn(2, 3)
    weights = torch.randn(7, 4)

    def loss_and_gradients(rows=None):
        function.zero_grad()
        if rows is None:
            features = function(torch.cat([inputs, also]))
        else:
            order = list(rows) + [i for i in range(5) if i not in rows]
            permutation = torch.tensor(order)
            drawn, rest = partially_differentiated(function, inputs[permutation], len(rows), also)
            features = torch.cat([drawn[permutation.argsort()], rest])
        loss = (features.sin() * weights).sum()  # non-linear in the features
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in function.parameters()]

    full_loss, full = loss_and_gradients()
    subsets = list(combinations(range(5), 2))
    average = [torch.zeros_like(g) for g in full]
    for rows in subsets:
        loss, gradients = loss_and_gradients(rows)
        torch.testing.assert_close(loss, full_loss)  # the values are exact
        assert not all(torch.allclose(g, f) for g, f in zip(gradients, full, strict=True))
        for total, g in zip(average, gradients, strict=True):
            total += g / len(subsets)
    for a, f in zip(average, full, strict=True):  # averaged over every draw of 2 of 5 rows: exact
        torch.testing.assert_close(a, f, rtol=1e-5, atol=1e-6)


def test_partial_differentiation_refuses_a_size_outside_the_rows():
    from models.functional_neural_process import partially_differentiated

    with pytest.raises(ValueError, match="k must lie in 1..3"):
        partially_differentiated(nn.Identity(), torch.randn(3, 2), 0)
    with pytest.raises(ValueError, match="reference_gradient_size must be a positive integer"):
        _regression(reference_gradient_size=0)


def test_a_reference_gradient_size_leaves_the_bound_and_the_heads_gradients_unchanged():
    x, y = torch.randn(4, 2), torch.randn(4)

    def step(size):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)  # the same initial parameters
        model, guide = _regression(reference=6, reference_gradient_size=size)
        model.train()
        pyro.set_rng_seed(1)
        if size is None:
            torch.randperm(6)  # the draw of the subset, so that both see the same noise after
        guide_trace = poutine.trace(guide).get_trace(x, y)
        # The model uses the guide's torso pass (and so its subset of R).
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
        loss = guide_trace.log_prob_sum() - model_trace.log_prob_sum()
        loss.backward()
        heads = [p.grad for name, p in model.named_parameters() if not name.startswith("torso")]
        torso = [p.grad for p in model.torso.parameters()]
        return loss.detach(), heads, torso

    full_loss, full_heads, full_torso = step(None)
    loss, heads, torso = step(2)
    torch.testing.assert_close(loss, full_loss)
    for a, b in zip(heads, full_heads, strict=True):
        torch.testing.assert_close(a, b)
    assert not all(torch.allclose(a, b) for a, b in zip(torso, full_torso, strict=True))


def test_a_reference_subsample_trains_on_m_points_with_their_terms_scaled_to_R():
    x, y = torch.randn(4, 2), torch.randn(4)
    pyro.set_rng_seed(0)
    model, guide = _regression(reference=6, free_bits=1.0, reference_subsample_size=2)

    def traces(model, guide, draw_index):
        model.train()
        pyro.set_rng_seed(1)
        if draw_index:
            torch.randperm(6)  # the subsample's draw, so that both see the same noise after
        guide_trace = poutine.trace(guide).get_trace(x, y)
        replayed = poutine.replay(model, trace=guide_trace)
        model_trace = poutine.trace(replayed).get_trace(x, y)
        for trace in (guide_trace, model_trace):
            trace.compute_log_prob()
        return guide_trace, model_trace

    guide_trace, model_trace = traces(model, guide, draw_index=False)
    pyro.set_rng_seed(1)
    index = torch.randperm(6)[:2]
    assert torch.equal(model_trace.nodes["reference"]["value"], index)
    assert torch.equal(model_trace.nodes["reference.y"]["value"], model.reference_y[index])
    assert model_trace.nodes["reference.dag"]["value"].shape == (2, 2)
    assert model_trace.nodes["parents"]["value"].shape == (4, 2)
    # The same model holding only those two points as R, its terms unscaled.
    small, small_guide = _regression(reference=2, free_bits=1.0)
    small.set_reference(model.reference_x[index], model.reference_y[index])
    small.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("reference")},
        strict=False,
    )
    small_guide_trace, small_model_trace = traces(small, small_guide, draw_index=True)
    for full, part in ((guide_trace, small_guide_trace), (model_trace, small_model_trace)):
        for name in ("reference.z", "reference.y", "z", "obs"):
            if name in part.nodes:
                scale = 3.0 if name.startswith("reference") else 1.0
                torch.testing.assert_close(
                    full.nodes[name]["log_prob_sum"], scale * part.nodes[name]["log_prob_sum"]
                )
    # Prediction conditions on all of R.
    model.eval()
    with torch.no_grad():
        assert poutine.trace(guide).get_trace(x).nodes["reference.u"]["value"].shape == (6, 2)
    with pytest.raises(ValueError, match="reference_subsample_size must be a positive integer"):
        _regression(reference_subsample_size=0)


def test_the_model_reuses_the_guides_graphs_and_priors_within_a_step():
    model, guide = _classifier()
    model.train()
    x, y = torch.randn(5, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1])
    names = ("embedding_distribution", "parents_distribution", "dag_distribution", "messages",
             "conditional_prior")  # fmt: skip
    calls = dict.fromkeys(names, 0)

    def counted(name):
        method = getattr(model, name)

        def wrapper(*args):
            calls[name] += 1
            return method(*args)

        return wrapper

    for name in names:
        setattr(model, name, counted(name))

    def step():
        guide_trace = poutine.trace(guide).get_trace(x, y)
        poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
        return guide_trace

    guide_trace = step()
    # Each computed once, by the guide: two embeddings, one graph of each kind, two priors.
    assert calls == {"embedding_distribution": 2, "parents_distribution": 1,
                     "dag_distribution": 1, "messages": 1, "conditional_prior": 2}  # fmt: skip
    assert "_step_memo" not in model.__dict__  # the step ended with the model
    # Run again without the guide, the model computes its own: nothing was kept.
    poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    assert calls == {"embedding_distribution": 4, "parents_distribution": 2,
                     "dag_distribution": 2, "messages": 2, "conditional_prior": 4}  # fmt: skip
    # A parameter changed between the guide and the model: nothing the guide kept is reused.
    guide_trace = poutine.trace(guide).get_trace(x, y)
    with torch.no_grad():
        model.log_length_scale.add_(0.5)
    poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    assert calls == {"embedding_distribution": 8, "parents_distribution": 4,
                     "dag_distribution": 4, "messages": 4, "conditional_prior": 8}  # fmt: skip
