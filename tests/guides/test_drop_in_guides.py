"""The same model trained with the mean-field, matrix-normal or flow guide by changing one line:
training, prediction, Pyro's Predictive, checkpoints and compression reports work with all."""

import pyro
import pytest
import torch
from pyro.infer import Predictive
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyro_bnn import fit, predict
from pyro_bnn.compression.rules import signal_to_noise_masks
from pyro_bnn.compression.sparse_vd import compression_report, prune
from pyro_bnn.guides import AutoSiteGuide
from pyro_bnn.infer import load_checkpoint, save_checkpoint
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood, normal_prior

FAMILIES = ["normal", "matrix_normal", "multiplicative_flow"]


def _problem():
    torch.manual_seed(0)
    x = torch.randn(48, 1, 6, 6)
    y = (x.mean((1, 2, 3)) > 0).long()
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    model = BayesianNetwork(net, CategoricalLikelihood(48, 2), prior=normal_prior(1.0))
    return model, x, y


@pytest.mark.parametrize("family", FAMILIES)
def test_one_line_swaps_the_guide(family, tmp_path):
    pyro.clear_param_store()
    model, x, y = _problem()
    guide = AutoSiteGuide(model, families={"net.*.weight": family})  # the one line
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    history = fit(model, guide, loader, epochs=2, lr=0.01, progress=False)
    assert len(history) == 2

    prediction = predict(model, guide, x[:5], num_samples=6)
    assert prediction.probs_samples.shape == (6, 5, 2)
    assert torch.allclose(prediction.probs.sum(-1), torch.ones(5))
    samples = Predictive(model, guide=guide, num_samples=4, return_sites=["obs"])(x[:5])
    assert samples["obs"].shape == (4, 5)

    report = compression_report(prune(guide))
    assert report.total == 3 * 9 + 48 * 2
    masks = signal_to_noise_masks(model, guide, keep_fraction=0.5)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.5 * report.total)

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model=model, guide=guide)
    before = {k: v.clone() for k, v in guide.state_dict().items()}
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(1.0)
    load_checkpoint(path, model=model, guide=guide)
    after = guide.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_checkpoint_of_another_guide_family_is_refused(tmp_path):
    pyro.clear_param_store()
    model, x, y = _problem()
    guide = AutoSiteGuide(model, families={"net.*.weight": "matrix_normal"})
    guide(x, y)
    save_checkpoint(tmp_path / "mn.pt", model=model, guide=guide)
    pyro.clear_param_store()
    other = AutoSiteGuide(model, families={"net.*.weight": "multiplicative_flow"})
    other(x, y)
    with pytest.raises(Exception, match="(?i)guide"):
        load_checkpoint(tmp_path / "mn.pt", model=model, guide=other)
