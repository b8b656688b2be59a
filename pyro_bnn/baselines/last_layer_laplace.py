r"""The last-layer Kronecker-factored Laplace approximation (Ritter, Botev & Barber, 2018).

After MAP training, the final ``nn.Linear`` of the network, :math:`f = W a + b` with
:math:`W \in \mathbb{R}^{C \times D}`, becomes Gaussian; everything before it stays at its MAP
value and supplies the features :math:`a(x)`.  The bias joins the weight through the augmented
input :math:`\tilde a = (a, 1)`: the parameters are :math:`\Theta = [W, b] \in \mathbb{R}^{C
\times D'}` (:math:`D' = D + 1`, or :math:`D` without a bias), flattened row by row into
:math:`\theta = \mathrm{vec}(\Theta)` (the order of :meth:`LastLayerLaplace.precision`).

**The Hessian.**  The logits are linear in :math:`\Theta`, :math:`f_n = (I_C \otimes \tilde
a_n^\top)\theta`, so the Hessian of the negative log-likelihood is exactly its generalized
Gauss-Newton matrix,

.. math:: H = \sum_n \Lambda_n \otimes \tilde a_n \tilde a_n^\top, \qquad
          \Lambda_n = \nabla^2_f [-\log p(y_n \mid f_n)],

with :math:`\Lambda_n = \mathrm{diag}(p_n) - p_n p_n^\top` for the softmax likelihood
(:math:`p_n` the MAP network's class probabilities; it does not depend on the label, so this is
the exact Hessian, not an empirical or sampled Fisher) and :math:`\Lambda_n = 1/\sigma^2` for
the Gaussian likelihood with noise variance :math:`\sigma^2`.  Kronecker factoring replaces the
expectation of the product by the product of expectations (Ritter et al.'s
:math:`N \bar G \otimes \bar A`, the factors' means over the :math:`N` training examples):

.. math:: H \approx G \otimes A, \qquad G = \frac1N \sum_n \Lambda_n, \quad
          A = \sum_n \tilde a_n \tilde a_n^\top.

It is exact when :math:`\Lambda_n` is the same for every example (the Gaussian likelihood, where
:math:`G = 1/\sigma^2`) and for a single example.

**The prior.**  With the isotropic prior :math:`\theta \sim \mathcal{N}(0, \tau^{-1} I)` the
posterior precision is :math:`P = G \otimes A + \tau I`.  Ritter et al. approximate it by the
product of regularized factors :math:`(\sqrt N \bar G + \sqrt\tau I) \otimes (\sqrt N \bar A +
\sqrt\tau I)`, which adds the cross term :math:`\sqrt{\tau N}(\bar G \oplus \bar A)` that the
prior does not have.  This module adds the prior exactly instead: with the eigen-decompositions
:math:`G = U_G\,\mathrm{diag}(g)\,U_G^\top` and :math:`A = U_A\,\mathrm{diag}(\alpha)\,
U_A^\top`, and :math:`I = (U_G \otimes U_A)(U_G \otimes U_A)^\top`,

.. math:: P = (U_G \otimes U_A)\,\bigl(\mathrm{diag}(g) \otimes \mathrm{diag}(\alpha) + \tau I
          \bigr)\,(U_G \otimes U_A)^\top,

so :math:`\Sigma = P^{-1}` has the same eigenvectors and eigenvalues
:math:`1 / (g_i \alpha_j + \tau)`.  Changing :math:`\tau` needs no new decomposition, which
makes :func:`fit_prior_precision`'s grid search cheap.  The MAP of
:func:`~pyro_bnn.baselines.train_deterministic` with ``weight_decay`` :math:`\lambda` has
:math:`\tau = N \lambda`.

**The predictive.**  The logits at an input are Gaussian, with mean the MAP network's output
:math:`f(x)` and covariance

.. math:: \mathrm{Cov}[f(x)] = (I_C \otimes \tilde a^\top)\,\Sigma\,(I_C \otimes \tilde a)
          = U_G\,\mathrm{diag}(s)\,U_G^\top, \qquad
          s_i = \sum_j \frac{v_j^2}{g_i \alpha_j + \tau}, \quad v = U_A^\top \tilde a,

:math:`O(D'^2 + C D')` per input once the factors are decomposed.  Class probabilities are
Monte Carlo averages of the softmax over logit samples :math:`f(x) + U_G (\sqrt{s} \odot
\epsilon)` (:func:`predict_last_layer_laplace`), or the probit approximation
:math:`\mathrm{softmax}(f_c / \sqrt{1 + \pi \mathrm{Var}[f_c] / 8})`
(:meth:`LastLayerLaplace.probit`); for regression the predictive is exactly
:math:`\mathcal{N}(f(x), s + \sigma^2)`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ._checks import (
    batch_tensors,
    check_inputs,
    check_network,
    check_positive,
    check_task,
)
from ._prediction import (
    check_prediction_arguments,
    classification_prediction,
    regression_prediction,
)
from .gaussian_noise import GaussianNoise

#: The prior precisions :func:`fit_prior_precision` tries by default: 10^-4 .. 10^4.
DEFAULT_PRIOR_PRECISIONS = tuple(10.0 ** (k / 4) for k in range(-16, 17))


def final_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The name and module of ``net``'s last ``nn.Linear`` in registration order."""
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(
            "last-layer Laplace needs a network whose output layer is an nn.Linear; this one has "
            "no nn.Linear"
        )
    return layers[-1]


