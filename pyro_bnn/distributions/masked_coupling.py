"""One step of the masked RealNVP flow of multiplicative normalizing flows."""

from __future__ import annotations

import torch
from pyro.nn import DenseNN
from torch import nn


class MaskedCoupling(nn.Module):
    r"""A masked RealNVP step with the numerically stable gated update of inverse autoregressive
    flows (Louizos and Welling, 2017, Eq. 51 of the thesis):

    .. math::
        h = \tanh(f(m \odot z)), \quad \mu = g(h), \quad \sigma = \mathrm{sigmoid}(k(h)),

        z' = m \odot z + (1 - m) \odot (z \odot \sigma + (1 - \sigma) \odot \mu),

        \log\left|\det \frac{\partial z'}{\partial z}\right| = \sum_i (1 - m_i) \log \sigma_i,

    with ``f``, ``g``, ``k`` affine maps: one hidden layer of ``hidden_dim`` tanh units and two
    heads, a :class:`pyro.nn.DenseNN`.  Given the mask the Jacobian is triangular (the masked
    entries pass unchanged, the others depend on them only through ``mu`` and ``sigma``), so
    the log-determinant is exact.  The mask is an argument: the flow draws it afresh for every
    draw (:class:`~pyro_bnn.distributions.MaskedFlow`), which is why this step is not a
    deterministic ``Transform``.

    The biases start at zero and the gate's at ``gate_bias`` (2, so ``sigma = 0.88`` where the
    kept entries are zero, as in the authors' code): the step starts near the identity.

    :param dim: the size of ``z``.
    :param hidden_dim: the number of hidden units of ``f``.
    :param gate_bias: the initial bias of ``k``.
    """

    def __init__(self, dim: int, hidden_dim: int = 50, gate_bias: float = 2.0):
        super().__init__()
        for name, value in (("dim", dim), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"MaskedCoupling: {name} must be a positive integer, got {value!r}"
                )
        self.dim = dim
        self.net = DenseNN(dim, [hidden_dim], param_dims=[dim, dim], nonlinearity=nn.Tanh())
        with torch.no_grad():
            for layer in self.net.layers:
                layer.bias.zero_()
            self.net.layers[-1].bias[dim:].fill_(gate_bias)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z', log |det dz'/dz|)`` for ``z`` of shape ``(..., dim)`` and a mask that
        broadcasts to it (``1`` keeps an entry); the log-determinant has shape ``(...)``."""
        if z.shape[-1:] != (self.dim,) or torch.broadcast_shapes(mask.shape, z.shape) != z.shape:
            raise ValueError(
                f"MaskedCoupling over {self.dim} entries needs z of shape (..., {self.dim}) and "
                f"a mask that broadcasts to it, got {tuple(z.shape)} and {tuple(mask.shape)}"
            )
        mu, pre_sigma = self.net(mask * z)
        sigma = torch.sigmoid(pre_sigma)
        out = mask * z + (1 - mask) * (z * sigma + (1 - sigma) * mu)
        log_det = ((1 - mask) * nn.functional.logsigmoid(pre_sigma)).sum(-1)
        return out, log_det

    def inverse(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The ``z`` that :meth:`forward` maps to ``y`` with ``mask``."""
        mu, pre_sigma = self.net(mask * y)  # the masked entries of z and y agree
        sigma = torch.sigmoid(pre_sigma)
        return mask * y + (1 - mask) * (y - (1 - sigma) * mu) / sigma
