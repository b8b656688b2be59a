"""The spike-and-slab families: relaxed training samples, exact prediction samples, the
registered KL of the thesis's free energy, and the median probability model."""

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import kl_divergence

from pyro_bnn.distributions import SpikeAndSlab
from pyro_bnn.guides import (
    AutoSiteGuide,
    RelaxedInclusion,
    RelaxedSpikeAndSlab,
    SpikeAndSlabFamily,
    local_reparameterization,
)
from pyro_bnn.infer import TraceKL_ELBO
from pyro_bnn.ops import GaussianWeight


def model(x, y=None):
    prior = SpikeAndSlab(torch.full((2, 3), 0.3), torch.zeros(2, 3), torch.ones(2, 3))
    weight = pyro.sample("w", prior.to_event(2))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("obs", dist.Normal(F.linear(x, weight), 1.0).to_event(1), obs=y)


def test_training_sample_is_a_gaussian_weight_and_prediction_samples_are_exact():
    posterior = RelaxedSpikeAndSlab(torch.full((4,), 0.5), torch.ones(4), torch.ones(4))
    assert isinstance(posterior.rsample(), GaussianWeight)
    with local_reparameterization(False):
        draws = posterior.rsample((20_000,))
    assert ((draws == 0).float().mean() - 0.5).abs() < 0.02
    inclusion = RelaxedInclusion(torch.tensor(2 / 3), probs=torch.full((20_000,), 0.3))
    with local_reparameterization(False):
        hard = inclusion.rsample()
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert (hard.mean() - 0.3).abs() < 0.02


def test_kl_is_bernoulli_kl_plus_pi_times_slab_kl():
    """The thesis's free energy (App. 10.5.1, Eq. 158-159), computed by hand."""
    pi, pi0 = torch.tensor([0.2, 0.9]), torch.tensor(0.3)
    loc, scale = torch.tensor([0.5, -1.0]), torch.tensor([0.3, 2.0])
    q = RelaxedSpikeAndSlab(pi, loc, scale)
    p = SpikeAndSlab(pi0.expand(2), torch.zeros(2), torch.ones(2))
    bernoulli = pi * (pi / pi0).log() + (1 - pi) * ((1 - pi) / (1 - pi0)).log()
    slab = 0.5 * (scale.square() + loc.square() - 1 - scale.square().log())
    torch.testing.assert_close(kl_divergence(q, p), bernoulli + pi * slab)
    relaxed = RelaxedInclusion(torch.tensor(0.5), probs=pi)
    torch.testing.assert_close(kl_divergence(relaxed, dist.Bernoulli(pi0)), bernoulli)


def test_default_family_trains_and_its_median_has_exact_zeros():
    x = torch.randn(64, 3)
    y = F.linear(x, torch.tensor([[2.0, 0.0, 0.0], [0.0, -1.5, 0.0]])) + 0.1 * torch.randn(64, 2)
    guide = AutoSiteGuide(model)
    guide(x, y)
    assert isinstance(guide.family("w"), SpikeAndSlabFamily)
    optimizer = torch.optim.Adam(guide.parameters(), lr=0.05)
    elbo = TraceKL_ELBO()
    for _ in range(300):
        optimizer.zero_grad()
        elbo.differentiable_loss(model, guide, x, y).backward()
        optimizer.step()
    median = guide.median()["w"]
    # The two weights the data need are kept near their values; the others are exactly zero.
    assert median[0, 0] == pytest.approx(2.0, abs=0.2)
    assert median[1, 1] == pytest.approx(-1.5, abs=0.2)
    assert (median[0, 1:] == 0).all() and median[1, 0] == 0 and median[1, 2] == 0