def _set_eval(net: nn.Module) -> list[tuple[nn.Module, bool]]:
    modes = [(module, module.training) for module in net.modules()]
    net.eval()
    return modes


def _restore(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, mode in modes:
        module.training = mode


def _features_and_logits(
    net: nn.Module, name: str, layer: nn.Linear, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The final layer's augmented inputs ``(N, D')`` and outputs ``(N, C)``, float64, after
    checking that the layer's output is the network's."""
    seen = {}

    def record(module, args, output):
        seen["input"], seen["output"] = args[0], output

    handle = layer.register_forward_hook(record)
    try:
        output = net(x)
    finally:
        handle.remove()
    if "input" not in seen:
        raise ValueError(f"the network never called its last nn.Linear {name!r}")
    logits = seen["output"]
    if not (
        isinstance(output, torch.Tensor)
        and output.numel() == logits.numel()
        and torch.equal(output.reshape(logits.shape), logits)
    ):
        raise ValueError(
            f"the network's output is not the output of its last nn.Linear {name!r}: last-layer "
            "Laplace needs the final layer to be linear (no activation or other module after it)"
        )
    features = seen["input"]
    if features.dim() != 2:
        raise ValueError(
            f"the last nn.Linear {name!r} gets inputs of shape {tuple(features.shape)}; last-layer "
            "Laplace needs one feature vector per example, (N, D)"
        )
    features = features.double()
    if layer.bias is not None:
        features = torch.cat([features, features.new_ones(len(features), 1)], dim=1)
    return features, logits.double()


def _eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Both factors are positive semi-definite; rounding can leave tiny negative eigenvalues.
    values, vectors = torch.linalg.eigh(matrix)
    return values.clamp_min(0.0), vectors


class LastLayerLaplace:
    """A Kronecker-factored Laplace posterior over the last ``nn.Linear`` of a MAP network
    (made by :func:`fit_last_layer_laplace`; the module docstring derives it).

    It keeps a reference to the network, whose earlier layers give the features and whose last
    layer's weights are the posterior mean: train it no further.

    :ivar net: the network.
    :ivar layer_name: the name of its last ``nn.Linear``.
    :ivar noise: the :class:`~pyro_bnn.baselines.GaussianNoise` of a regression network, else
        ``None``.
    :ivar num_data: :math:`N`, the number of training examples in the factors.
    :ivar a_factor: :math:`A = \\sum_n \\tilde a_n \\tilde a_n^\\top`, ``(D', D')`` float64.
    :ivar g_factor: :math:`G`, the mean Hessian of the negative log-likelihood in the logits,
        ``(C, C)`` float64.
    """

    def __init__(
        self,
        net: nn.Module,
        layer_name: str,
        a_factor: torch.Tensor,
        g_factor: torch.Tensor,
        num_data: int,
        prior_precision: float,
        noise: GaussianNoise | None = None,
    ):
        self.net = net
        self.layer_name = layer_name
        self.noise = noise
        self.num_data = num_data
        self.a_factor = a_factor
        self.g_factor = g_factor
        self.a_eigenvalues, self.a_eigenvectors = _eigh(a_factor)
        self.g_eigenvalues, self.g_eigenvectors = _eigh(g_factor)
        self.prior_precision = prior_precision

    @property
    def prior_precision(self) -> float:
        """:math:`\\tau`, the precision of the isotropic Gaussian prior on the last layer."""
        return self._prior_precision

    @prior_precision.setter
    def prior_precision(self, value: float) -> None:
        check_positive("the prior precision", value)
        self._prior_precision = float(value)

    @property
    def task(self) -> str:
        return "classification" if self.noise is None else "regression"

    @property
    def layer(self) -> nn.Linear:
        return self.net.get_submodule(self.layer_name)

    @property
    def num_parameters(self) -> int:
        return len(self.g_factor) * len(self.a_factor)

    def mean(self) -> torch.Tensor:
        """The posterior mean, the MAP :math:`\\Theta = [W, b]`, shape ``(C, D')``."""
        layer = self.layer
        parts = [layer.weight] if layer.bias is None else [layer.weight, layer.bias[:, None]]
        return torch.cat(parts, dim=1).detach().double()

    def precision(self) -> torch.Tensor:
        """The dense posterior precision :math:`G \\otimes A + \\tau I` over
        :math:`\\mathrm{vec}(\\Theta)` (row by row), ``(C D', C D')`` float64: for checks on
        small layers."""
        eye = torch.eye(self.num_parameters, dtype=torch.float64)
        return torch.kron(self.g_factor, self.a_factor) + self.prior_precision * eye

    def covariance(self) -> torch.Tensor:
        """The dense posterior covariance, the inverse of :meth:`precision`, from the
        eigen-decompositions of the factors."""
        basis = torch.kron(self.g_eigenvectors, self.a_eigenvectors)
        return (basis * self._inverse_eigenvalues().reshape(-1)) @ basis.T

    def _inverse_eigenvalues(self) -> torch.Tensor:
        # (C, D'): 1 / (g_i alpha_j + tau).
        return 1.0 / (self.g_eigenvalues[:, None] * self.a_eigenvalues + self.prior_precision)

    def _logit_scales(self, features: torch.Tensor) -> torch.Tensor:
        """``s``, ``(N, C)``: the logit covariance is ``U_G diag(s_n) U_G^T``."""
        projected = (features @ self.a_eigenvectors).square()
        return projected @ self._inverse_eigenvalues().T

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The MAP logits ``(N, C)`` and the augmented features ``(N, D')``, float64, with the
        network in evaluation mode (its modes restored afterwards)."""
        modes = _set_eval(self.net)
        try:
            with torch.no_grad():
                features, logits = _features_and_logits(self.net, self.layer_name, self.layer, x)
        finally:
            _restore(modes)
        if features.shape[1] != len(self.a_factor) or logits.shape[1] != len(self.g_factor):
            raise ValueError(
                "the network's last layer no longer has the shape the approximation was made for"
            )
        return logits, features

    def _evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The MAP logits and the logit scales ``s`` at ``x``, ``(N, C)`` each."""
        logits, features = self._features(x)
        return logits, self._logit_scales(features)

    def logit_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian of the logits (a regression network's mean) at inputs ``x``: the mean
        ``(N, C)`` and covariance ``(N, C, C)``, in ``x``'s floating dtype (float64 otherwise)."""
        check_inputs(x)
        mean, scales = self._evaluate(x)
        basis = self.g_eigenvectors
        covariance = torch.einsum("ci,ni,di->ncd", basis, scales, basis)
        dtype = x.dtype if x.is_floating_point() else torch.float64
        return mean.to(dtype), covariance.to(dtype)

    def probit(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, C)`` by the probit approximation,
        ``softmax(f_c / sqrt(1 + pi Var[f_c] / 8))``: no sampling, no per-sample layout."""
        if self.task != "classification":
            raise ValueError("the probit approximation is for classification")
        check_inputs(x)
        mean, scales = self._evaluate(x)
        variances = scales @ self.g_eigenvectors.square().T
        probs = (mean / (1 + math.pi * variances / 8).sqrt()).softmax(-1)
        return probs.to(x.dtype if x.is_floating_point() else torch.float64)


def fit_last_layer_laplace(
    net: nn.Module,
    data: Iterable,
    *,
    task: str = "classification",
    noise: GaussianNoise | None = None,
    prior_precision: float = 1.0,
) -> LastLayerLaplace:
    """The Kronecker factors of the last layer's Hessian over the training ``data``, with the
    network in evaluation mode (its modes restored afterwards).

    :param net: a MAP network (:func:`~pyro_bnn.baselines.train_deterministic`) whose output is
        the output of its last ``nn.Linear`` (logits ``(N, C)``, or a regression mean
        ``(N, 1)``).
    :param data: the training batches ``(inputs, targets)`` or inputs; the targets are not
        needed (the factors depend on the inputs only) and are not read.
    :param task: ``"classification"`` (softmax likelihood) or ``"regression"``.
    :param noise: for regression, the network's :class:`~pyro_bnn.baselines.GaussianNoise`,
        :math:`G = 1/\\sigma^2`.
    :param prior_precision: :math:`\\tau > 0`; ``N * weight_decay`` matches the MAP training,
        :func:`fit_prior_precision` chooses it on validation data.
    """
    check_network(net)
    check_task(task, noise)
    check_positive("the prior precision", prior_precision)
    name, layer = final_linear(net)
    if task == "regression" and layer.out_features != 1:
        raise ValueError(
            f"a regression network's last nn.Linear must have one output (the mean), {name!r} "
            f"has {layer.out_features}"
        )
    if task == "classification" and layer.out_features < 2:
        raise ValueError(f"a classifier needs at least 2 classes, {name!r} has one output")
    a_factor = g_sum = None
    num_data = 0
    modes = _set_eval(net)
    try:
        with torch.no_grad():
            for batch in data:
                x, _ = batch_tensors(batch)
                check_inputs(x, "the inputs")
                features, logits = _features_and_logits(net, name, layer, x)
                if a_factor is None:
                    a_factor = features.new_zeros(features.shape[1], features.shape[1])
                    g_sum = logits.new_zeros(logits.shape[1], logits.shape[1])
                a_factor += features.T @ features
                if task == "classification":
                    probs = logits.softmax(-1)
                    g_sum += torch.diag(probs.sum(0)) - probs.T @ probs
                num_data += len(x)
    finally:
        _restore(modes)
    if num_data == 0:
        raise ValueError("the data yielded no batch")
    if task == "classification":
        g_factor = g_sum / num_data
    else:
        g_factor = (1.0 / noise.variance.detach().double()).reshape(1, 1)
    return LastLayerLaplace(net, name, a_factor, g_factor, num_data, prior_precision, noise)


def _check_laplace(laplace) -> None:
    if not isinstance(laplace, LastLayerLaplace):
        raise TypeError(
            f"expected a LastLayerLaplace (fit_last_layer_laplace), got {type(laplace).__name__}"
        )


@torch.no_grad()
def predict_last_layer_laplace(
    laplace: LastLayerLaplace,
    x: torch.Tensor,
    num_samples: int = 100,
    *,
    y: torch.Tensor | None = None,
    batch_size: int = 1000,
):
    """The Laplace predictive at inputs ``x`` in the common layout, from ``num_samples`` draws
    of the logits per input (the logits' Gaussian is exact; the draws use torch's global
    generator).

    :returns: for classification a :class:`~pyro_bnn.infer.ClassificationPrediction` whose
        ``probs_samples`` ``(S, N, C)`` are the softmax of the logit draws (the predictive
        ``probs`` is their Monte Carlo average; :meth:`LastLayerLaplace.probit` is the
        deterministic alternative); for regression a
        :class:`~pyro_bnn.infer.RegressionPrediction` whose ``mean_samples`` ``(S, N)`` are draws
        of the mean and ``variance_samples`` the noise variance, while ``mean``,
        ``epistemic_variance`` and ``total_variance`` are exact (the MAP output, ``s`` and
        ``s + sigma^2``), not estimated from the draws.  ``y`` ``(N,)`` gives the per-sample
        ``log_likelihood`` ``(S, N)``.
    """
    _check_laplace(laplace)
    check_prediction_arguments(laplace.task, x, y, batch_size, num_samples)
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    means, scales = [], []
    for start in range(0, len(x), batch_size):
        mean, scale = laplace._evaluate(x[start : start + batch_size])
        means.append(mean)
        scales.append(scale)
    mean, scales = torch.cat(means), torch.cat(scales)
    noise = torch.randn(num_samples, *mean.shape, dtype=mean.dtype)
    logits = mean + (scales.sqrt() * noise) @ laplace.g_eigenvectors.T
    if laplace.task == "classification":
        return classification_prediction(logits.softmax(-1).to(dtype), y)
    variance = laplace.noise.variance.detach().to(dtype)
    return regression_prediction(
        logits.squeeze(-1).to(dtype),
        variance.expand(num_samples, len(x)),
        y,
        mean=mean.squeeze(-1).to(dtype),
        epistemic_variance=scales.squeeze(-1).to(dtype),
    )


def fit_prior_precision(
    laplace: LastLayerLaplace,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    grid: Sequence[float] = DEFAULT_PRIOR_PRECISIONS,
    num_samples: int = 100,
    seed: int = 0,
    batch_size: int = 1000,
) -> float:
    """Choose the prior precision :math:`\\tau` that minimizes the negative log-likelihood of
    validation data ``(x, y)`` under the Laplace predictive, set it, and return it.

    Regression uses the exact Gaussian predictive.  Classification uses ``num_samples`` logit
    draws per input with the same standard normal noise for every :math:`\\tau` (common random
    numbers from a generator seeded with ``seed``), so the search is deterministic and compares
    the grid's values without Monte Carlo noise between them.  The factors' eigen-decompositions
    are reused: each :math:`\\tau` costs one pass over the validation features.

    :param grid: the candidate precisions, all positive; by default
        :data:`DEFAULT_PRIOR_PRECISIONS`, 10^-4 to 10^4 in quarter decades.
    :returns: the chosen :math:`\\tau` (the first in ``grid`` among ties).
    """
    _check_laplace(laplace)
    check_prediction_arguments(laplace.task, x, y, batch_size, num_samples)
    grid = [float(value) for value in grid]
    if not grid:
        raise ValueError("the grid of prior precisions is empty")
    for value in grid:
        check_positive("every prior precision of the grid", value)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if laplace.task == "classification" and len(y) and y.max() >= len(laplace.g_factor):
        raise ValueError(
            f"label {y.max().item()} is out of range for {len(laplace.g_factor)} classes"
        )
    chosen = laplace.prior_precision
    chunks = [
        laplace._features(x[start : start + batch_size]) for start in range(0, len(x), batch_size)
    ]
    mean = torch.cat([logits for logits, _ in chunks])
    features = torch.cat([features for _, features in chunks])
    generator = torch.Generator().manual_seed(seed)
    if laplace.task == "classification":
        noise = torch.randn(num_samples, *mean.shape, generator=generator, dtype=torch.float64)
    target = y.long() if laplace.task == "classification" else y.double()
    best, best_nll = None, math.inf
    try:
        for value in grid:
            laplace.prior_precision = value
            scales = laplace._logit_scales(features)
            if laplace.task == "classification":
                logits = mean + (scales.sqrt() * noise) @ laplace.g_eigenvectors.T
                log_probs = logits.log_softmax(-1).gather(
                    -1, target.reshape(1, -1, 1).expand(num_samples, -1, 1)
                )
                nll = -(log_probs.squeeze(-1).logsumexp(0) - math.log(num_samples)).mean()
            else:
                variance = scales.squeeze(-1) + laplace.noise.variance.detach().double()
                residual = (target - mean.squeeze(-1)).square()
                nll = 0.5 * (math.log(2 * math.pi) + variance.log() + residual / variance).mean()
            if nll.item() < best_nll:
                best, best_nll = value, nll.item()
    finally:
        laplace.prior_precision = chosen
    if best is None:
        raise FloatingPointError("the validation negative log-likelihood is NaN for every value")
    laplace.prior_precision = best
    return best
