"""The Gamma hyper-prior on a layer's row and column precisions (thesis Sec. 3.2)."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn
from torch.distributions import kl_divergence

from pyro_bnn import fit, predict
from pyro_bnn.compression.rules import layer_posteriors
from pyro_bnn.guides import AutoSiteGuide, LocalReparameterizedMatrixNormal
from pyro_bnn.models import (
    BayesianNetwork,
    GammaPrecisionPrior,
    GaussianLikelihood,
    gamma_precision_prior,
)


def _regression(num_data=32):
    torch.manual_seed(0)
    x = torch.randn(num_data, 3)
    y = x[:, 0] - 0.5 * x[:, 1] + 0.1 * torch.randn(num_data)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    model = BayesianNetwork(
        net, GaussianLikelihood(num_data), prior=gamma_precision_prior(), include_bias=True
    )
    return model, x, y


def test_model_issues_the_precision_sites_and_the_conditional_prior():
    model, x, y = _regression()
    tau = {"net.0.weight.row_precision": torch.tensor(4.0), "net.0.weight.col_precision": 0.25}
    trace = poutine.trace(poutine.condition(model, tau)).get_trace(x, y)
    for name in ("net.0.weight", "net.2.weight"):
        for side in ("row", "col"):
            site = trace.nodes[f"{name}.{side}_precision"]
            assert isinstance(site["fn"], dist.Gamma)
            assert site["fn"].concentration == 1.0 and site["fn"].rate == 0.5
    weight = trace.nodes["net.0.weight"]["fn"]
    assert weight.event_shape == (8, 3)
    assert torch.allclose(weight.base_dist.scale, torch.ones(8, 3))  # 1 / sqrt(4 * 0.25)
    assert isinstance(trace.nodes["net.0.bias"]["fn"].base_dist, dist.Normal)


def test_expected_kl_matches_the_closed_form_of_the_thesis():
    # E_q(tau)[KL(q(W) || N(0, 1/(tau_r tau_c)))] with log-normal q(tau) against the thesis's
    # E[KL] = 1/2 [E tau_r E tau_c (tr U tr V + |M|^2) - rc - rc E log tau_r - rc E log tau_c
    #              - c log|U| - r log|V|], U = diag(row_var) (r x r), V = diag(col_var) (c x c).
    torch.manual_seed(0)
    rows, cols = 5, 3
    loc = torch.randn(cols, rows)
    row_lv, col_lv = torch.randn(rows) - 1, torch.randn(cols) - 1
    q_w = LocalReparameterizedMatrixNormal(loc, row_lv, col_lv)
    q_r, q_c = dist.LogNormal(0.3, 0.2), dist.LogNormal(-0.2, 0.4)
    tau_r, tau_c = q_r.sample((200_000,)), q_c.sample((200_000,))
    scale = (tau_r * tau_c).rsqrt()[:, None, None]
    monte_carlo = kl_divergence(q_w, dist.Normal(0.0, scale.expand(-1, cols, rows))).sum((1, 2))
    e_r, e_c = q_r.mean, q_c.mean
    closed = 0.5 * (
        e_r * e_c * (row_lv.exp().sum() * col_lv.exp().sum() + loc.square().sum())
        - rows * cols
        - rows * cols * (q_r.loc + q_c.loc)
        - cols * row_lv.sum()
        - rows * col_lv.sum()
    )
    assert monte_carlo.mean().item() == pytest.approx(closed.item(), rel=5e-3)


def test_trains_with_the_matrix_normal_guide_and_predicts():
    pyro.clear_param_store()
    model, x, y = _regression()
    guide = AutoSiteGuide(model, families={"net.*.weight": "matrix_normal"})
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    history = fit(model, guide, loader, epochs=3, lr=0.01, progress=False)
    assert len(history) == 3
    fn = guide.get_posterior("net.0.weight.row_precision")
    assert isinstance(fn, dist.LogNormal)
    assert predict(model, guide, x[:4], num_samples=5).mean.shape == (4,)
    with pytest.raises(ValueError, match="GammaPrecisionPrior prior, which has no pruning rule"):
        layer_posteriors(model, guide)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"concentration": 0.0}, "concentration must be positive"),
        ({"rate": -1.0}, "rate must be positive"),
        ({"bias_scale": 0.0}, "bias prior's scale"),
    ],
)
def test_bad_hyper_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gamma_precision_prior(**kwargs)


def test_a_prior_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="batch shape \\(2, 2\\)"):
        BayesianNetwork(
            nn.Linear(3, 2), GaussianLikelihood(4), prior=lambda n, p: GammaPrecisionPrior((2, 2))
        )
