import math

import pytest
import torch
from torch import nn

from pyro_bnn.guides import AutoSiteGuide
from pyro_bnn.models import BayesianNetwork, GaussianLikelihood, normal_prior

NUM_DATA, NUM_FEATURES, NOISE = 50, 3, 0.5


@pytest.fixture
def conjugate_regression():
    """Bayesian linear regression with a N(0, 1) prior and known noise on an orthogonal design
    (X^T X = N I), so the exact posterior factorizes and a mean-field guide can equal it:
    ``(model, guide, x, y, posterior mean, posterior standard deviations)``; the guide is set
    to the exact posterior."""
    generator = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(NUM_DATA, NUM_FEATURES, generator=generator))
    x = q * math.sqrt(NUM_DATA)
    w = torch.tensor([1.0, -0.5, 0.25])
    y = x @ w + NOISE * torch.randn(NUM_DATA, generator=generator)
    precision = torch.eye(NUM_FEATURES) + x.T @ x / NOISE**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ x.T @ y / NOISE**2
    model = BayesianNetwork(
        nn.Linear(NUM_FEATURES, 1, bias=False),
        GaussianLikelihood(NUM_DATA, scale=NOISE),
        prior=normal_prior(1.0),
    )
    guide = AutoSiteGuide(model)
    guide(x, y)
    set_normal_guide(guide, "net.weight", mean[None], covariance.diagonal()[None].sqrt())
    return model, guide, x, y, mean, covariance.diagonal().sqrt()


def set_normal_guide(guide, site: str, loc: torch.Tensor, scale: torch.Tensor) -> None:
    """Set a Normal-family site of an AutoSiteGuide to N(loc, scale^2)."""
    params = dict(guide.named_parameters())
    with torch.no_grad():
        params[f"params.{site}.loc_unconstrained"].copy_(loc)
        params[f"params.{site}.log_variance_unconstrained"].copy_(2 * scale.log())
