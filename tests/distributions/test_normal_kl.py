"""The Normal-Normal KL from a guide's log-variance, against torch's closed form."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pyro_bnn.distributions.kl import normal_kl_normal
from pyro_bnn.guides import LocalReparameterizedNormal


def _guide_parameters(shape, generator):
    loc = torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_()
    log_variance = torch.randn(shape, generator=generator, dtype=torch.float64) - 3
    return loc, log_variance.requires_grad_()


@pytest.mark.parametrize("prior", ["constant", "full", "learned"])
def test_value_and_gradients_match_torch(prior):
    generator = torch.Generator().manual_seed(0)
    loc, log_variance = _guide_parameters((7, 5), generator)
    if prior == "constant":
        prior_loc = torch.tensor(0.3, dtype=torch.float64).expand(7, 5)
        prior_scale = torch.tensor(1.7, dtype=torch.float64).expand(7, 5)
    else:
        prior_loc = torch.randn(7, 5, generator=generator, dtype=torch.float64)
        prior_scale = torch.rand(7, 5, generator=generator, dtype=torch.float64) + 0.5
        if prior == "learned":
            prior_loc.requires_grad_()
            prior_scale.requires_grad_()
    weights = torch.rand(7, 5, generator=generator, dtype=torch.float64)
    ours = normal_kl_normal(loc, log_variance, prior_loc, prior_scale)
    inputs = [loc, log_variance] + ([prior_loc, prior_scale] if prior == "learned" else [])
    ours_grads = torch.autograd.grad((ours * weights).sum(), inputs)
    reference = kl_divergence(
        Normal(loc, (0.5 * log_variance).exp()), Normal(prior_loc, prior_scale)
    )
    reference_grads = torch.autograd.grad((reference * weights).sum(), inputs)
    torch.testing.assert_close(ours, reference)
    for mine, theirs in zip(ours_grads, reference_grads, strict=True):
        torch.testing.assert_close(mine, theirs)


def test_gradcheck_of_the_hand_written_gradient():
    generator = torch.Generator().manual_seed(1)
    loc, log_variance = _guide_parameters((4, 3), generator)
    prior_loc = torch.zeros(4, 3, dtype=torch.float64)
    prior_scale = torch.full((4, 3), 0.5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda m, v: normal_kl_normal(m, v, prior_loc, prior_scale), (loc, log_variance)
    )


def test_guide_distribution_dispatches_to_it():
    generator = torch.Generator().manual_seed(2)
    loc, log_variance = _guide_parameters((6, 4), generator)
    guide = LocalReparameterizedNormal(loc, log_variance=log_variance)
    prior = Normal(torch.tensor(0.0, dtype=torch.float64), 2.0).expand((6, 4))
    reference = kl_divergence(Normal(loc, (0.5 * log_variance).exp()), prior)
    torch.testing.assert_close(kl_divergence(guide, prior), reference)
    # A guide given its scale instead, and a prior larger than the guide, use the general form.
    scaled = LocalReparameterizedNormal(loc, (0.5 * log_variance).exp())
    torch.testing.assert_close(kl_divergence(scaled, prior), reference)
    wide = Normal(torch.zeros(3, 6, 4, dtype=torch.float64), 2.0)
    assert kl_divergence(guide, wide).shape == (3, 6, 4)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        normal_kl_normal(torch.zeros(3), torch.zeros(4), torch.zeros(()), torch.ones(()))
