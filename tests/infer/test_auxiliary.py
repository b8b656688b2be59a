"""The auxiliary-variable bound: guide-only sites and the log r(a | w) term, with KL warm-up."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_bnn.infer import KLWeight, TraceKL_ELBO, auxiliary_log_density

Y = torch.tensor([0.7, -0.2, 1.3], dtype=torch.float64)
PARAMS = {"m_a": 0.3, "s_a": 0.8, "m_w": -0.4, "s_w": 0.6, "c": 0.9}


def model(y):
    w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(w, 1.0), obs=y)


def guide(y):
    p = {k: torch.tensor(v, dtype=y.dtype) for k, v in PARAMS.items()}
    # Auxiliary: not in the model; Pyro asks for the flag on such sites.
    a = pyro.sample("a", dist.Normal(p["m_a"], p["s_a"]), infer={"is_auxiliary": True})
    w = pyro.sample("w", dist.Normal(p["m_w"] + a, p["s_w"]))
    auxiliary_log_density("r", dist.Normal(p["c"] * w, 1.0).log_prob(a))


def hand_bound(guide_trace, weight=1.0, analytic_kl=False):
    """log p(y | w) + weight * (log p(w) + log r(a | w) - log q(a) - log q(w | a)) at the draw."""
    p = {k: torch.tensor(v, dtype=torch.float64) for k, v in PARAMS.items()}
    a, w = guide_trace.nodes["a"]["value"], guide_trace.nodes["w"]["value"]
    q_w = dist.Normal(p["m_w"] + a, p["s_w"])
    if analytic_kl:
        kl_w = torch.distributions.kl_divergence(q_w, dist.Normal(0.0, 1.0))
    else:
        kl_w = q_w.log_prob(w) - dist.Normal(0.0, 1.0).log_prob(w)
    log_r = dist.Normal(p["c"] * w, 1.0).log_prob(a)
    log_q_a = dist.Normal(p["m_a"], p["s_a"]).log_prob(a)
    data = dist.Normal(w, 1.0).log_prob(Y).sum()
    return data + weight * (log_r - log_q_a - kl_w)


def replayed(elbo, weight):
    """The ELBO's loss on one guide draw, and that draw, with the KL weight applied."""
    kl_weight = KLWeight(weight)
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(guide).get_trace(Y)
    fixed = poutine.replay(kl_weight(guide), trace=guide_trace)
    return elbo.loss(kl_weight(model), fixed, Y), guide_trace


@pytest.mark.parametrize("weight", [1.0, 0.25])
@pytest.mark.parametrize(
    "elbo, analytic", [(TraceKL_ELBO(), True), (TraceMeanField_ELBO(), True), (Trace_ELBO(), False)]
)
def test_auxiliary_bound_matches_the_hand_computed_one(elbo, analytic, weight):
    loss, guide_trace = replayed(elbo, weight)
    expected = hand_bound(guide_trace, weight, analytic_kl=analytic)
    assert loss == pytest.approx(-expected.item(), rel=1e-9, abs=1e-9)


def test_the_r_term_has_the_sign_of_a_model_density():
    # A larger log r raises the bound: shifting r's mean onto a raises the ELBO by exactly the
    # difference of log r.
    loss, guide_trace = replayed(TraceKL_ELBO(), 1.0)
    a, w = guide_trace.nodes["a"]["value"], guide_trace.nodes["w"]["value"]
    old = dist.Normal(PARAMS["c"] * w, 1.0).log_prob(a)
    PARAMS["c"], saved = (a / w).item(), PARAMS["c"]
    try:
        better, _ = replayed(TraceKL_ELBO(), 1.0)
    finally:
        PARAMS["c"] = saved
    new = dist.Normal(a, 1.0).log_prob(a)
    assert new > old
    assert loss - better == pytest.approx((new - old).item(), rel=1e-9)


def test_kl_weight_scales_the_auxiliary_term_but_not_model_factors():
    def with_penalty(y):
        model(y)
        pyro.factor("penalty", torch.tensor(-2.0, dtype=torch.float64))

    kl_weight = KLWeight(0.5)
    trace = poutine.trace(kl_weight(guide)).get_trace(Y)
    assert trace.nodes["r"]["scale"] == 0.5 and trace.nodes["a"]["scale"] == 0.5
    trace = poutine.trace(kl_weight(with_penalty)).get_trace(Y)
    assert trace.nodes["penalty"]["scale"] == 1.0 and trace.nodes["y"]["scale"] == 1.0
    assert trace.nodes["w"]["scale"] == 0.5
