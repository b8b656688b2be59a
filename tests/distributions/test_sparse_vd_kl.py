"""The fused sparse-VD KL against its plain autograd form."""

import pytest
import torch
from torch.distributions import kl_divergence

from pyro_bnn.distributions import ImproperLogUniform
from pyro_bnn.distributions.kl import LOG_ALPHA_RANGE, sparse_vd_kl, sparse_vd_kl_normal
from pyro_bnn.guides import LocalReparameterizedNormal


def _reference(loc, log_variance):
    tiny = torch.finfo(loc.dtype).tiny
    return sparse_vd_kl(log_variance - (loc.square() + tiny).log())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_and_gradients_match_autograd(dtype):
    loc = (torch.randn(400, dtype=dtype) * 0.3).requires_grad_()
    # log alpha spans both clamped ends.
    log_variance = (torch.rand(400, dtype=dtype) * 30 - 22).requires_grad_()
    fused = sparse_vd_kl_normal(loc, log_variance)
    reference = _reference(loc, log_variance)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(fused, reference, atol=tolerance, rtol=tolerance)
    weights = torch.randn(400, dtype=dtype)
    got = torch.autograd.grad((fused * weights).sum(), (loc, log_variance))
    expected = torch.autograd.grad((reference * weights).sum(), (loc, log_variance))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=tolerance, rtol=tolerance)
    log_alpha = log_variance - loc.square().log()
    assert (log_alpha < LOG_ALPHA_RANGE[0]).any() and (log_alpha > LOG_ALPHA_RANGE[1]).any()


def test_gradcheck():
    loc = (torch.randn(30, dtype=torch.float64) * 0.3).requires_grad_()
    log_variance = (torch.randn(30, dtype=torch.float64) * 3 - 4).requires_grad_()
    assert torch.autograd.gradcheck(sparse_vd_kl_normal, (loc, log_variance))


def test_zero_mean_has_finite_gradient():
    loc = torch.zeros(3, requires_grad=True)
    log_variance = torch.full((3,), -9.0, requires_grad=True)
    sparse_vd_kl_normal(loc, log_variance).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_variance.grad).all()


def test_registered_kl_uses_the_log_variance_when_given():
    loc, log_variance = torch.randn(5, 4) * 0.2, torch.randn(5, 4) - 6
    scale = (0.5 * log_variance).exp()
    prior = ImproperLogUniform((5, 4))
    with_log_variance = kl_divergence(LocalReparameterizedNormal(loc, scale, log_variance), prior)
    from_scale = kl_divergence(torch.distributions.Normal(loc, scale), prior)
    torch.testing.assert_close(with_log_variance, from_scale, atol=1e-5, rtol=1e-5)
    expanded = LocalReparameterizedNormal(loc, scale, log_variance).expand((3, 5, 4))
    assert expanded.log_variance.shape == (3, 5, 4)
    assert kl_divergence(expanded, prior.expand((3, 5, 4))).shape == (3, 5, 4)
    # A prior with a broader batch shape than the guide broadcasts the KL to it.
    broadcast = kl_divergence(
        LocalReparameterizedNormal(loc, scale, log_variance), prior.expand((3, 5, 4))
    )
    assert broadcast.shape == (3, 5, 4)
    torch.testing.assert_close(broadcast, with_log_variance.expand(3, 5, 4))


def test_local_normal_from_log_variance_alone():
    loc, log_variance = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4).double() - 3
    normal = torch.distributions.Normal(loc, (0.5 * log_variance).exp())
    local = LocalReparameterizedNormal(loc, log_variance=log_variance)
    # Nothing but the layers' variance is computed unless asked for.
    assert "scale" not in local.__dict__
    torch.testing.assert_close(local.variance, log_variance.exp())
    assert "scale" not in local.__dict__
    value = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(local.log_prob(value), normal.log_prob(value))
    torch.testing.assert_close(local.scale, normal.scale)
    torch.testing.assert_close(local.entropy(), normal.entropy())
    prior = ImproperLogUniform((5, 4))
    torch.testing.assert_close(kl_divergence(local, prior), kl_divergence(normal, prior))

    lazy = LocalReparameterizedNormal(loc, log_variance=log_variance).expand((2, 5, 4))
    assert lazy.batch_shape == (2, 5, 4) and "scale" not in lazy.__dict__
    torch.testing.assert_close(lazy.scale, normal.scale.expand(2, 5, 4))
    assert lazy.rsample().variance.shape == (2, 5, 4)


def test_local_normal_needs_a_scale_or_log_variance():
    with pytest.raises(ValueError, match="needs a scale or a log_variance"):
        LocalReparameterizedNormal(torch.zeros(3))
