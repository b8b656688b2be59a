import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_bnn.infer import KLWeight, blundell_weight, warmup_weight


@pytest.mark.parametrize("num_steps", [1, 2, 5, 20])
def test_blundell_weights_match_the_paper(num_steps):
    weights = [blundell_weight(i, num_steps) for i in range(num_steps)]
    # pi_i = 2^(M - i) / (2^M - 1), i = 1..M, times the plate factor M.
    expected = [
        num_steps * 2 ** (num_steps - i) / (2**num_steps - 1) for i in range(1, 1 + num_steps)
    ]
    assert weights == pytest.approx(expected)
    assert sum(weights) == pytest.approx(num_steps)


def test_blundell_weights_stay_finite_for_long_epochs():
    weights = [blundell_weight(i, 2000) for i in (0, 1, 1999)]
    assert weights[0] == pytest.approx(1000.0)
    assert all(math.isfinite(w) and w >= 0 for w in weights)
    with pytest.raises(ValueError, match="step"):
        blundell_weight(5, 5)


def test_warmup_weight():
    assert warmup_weight(0.0, 10) == 0.0
    assert warmup_weight(2.5, 10) == 0.25
    assert warmup_weight(12, 10) == 1.0
    assert warmup_weight(0.0, 0) == 1.0


def test_kl_weight_scales_only_latent_sites():
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 10, subsample_size=5):
            pyro.sample("y", dist.Normal(z, 1.0), obs=torch.zeros(5))

    handler = KLWeight(0.25)
    trace = poutine.trace(handler(model)).get_trace()
    assert trace.nodes["z"]["scale"] == 0.25
    assert trace.nodes["y"]["scale"] == 2.0
    handler.weight = 1.0
    trace = poutine.trace(handler(model)).get_trace()
    assert trace.nodes["z"]["scale"] == 1.0
