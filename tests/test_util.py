import math

import pytest
import torch

from pyro_bnn.util import all_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("position", [0, 517, -1])
def test_all_finite_finds_one_bad_value_anywhere(dtype, bad, position):
    value = torch.rand(64, 33, dtype=dtype)
    assert all_finite(value)
    value.view(-1)[position] = bad
    assert not all_finite(value)
    assert all_finite(value) == bool(torch.isfinite(value).all())


def test_all_finite_of_integer_empty_and_complex_tensors():
    assert all_finite(torch.arange(5))
    assert all_finite(torch.tensor([True, False]))
    assert all_finite(torch.empty(0, 3))
    value = torch.zeros(4, dtype=torch.complex64)
    assert all_finite(value)
    value[2] = complex(0.0, math.inf)
    assert not all_finite(value)
