"""The functional neural process (FNP) and FNP+ as a Pyro model (thesis Ch. 5, App. 10.3).

A prior over functions instead of weights.  A reference set ``R`` of training points is held
by the model; every point ``i`` (of ``R`` or not) gets

- an embedding ``u_i ~ N(mu_u(h_i), sigma_u(h_i)^2)`` of its features ``h_i = torso(x_i)``
  (Eq. 64);
- parents in ``R``: for a point of ``R``, the points before it in the ordering
  ``t(u) = sum_k log Phi(u_k)`` (a DAG, Eq. 66); for any other point, any point of ``R``
  (a bipartite graph, Eq. 65); each allowed edge ``Bernoulli(g(u_i, u_j))`` with the RBF kernel
  ``g`` (:mod:`pyro_bnn.distributions.random_graph`), relaxed at temperature 0.3 in training;
- a local latent ``z_i ~ N(C_i sum_j a_ij m_j, exp(C_i sum_j a_ij s_j)^2)`` per dimension,
  ``C_i = 1 / (sum_j a_ij + eps)``, averaging its parents' messages ``m_j = mu_q(h_j) + m_y(y_j)``
  and log-scales ``s_j = nu_q(h_j) + s_y(y_j)`` (Eq. 67-68: the heads of the inference network
  plus an embedding of the label).  A point without parents gets ``N(0, I)``;
- ``y_i ~ p(y | z_i)``, or ``p(y | z_i, u_i)`` for the FNP+ (Eq. 70).

Sites, inside the plate ``reference`` (size ``|R|``) or ``data`` (the points not in ``R``,
subsampled by the batch so that their terms scale by ``|M| / |M_hat|``, Eq. 134-137):
``reference.u``, ``reference.dag`` (the DAG, outside both plates), ``reference.z``,
``reference.y`` (observed), ``u``, ``parents``, ``z`` and ``obs``.  The embeddings and graphs
are left out of every log density (:func:`unscored`): the guide shares them, so their terms of
the bound cancel.  In evaluation mode (after
``model.eval()``) the reference set's own graph, latents and likelihood are left out: they do not
enter the predictive of new points (Eq. 73), and edges are hard.

Every training step runs the torso on all of ``R`` besides the batch, so a step costs about
``(|R| + B) / B`` deterministic steps of the torso, plus the graphs' ``O(|R|^2 + B |R|)``.
``reference_gradient_size=k`` keeps the features exact but differentiates the torso through
``k`` random reference points only, with their gradients scaled by ``|R| / k``
(:func:`partially_differentiated`, unbiased): the backward pass then covers ``k + B`` images.
``reference_subsample_size=m`` trains each step on ``m`` random reference points instead, their
terms scaled by ``|R| / m`` (the thesis's biased alternative, App. 10.3.4): the torso sees
``m + B`` images and the DAG ``m^2`` pairs; prediction still uses all of ``R``.

The guide is :class:`~pyro_bnn.guides.FunctionalNeuralProcessGuide`: ``u``, the graphs and the
edges share prior and posterior (their KL terms cancel) and ``z`` has the amortized Gaussian
``q(z|x)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

from pyro_bnn.distributions.random_graph import RandomGraph, dag_order, rbf_edge_logits
from pyro_bnn.util import all_finite, positive_integer

#: ``C_i = 1 / (sum_j a_ij + PARENT_EPS)``: a point without parents gets the messages' zero
#: average, ``N(0, I)``.
PARENT_EPS = 1e-8

#: The heteroscedastic regression noise is ``MIN_NOISE + (1 - MIN_NOISE) softplus(d)``.
MIN_NOISE = 0.1


def unscored() -> poutine.MaskMessenger:
    """Leave the enclosed sites out of every log density, in the model and in the guide.

    The embeddings and both graphs have the same distribution in the guide as in the model,
    so their terms of the bound, ``log p - log q``, are zero draw by draw.  Evaluated anyway
    in float32 they are not: the relaxed edges' log densities have gradients up to ``1e27``
    near saturated edges, and the two sides cancel only to their rounding error, which was
    enough to derail Adam on Fashion-MNIST.  Masking both sides keeps the bound exact.
    """
    return poutine.mask(mask=False)


def partially_differentiated(
    function: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    k: int,
    also: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``function(inputs)`` with gradients through its first ``k`` rows only, scaled by
    ``n / k`` (``n = len(inputs)``); and ``function(also)``, differentiated as usual.

    For rows drawn uniformly at random (shuffle ``inputs`` first), the gradient of any loss
    ``L(function(inputs))`` is estimated without bias: each row's term ``dL/df_i df_i/dtheta``
    enters with probability ``k / n`` and weight ``n / k`` (Horvitz and Thompson, 1952).  The
    values are exact (the other rows go through ``function`` without gradients), so the loss
    and the gradients of everything after ``function`` are unchanged; only ``function``'s own
    backward pass shrinks from ``n`` rows to ``k``.

    :param function: row-wise, ``(N, ...) -> (N, F)``.
    :param inputs: ``(n, ...)``.
    :param k: the rows differentiated, ``1 <= k <= n``.
    :param also: ``(B, ...)`` rows to differentiate fully, in the same pass as the first ``k``.
    :returns: ``(function(inputs), function(also))``, ``(n, F)`` and ``(B, F)`` (``None``
        without ``also``).
    """
    n = len(inputs)
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in 1..{n} (the rows), got {k}")
    first = inputs[:k] if also is None else torch.cat([inputs[:k], also])
    differentiated = function(first)
    with torch.no_grad():
        rest = function(inputs[k:])
    drawn = differentiated[:k]
    # Value: drawn exactly (the added term is zero); gradient: n / k times drawn's.
    drawn = drawn + (drawn - drawn.detach()) * (n / k - 1)
    return torch.cat([drawn, rest]), (None if also is None else differentiated[k:])


