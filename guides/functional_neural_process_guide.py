"""The variational family of the functional neural process (thesis Sec. 5.3.2).

``q(U, G, A, Z | X) = p(U | X) p(G | U_R) p(A | U) prod_i q(z_i | x_i)``: the embeddings and
both graphs are drawn from the model's own conditionals, so their terms of the bound cancel
(``log p - log q = 0`` draw by draw; both leave them out of their densities, see
:func:`~pyro_bnn.models.functional_neural_process.unscored`), and each local latent ``z_i``
has the amortized Gaussian ``q(z_i | x_i)`` whose heads the model's conditional prior reuses
(``mu_theta = mu_q + m_y``).
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule

from pyro_bnn.models.functional_neural_process import FunctionalNeuralProcess, unscored


class FunctionalNeuralProcessGuide(PyroModule):
    """The guide of a :class:`~pyro_bnn.models.FunctionalNeuralProcess`.

    It owns no parameters: the embedding, the kernel's length scale and the inference heads are
    the model's (the model's conditional prior shares the heads), and the model and the guide
    share one pass of the torso per batch.  In training it also drives the model's soft free
    bits: it runs before the model, measures the KL of ``z`` in closed form on its draws of the
    graphs, and updates the weight both then apply to the ``z`` terms.

    In evaluation mode (``model.eval()``) it draws only the reference set's embeddings, the
    global latent the predictive of new points conditions on; the model draws the new points'
    embeddings, edges and latents from their conditional priors (thesis Eq. 73), so
    :func:`pyro_bnn.predict` and ``pyro.infer.Predictive`` give the FNP's posterior predictive.

    :param model: the model.
    """

    def __init__(self, model: FunctionalNeuralProcess):
        super().__init__()
        if not isinstance(model, FunctionalNeuralProcess):
            raise TypeError(
                f"FunctionalNeuralProcessGuide needs a FunctionalNeuralProcess, got "
                f"{type(model).__name__}"
            )
        # Kept out of the module tree: its parameters are the model's, saved and optimized
        # with it.
        self.__dict__["model"] = model

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        model = self.model
        h_reference, h, index = model.features(x, keep=True)
        # Computed once per step for the guide and the model (FunctionalNeuralProcess.step_shared).
        shared = model.step_shared
        reference_plate, data_plate = model.plates(len(x), index)
        with reference_plate, unscored():
            u_reference = pyro.sample(
                "reference.u", shared("reference.u", model.embedding_distribution, h_reference)
            )
        if not model.training:
            return
        with data_plate, unscored():
            u = pyro.sample("u", shared("u", model.embedding_distribution, h))
            parents = pyro.sample(
                "parents", shared("parents", model.parents_distribution, u, u_reference)
            )
        with unscored():
            dag = pyro.sample(
                "reference.dag", shared("reference.dag", model.dag_distribution, u_reference)
            )
        posterior = model.inference_distribution(h)
        posterior_reference = model.inference_distribution(h_reference)
        if model.free_bits is not None and torch.is_grad_enabled():
            # Only a training step moves the controller (a diagnostic draw under no_grad
            # leaves the model as it was), and only when free bits are on is the KL needed.
            # The conditional priors are the model's, kept for it.
            messages = shared("messages", model.messages, h_reference, index)
            prior = shared("z", model.conditional_prior, parents, messages)
            prior_reference = shared("reference.z", model.conditional_prior, dag, messages)
            with torch.no_grad():
                kl = (
                    torch.distributions.kl_divergence(posterior, prior).sum()
                    + torch.distributions.kl_divergence(posterior_reference, prior_reference).sum()
                )
            model.update_free_bits(kl, len(x) + len(h_reference))
        with poutine.scale(scale=model.free_bits_weight):
            with data_plate:
                pyro.sample("z", posterior)
            with reference_plate:
                pyro.sample("reference.z", posterior_reference)
