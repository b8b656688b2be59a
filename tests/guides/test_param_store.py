"""The guide's parameters and Pyro's parameter store agree, in all three ways users meet them."""

import pyro
import pytest
import torch
from pyro.infer import SVI

from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.infer import TraceKL_ELBO

from ..infer.common import QuickStart, quick_start_data


def notebook_cell(steps=150):
    """The README's quick-start loop, as a notebook cell that a user may run twice."""
    x, y = quick_start_data()
    model = QuickStart()
    guide = AutoMeanFieldNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), TraceKL_ELBO())
    losses = [svi.step(x, y) for _ in range(steps)]
    return guide, losses


def test_a_rerun_cell_trains():
    first_guide, first = notebook_cell()
    second_guide, second = notebook_cell()
    assert first[-1] < first[0] / 5
    # The second run continues from the stored values (as with Pyro's own autoguides) and the
    # optimizer moves the tensors the guide computes with: the loss is not flat, and the new
    # guide's parameters are the ones in the store.
    assert second[0] < first[0] / 5
    assert max(second) - min(second) > 0
    store = pyro.get_param_store()
    for name, value in second_guide.named_parameters():
        stored = store._params[f"AutoMeanFieldNormal.{name.removesuffix('_unconstrained')}"]
        assert stored is value
    # A third cell that keeps training moves what the second guide reads.
    before = second_guide.median()["linear.weight"].clone()
    x, y = quick_start_data()
    svi = SVI(QuickStart(), second_guide, pyro.optim.Adam({"lr": 0.05}), TraceKL_ELBO())
    svi.step(x, y)
    assert not torch.equal(second_guide.median()["linear.weight"], before)


def test_param_store_save_and_load_round_trip(tmp_path):
    guide, _ = notebook_cell()
    trained = guide.median()["linear.weight"].clone()
    log_alpha = guide.log_alpha()["linear.weight"].clone()
    path = tmp_path / "params.pt"
    pyro.get_param_store().save(path)

    pyro.clear_param_store()
    x, y = quick_start_data()
    fresh = AutoMeanFieldNormal(QuickStart())
    fresh(x, y)
    assert not torch.allclose(fresh.median()["linear.weight"], trained)
    pyro.get_param_store().load(path)
    # Loading after the guide exists: its next read picks up the stored values.
    torch.testing.assert_close(fresh.median()["linear.weight"], trained)
    torch.testing.assert_close(fresh.log_alpha()["linear.weight"], log_alpha)

    pyro.clear_param_store()
    pyro.get_param_store().load(path)
    restored = AutoMeanFieldNormal(QuickStart())
    restored(x, y)  # building the guide after loading adopts the stored values too
    torch.testing.assert_close(restored.median()["linear.weight"], trained)


def test_module_local_params():
    x, y = quick_start_data()
    with pyro.settings.context(module_local_params=True):
        model = QuickStart()
        guide = AutoMeanFieldNormal(model)
        guide(x, y)
        # The parameters live in the guide: torch's optimizer over guide.parameters() trains it
        # (Pyro's recipe for module-local parameters), and nothing reaches the global store.
        elbo = TraceKL_ELBO()
        optimizer = torch.optim.Adam(guide.parameters(), lr=0.05)
        losses = []
        for _ in range(150):
            optimizer.zero_grad()
            loss = elbo.differentiable_loss(model, guide, x, y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0] / 5
        assert len(pyro.get_param_store()) == 0
        weight = guide.median()["linear.weight"].squeeze()
        assert weight[0] == pytest.approx(2.0, abs=0.15)
        assert weight[1] == pytest.approx(-1.0, abs=0.15)

        # Pyro's SVI with a pyro.optim optimizer trains it too.
        other = AutoMeanFieldNormal(QuickStart())
        svi = SVI(model, other, pyro.optim.Adam({"lr": 0.05}), TraceKL_ELBO())
        losses = [svi.step(x, y) for _ in range(150)]
        assert losses[-1] < losses[0] / 5
        assert len(pyro.get_param_store()) == 0