class FunctionalNeuralProcess(PyroModule):
    """The FNP (``plus=False``) or FNP+ (``plus=True``) over a feature network.

    :param torso: the shared feature network ``x -> h`` (``(N, *input_shape) -> (N, F)``),
        ending in a non-linearity: LeNet-5 up to its 500-unit layer and a ReLU for images, a
        100-unit ReLU layer for the toy regressions.
    :param feature_dim: ``F``.
    :param reference_x: the reference set's inputs ``(K, *input_shape)``.
    :param reference_y: its targets: class labels ``(K,)`` or values ``(K,)`` / ``(K, D)``.
    :param num_data: the number of training points outside the reference set, ``|M|``: the
        data plate's size, which scales a mini-batch's terms.
    :param num_classes: for classification; else regression with ``output_dim`` outputs.
    :param output_dim: regression outputs ``D``.
    :param dim_u: embedding size (32 for images, 3 for the toy tasks).
    :param dim_z: latent size (64 for images, 50 or 10 for the toy tasks).
    :param plus: the FNP+: ``y`` also depends on ``u``.
    :param temperature: of the relaxed edges in training (the thesis's 0.3).
    :param free_bits: soft free bits on ``z``, nats per dimension and point: the KL of ``z``
        is weighted by ``lambda``, raised by 10% while the KL per point and dimension exceeds
        ``1.05 * free_bits`` and lowered by 10% below ``free_bits``, in ``[1e-8, 1]``
        (Kingma et al., 2016, as the authors' code does); ``None`` for the plain bound.
    :param output_hidden: hidden units of the regression output network (100 in the thesis).
    :param reference_gradient_size: ``k``: differentiate the torso through only ``k`` reference
        points per training step, drawn at random, and scale their gradients by ``|R| / k``
        (:func:`partially_differentiated`).  The features and the bound are unchanged and the
        gradient stays unbiased; the torso's backward pass covers ``k + B`` images instead of
        ``|R| + B``.  ``None`` (the default), or ``k >= |R|``, differentiates through all of
        ``R``, as the thesis.
    :param reference_subsample_size: ``m``: train each step on ``m`` reference points drawn at
        random instead of all of ``R``: the reference set's terms of the bound (``L_R``) are
        scaled by ``|R| / m`` and the batch's parents are drawn from the ``m`` points only.  The
        thesis's cheaper alternative (App. 10.3.4: "subsample also the reference set and just
        reweigh appropriately L_R"); its gradient is biased.  Prediction always uses all of
        ``R``.  ``None`` (the default), or ``m >= |R|``, trains on all of ``R``.
    """

    #: The model broadcasts over a leading plate of posterior samples (the graphs' and latents'
    #: computations are batched), so :func:`pyro_bnn.predict` runs it once per chunk of inputs
    #: for all samples, and the torso once.
    supports_sample_plate = True

    def __init__(
        self,
        torso: nn.Module,
        feature_dim: int,
        reference_x: torch.Tensor,
        reference_y: torch.Tensor,
        num_data: int,
        *,
        num_classes: int | None = None,
        output_dim: int = 1,
        dim_u: int = 32,
        dim_z: int = 64,
        plus: bool = False,
        temperature: float = 0.3,
        free_bits: float | None = 1.0,
        output_hidden: int = 100,
        reference_gradient_size: int | None = None,
        reference_subsample_size: int | None = None,
    ):
        super().__init__()
        sizes = {"feature_dim": feature_dim, "num_data": num_data, "dim_u": dim_u,
                 "dim_z": dim_z, "output_dim": output_dim}  # fmt: skip
        for name, value in sizes.items():
            positive_integer(name, value)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if free_bits is not None and not free_bits >= 0:
            raise ValueError(f"free_bits must be non-negative or None, got {free_bits}")
        self.num_classes = num_classes
        self.output_dim = output_dim if num_classes is None else num_classes
        self.dim_u, self.dim_z, self.plus = dim_u, dim_z, plus
        self.temperature, self.free_bits = temperature, free_bits
        self.num_data = num_data
        estimator = {"reference_gradient_size": reference_gradient_size,
                     "reference_subsample_size": reference_subsample_size}  # fmt: skip
        self.reference_gradient_size, self.reference_subsample_size = (
            None if value is None else positive_integer(name, value)
            for name, value in estimator.items()
        )
        self.torso = torso
        self.embedding = nn.Linear(feature_dim, 2 * dim_u)
        self.inference = nn.Linear(feature_dim, 2 * dim_z)
        self.label_embedding = nn.Linear(self.output_dim, 2 * dim_z)
        # l = exp(log_length_scale), initialized at sqrt(dim_u) as in the authors' code.
        self.log_length_scale = nn.Parameter(torch.tensor(0.5 * math.log(dim_u)))
        head = dim_z + dim_u if plus else dim_z
        if num_classes is None:
            self.output = nn.Sequential(
                nn.Linear(head, output_hidden), nn.ReLU(), nn.Linear(output_hidden, 2 * output_dim)
            )
        else:
            self.output = nn.Sequential(nn.ReLU(), nn.Linear(head, num_classes))
        self.register_buffer("free_bits_weight", torch.tensor(1e-8 if free_bits else 1.0))
        self.set_reference(reference_x, reference_y)

    # ------------------------------------------------------------------------- the data

    @property
    def task(self) -> str:
        return "regression" if self.num_classes is None else "classification"

    @property
    def reference_size(self) -> int:
        return len(self.reference_x)

    def set_reference(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Choose (or replace) the reference set: inputs ``(K, ...)`` and targets ``(K, ...)``."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or len(x) == 0:
            raise ValueError("the reference set must hold at least one point")
        if len(y) != len(x):
            raise ValueError(f"the reference set has {len(x)} inputs but {len(y)} targets")
        if not all_finite(x) or not all_finite(y):
            raise ValueError("the reference set contains NaN or infinite values")
        self._check_targets(y, "the reference targets")
        self.register_buffer("reference_x", x.detach().clone())
        self.register_buffer("reference_y", y.detach().clone())
        # Features kept for the old reference set no longer apply.
        self.__dict__.pop("_reference_features", None)
        self.__dict__.pop("_features", None)

    def _check_targets(self, y: torch.Tensor, name: str) -> None:
        if self.num_classes is not None:
            if y.dim() != 1 or y.is_floating_point():
                raise ValueError(f"{name} must be a 1-D tensor of class labels")
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(f"{name} must lie in 0..{self.num_classes - 1}")
        elif y.shape[1:] not in ((), (self.output_dim,)) or (y.dim() == 1 and self.output_dim > 1):
            raise ValueError(
                f"{name} must have shape (N,) or (N, {self.output_dim}), got {tuple(y.shape)}"
            )

    def check_inputs(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` for inputs unlike the reference set's or with NaN/inf."""
        if x.shape[1:] != self.reference_x.shape[1:]:
            raise ValueError(
                f"each input must have shape {tuple(self.reference_x.shape[1:])} (the reference "
                f"set's), got a batch of shape {tuple(x.shape)}"
            )
        if not all_finite(x):
            raise ValueError("the inputs contain NaN or infinite values")

    def check_targets(self, y: torch.Tensor) -> None:
        self._check_targets(y, "the targets")
        if not all_finite(y):
            raise ValueError("the targets contain NaN or infinite values")

    # ------------------------------------------------------------- shared computations

    def features(
        self, x: torch.Tensor, keep: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(h_R, h, index)``: the torso on the reference set and on ``x``, and which reference
        points ``h_R`` holds (``None``: all of ``R``, in order).

        In training, one pass over both: over ``reference_subsample_size`` random reference
        points if set (``index`` their positions in ``R``), differentiated through
        ``reference_gradient_size`` random ones if set.  The guide runs first and asks to
        ``keep`` it; the model, run next on the same batch with the same parameters, takes the
        kept pass instead of running the torso again (and only the next guide call keeps
        another, so a second loss on the same batch gets a fresh pass to differentiate).
        Without gradients (prediction), the reference set's features are kept until the torso
        or the reference set changes, and only ``x`` goes through the torso: a predictive over
        many chunks of inputs pays for the reference set once.
        """
        if not torch.is_grad_enabled():
            self.__dict__.pop("_step_memo", None)  # a pass without gradients is not a step
            torso = tuple(parameter._version for parameter in self.torso.parameters())
            versions = (self.reference_x._version, self.training, torso)
            # Keyed by the torso's values, not only their versions: a fused optimizer updates
            # parameters in place without bumping their version counters.
            state = [tensor.detach() for tensor in self.torso.state_dict().values()]
            fingerprint = torch.stack([tensor.double().sum() for tensor in state] or [
                torch.zeros((), dtype=torch.float64)])  # fmt: skip
            cached = self.__dict__.get("_reference_features")
            if cached is None or cached[0] != versions or not torch.equal(cached[1], fingerprint):
                cached = (versions, fingerprint, self.torso(self.reference_x))
                self.__dict__["_reference_features"] = cached
            return cached[2], self.torso(x.to(self.reference_x)), None
        # The kept pass, and the guide's results kept with it (step_shared), serve the model
        # only while nothing they depend on has changed: the batch, the reference set, the
        # mode and every parameter of the model (the heads and the kernel's too).
        step = (x._version, self.reference_x._version, self.training,
                tuple(parameter._version for parameter in self.parameters()))  # fmt: skip
        kept = self.__dict__.pop("_features", None)
        if not keep and kept is not None and kept[0] is x and kept[1] == step:
            return kept[2]
        self.__dict__.pop("_step_memo", None)
        result = self._training_features(x.to(self.reference_x))
        if keep and self.training:
            self.__dict__["_features"] = (x, step, result)
            self.__dict__["_step_memo"] = {}
        return result

    def step_shared(self, name: str, compute: Callable, *inputs):
        """``compute(*inputs)``, computed once per training step for the guide and the model.

        The guide runs first and computes the graphs' distributions, the messages and the
        conditional priors of its draws; the model, replaying those draws, passes the very same
        tensors and gets the guide's results instead of computing them again (most are only
        the distributions of sites both leave out of the bound).  Results are matched by the
        identity of their inputs and kept for one step: the guide's pass of the torso starts a
        step, the end of the model's ``forward`` ends it, and so does any pass of the torso that
        cannot reuse the guide's (another batch, a changed parameter; :meth:`features`).
        Outside a step, or for a draw the model makes itself, ``compute`` runs as usual.

        :param name: the call site (one result is kept per name).
        """
        memo = self.__dict__.get("_step_memo")
        if memo is None:
            return compute(*inputs)
        kept = memo.get(name)
        if kept is not None and len(kept[0]) == len(inputs):
            if all(a is b for a, b in zip(kept[0], inputs, strict=True)):
                return kept[1]
        result = compute(*inputs)
        memo[name] = (inputs, result)
        return result

    def _training_features(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(h_R, h, index)`` of one training step: one torso pass over the reference set (or
        ``reference_subsample_size`` random points of it, at ``index``) and ``x``,
        differentiated through ``reference_gradient_size`` random reference points if set."""
        reference, index = self.reference_x, None
        m = self.reference_subsample_size
        if m is not None and m < len(reference):
            index = torch.randperm(len(reference), device=reference.device)[:m]
            reference = reference[index]
        size, k = len(reference), self.reference_gradient_size
        if k is None or k >= size:
            h = self.torso(torch.cat([reference, x]))
            return h[:size], h[size:], index
        permutation = torch.randperm(size, device=reference.device)
        h_reference, h = partially_differentiated(self.torso, reference[permutation], k, also=x)
        return h_reference[permutation.argsort()], h, index

    def embedding_distribution(self, h: torch.Tensor) -> dist.Distribution:
        """``p(u | x) = N(mu_u(h), sigma_u(h)^2)``, event ``(dim_u,)``."""
        loc, log_scale = self.embedding(h).chunk(2, dim=-1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)

    def inference_distribution(self, h: torch.Tensor) -> dist.Distribution:
        """``q(z | x) = N(mu_q(h), exp(nu_q(h))^2)``, event ``(dim_z,)``."""
        loc, log_scale = self.inference(h).chunk(2, dim=-1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)

    def _edge_temperature(self) -> float | None:
        return self.temperature if self.training else None

    def dag_distribution(self, u_reference: torch.Tensor) -> RandomGraph:
        """The DAG over the reference set: ``j`` may be a parent of ``i`` iff ``t(u_j) <
        t(u_i)``; entry ``(i, j)`` is the edge ``j -> i``."""
        order = dag_order(u_reference)
        allowed = order.unsqueeze(-1) > order.unsqueeze(-2)
        logits = rbf_edge_logits(u_reference, u_reference, self.log_length_scale)
        return RandomGraph(logits, allowed, self._edge_temperature(), event_dim=2)

    def parents_distribution(self, u: torch.Tensor, u_reference: torch.Tensor) -> RandomGraph:
        """The bipartite graph from the reference set to the points ``u``: one row of edges
        per point (the event), so that it sits in the data plate."""
        logits = rbf_edge_logits(u, u_reference, self.log_length_scale)
        return RandomGraph(logits, temperature=self._edge_temperature(), event_dim=1)

    def messages(
        self, h_reference: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference points' ``(m_j, s_j)``, each ``(K, dim_z)``: the inference heads plus
        the label embedding (one-hot labels for classification); ``index``: the reference
        points ``h_reference`` holds (:meth:`features`)."""
        y = self.reference_targets(index)
        if self.num_classes is not None:
            y = F.one_hot(y.long(), self.num_classes)
        y = y.to(h_reference).reshape(len(y), self.output_dim)
        loc, log_scale = (self.inference(h_reference) + self.label_embedding(y)).chunk(2, dim=-1)
        return loc, log_scale

    @staticmethod
    def conditional_prior(adjacency: torch.Tensor, messages) -> dist.Distribution:
        """``p(z_i | parents)``: the parents' average message and log-scale (Eq. 68)."""
        weights = adjacency / (adjacency.sum(-1, keepdim=True) + PARENT_EPS)
        loc, log_scale = messages
        return dist.Normal(weights @ loc, (weights @ log_scale).exp()).to_event(1)

    def likelihood(self, z: torch.Tensor, u: torch.Tensor) -> dist.Distribution:
        """``p(y | z)`` (FNP) or ``p(y | z, u)`` (FNP+): categorical on the logits, or a
        Gaussian with the heteroscedastic scale ``0.1 + 0.9 softplus(d)``."""
        output = self.output(torch.cat([z, u], dim=-1) if self.plus else z)
        if self.num_classes is not None:
            return dist.Categorical(logits=output)
        loc, raw = output.chunk(2, dim=-1)
        scale = MIN_NOISE + (1 - MIN_NOISE) * F.softplus(raw)
        if self.output_dim == 1:
            return dist.Normal(loc.squeeze(-1), scale.squeeze(-1))
        return dist.Normal(loc, scale).to_event(1)

    @torch.no_grad()
    def update_free_bits(self, kl: torch.Tensor, num_points: int) -> None:
        """One step of the soft free-bits controller: ``kl`` is this step's KL of ``z`` summed
        over ``num_points`` points; the weight of the KL grows by 10% while it exceeds the
        budget by 5% and shrinks by 10% below it (Kingma et al., 2016)."""
        if self.free_bits is None or not self.training:
            return
        budget = self.free_bits * num_points * self.dim_z
        if kl > 1.05 * budget:
            self.free_bits_weight.mul_(1.1)
        elif kl < budget:
            self.free_bits_weight.mul_(0.9)
        self.free_bits_weight.clamp_(1e-8, 1.0)

    # ---------------------------------------------------------------------- the model

    def reference_targets(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """The targets of the reference points at ``index`` (``None``: all of ``R``)."""
        return self.reference_y if index is None else self.reference_y[index]

    def plates(
        self, batch_size: int, index: torch.Tensor | None = None
    ) -> tuple[pyro.plate, pyro.plate]:
        """The reference set's plate (subsampled at ``index`` if given, so that the reference
        terms scale by ``|R| / |index|``) and the data plate (subsampled by the batch)."""
        device = self.reference_x.device
        reference = pyro.plate("reference", self.reference_size, subsample=index, dim=-1)
        data = pyro.plate(
            "data", self.num_data, subsample=torch.arange(batch_size, device=device), dim=-1
        )
        return reference, data

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """:param x: inputs ``(B, ...)`` outside the reference set; :param y: their targets.

        :returns: the likelihood's parameters of the batch (logits, or the Gaussian's mean).
        """
        if x.shape[1:] != self.reference_x.shape[1:]:
            self.check_inputs(x)
        try:
            return self._model(x, y)
        finally:
            self.__dict__.pop("_step_memo", None)  # the end of a training step

    def _model(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h_reference, h, index = self.features(x)
        shared = self.step_shared
        reference_plate, data_plate = self.plates(len(x), index)
        with reference_plate, unscored():
            u_reference = pyro.sample(
                "reference.u", shared("reference.u", self.embedding_distribution, h_reference)
            )
        messages = shared("messages", self.messages, h_reference, index)
        weight = self.free_bits_weight
        with data_plate, unscored():
            u = pyro.sample("u", shared("u", self.embedding_distribution, h))
            parents = pyro.sample(
                "parents", shared("parents", self.parents_distribution, u, u_reference)
            )
        if self.training:
            with unscored():
                dag = pyro.sample(
                    "reference.dag", shared("reference.dag", self.dag_distribution, u_reference)
                )
        # The guide's order: embeddings and graphs, then the latents.
        with data_plate, poutine.scale(scale=weight):
            z = pyro.sample("z", shared("z", self.conditional_prior, parents, messages))
        if self.training:
            with reference_plate:
                with poutine.scale(scale=weight):
                    prior = shared("reference.z", self.conditional_prior, dag, messages)
                    z_reference = pyro.sample("reference.z", prior)
                pyro.sample(
                    "reference.y", self.likelihood(z_reference, u_reference),
                    obs=self.reference_targets(index),
                )  # fmt: skip
        likelihood = self.likelihood(z, u)
        with data_plate:
            pyro.sample("obs", likelihood, obs=y)
        return likelihood.logits if self.num_classes is not None else likelihood.mean
