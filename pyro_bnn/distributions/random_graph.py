"""Random graphs with independent edges, and the functional neural process's edge model.

The functional neural process (Louizos et al., 2019; thesis Ch. 5) draws two graphs from the
embeddings ``u`` of its points: a DAG over the reference set, in which ``j`` may be a parent of
``i`` only if ``t(u_j) < t(u_i)`` for the ordering ``t(u) = sum_k log Phi(u_k)``, and a
bipartite graph from the reference set to every other point.  Each allowed edge is independent,
``Bernoulli(g(u_i, u_j))`` with the RBF kernel ``g(u_i, u_j) = exp(-||u_i - u_j||^2 / (2 l))``.
Training relaxes the edges to binary-concrete variables (temperature 0.3) so that gradients
pass through them; prediction draws hard edges.

C. Louizos, X. Shi, K. Schutte and M. Welling, *The functional neural process*, NeurIPS 2019.
C. J. Maddison, A. Mnih and Y. W. Teh, *The concrete distribution*, ICLR 2017.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

#: The largest edge logit the kernel gives two equal embeddings: ``g = 1`` has logit ``+inf``.
MAX_EDGE_LOGIT = 30.0


def dag_order(u: torch.Tensor) -> torch.Tensor:
    """``t(u) = sum_k log Phi(u_k)``, the parameter-free ordering of the DAG (thesis Eq. 66).

    :param u: embeddings ``(..., N, d)``.
    :returns: ``(..., N)``.
    """
    return torch.special.log_ndtr(u).sum(-1)


def rbf_edge_logits(
    children: torch.Tensor, parents: torch.Tensor, log_length_scale: torch.Tensor
) -> torch.Tensor:
    """Logits of the edge probabilities ``g(u_i, u_j) = exp(-||u_i - u_j||^2 / (2 l))`` with
    ``l = exp(log_length_scale)`` (the authors' parameterization of the kernel's ``tau = 1/l``).

    ``logit g = log g - log(1 - g)``, computed from ``log g`` without forming ``g``, and
    capped at :data:`MAX_EDGE_LOGIT` (two equal embeddings have ``g = 1``).

    :param children: ``(..., B, d)``.
    :param parents: ``(..., K, d)``.
    :returns: ``(..., B, K)``: the logit of ``parents[j]`` being a parent of ``children[i]``.
    """
    # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b: one matrix product instead of a (B, K, d)
    # tensor of differences; rounding can make it slightly negative.
    squared = (
        children.square().sum(-1, keepdim=True)
        + parents.square().sum(-1).unsqueeze(-2)
        - 2 * children @ parents.transpose(-1, -2)
    ).clamp(min=0)
    log_g = -0.5 * squared / log_length_scale.exp()
    # log(1 - g) = log(-expm1(log g)), kept above -MAX_EDGE_LOGIT: g = 1 has no finite logit.
    log_not_g = torch.log(-torch.expm1(log_g).clamp(max=-math.exp(-MAX_EDGE_LOGIT)))
    return log_g - log_not_g


class RandomGraph(TorchDistribution):
    r"""Adjacency matrices with independent edges on an allowed set.

    Entry ``(..., i, j)`` is an edge from ``j`` to ``i`` (``j`` a parent of ``i``).  Where
    ``allowed``, it is ``Bernoulli(sigmoid(logits))``, or with a ``temperature`` its binary
    concrete relaxation

    .. math:: a = \sigma\big((\ell + \log U - \log(1 - U)) / \lambda\big), \qquad
        U \sim \mathrm{Uniform}(0, 1),

    reparameterized; elsewhere it is 0.  The last ``event_dim`` dimensions form the event: 2 for
    a graph over one set (a DAG over the reference set), 1 for each row of a bipartite graph
    (the parents of one point, inside a data plate).

    :param logits: edge logits ``(..., N, K)``.
    :param allowed: a boolean mask broadcastable to ``logits`` (default: every edge).
    :param temperature: ``lambda`` of the relaxation; ``None`` for hard edges.
    :param event_dim: 1 or 2.
    """

    arg_constraints = {"logits": constraints.real}

    def __init__(
        self,
        logits: torch.Tensor,
        allowed: torch.Tensor | None = None,
        temperature: float | None = None,
        event_dim: int = 2,
        validate_args=None,
    ):
        if event_dim not in (1, 2) or logits.dim() < event_dim:
            raise ValueError(f"event_dim must be 1 or 2 and at most logits.dim(), got {event_dim}")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be positive or None, got {temperature}")
        if allowed is None:
            allowed = torch.ones((), dtype=torch.bool, device=logits.device)
        self.logits, allowed = broadcast_all(logits, allowed.to(logits))
        self.allowed = allowed.bool()
        self.temperature = temperature
        shape = self.logits.shape
        super().__init__(
            shape[: len(shape) - event_dim], shape[len(shape) - event_dim :], validate_args
        )

    @property
    def support(self):
        unit = constraints.unit_interval if self.temperature else constraints.boolean
        return constraints.independent(unit, len(self.event_shape))

    @property
    def has_rsample(self) -> bool:
        return self.temperature is not None

    @property
    def probs(self) -> torch.Tensor:
        """Edge probabilities, 0 where not allowed."""
        return torch.where(self.allowed, torch.sigmoid(self.logits), 0.0)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return RandomGraph(
            self.logits.expand(shape), self.allowed.expand(shape), self.temperature,
            len(self.event_shape),
        )  # fmt: skip

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if self.temperature is None:
            raise NotImplementedError("hard edges have no reparameterized sample; use sample()")
        shape = self._extended_shape(sample_shape)
        tiny = torch.finfo(self.logits.dtype).tiny
        uniform = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        uniform = uniform.clamp(tiny, 1 - torch.finfo(self.logits.dtype).eps)
        noise = uniform.log() - (-uniform).log1p()
        edges = torch.sigmoid((self.logits + noise) / self.temperature)
        return torch.where(self.allowed, edges, 0.0)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if self.temperature is not None:
            with torch.no_grad():
                return self.rsample(sample_shape)
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            return torch.bernoulli(self.probs.expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Summed over the allowed edges of each event (the others are 0 with probability 1)."""
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if self.temperature is None:
            per_edge = -F.binary_cross_entropy_with_logits(
                logits.expand_as(value), value, reduction="none"
            )
        else:
            # The binary concrete density at a = sigmoid(s) (Maddison et al., 2017, Eq. 12 on
            # the logit scale, with the Jacobian of the sigmoid):
            # log lambda + log sigma(lambda s - l) + log sigma(l - lambda s) - log a - log(1-a).
            eps = torch.finfo(value.dtype).eps
            a = value.clamp(eps, 1 - eps)
            s = a.log() - (-a).log1p()
            centred = self.temperature * s - logits
            per_edge = (
                math.log(self.temperature) - F.softplus(-centred) - F.softplus(centred)
                - a.log() - (-a).log1p()
            )  # fmt: skip
        per_edge = torch.where(self.allowed, per_edge, 0.0)
        return per_edge.sum(list(range(-len(self.event_shape), 0)))
