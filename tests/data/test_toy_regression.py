import pytest
import torch

from pyro_bnn.data import (
    CUBIC_NOISE_STD,
    SINUSOID_NOISE_STD,
    cubic_function,
    sinusoid_function,
    toy_cubic,
    toy_sinusoid,
)


def _check_layout(dataset, num_points):
    x, y = dataset.tensors
    assert x.shape == (num_points, 1) and y.shape == (num_points,)
    assert x.dtype == y.dtype == torch.float32
    return x.squeeze(-1), y


def test_cubic_default():
    x, y = _check_layout(toy_cubic(), 20)
    assert x.min() >= -4 and x.max() <= 4


def test_cubic_noise_std():
    x, y = _check_layout(toy_cubic(num_points=20000, seed=1), 20000)
    assert x.min() >= -4 and x.max() <= 4
    # Covers the interval evenly.
    assert x.min() < -3.99 and x.max() > 3.99 and abs(x.mean()) < 0.1
    residual = y - cubic_function(x)
    assert residual.mean().abs() < 0.1
    assert residual.std().item() == pytest.approx(CUBIC_NOISE_STD, rel=0.03)


def test_cubic_function():
    x = torch.tensor([[-2.0], [0.5], [3.0]])
    assert torch.equal(cubic_function(x), torch.tensor([[-8.0], [0.125], [27.0]]))


def test_sinusoid_default():
    x, y = _check_layout(toy_sinusoid(), 20)
    left, right = x[:12], x[12:]
    assert left.min() >= 0 and left.max() <= 0.6
    assert right.min() >= 0.8 and right.max() <= 1
    assert not torch.equal(y, sinusoid_function(x))


def test_sinusoid_many_points():
    x, y = _check_layout(toy_sinusoid(seed=1, num_points=5000), 5000)
    assert ((x >= 0) & (x <= 0.6)).sum() == 3000
    assert ((x >= 0.8) & (x <= 1)).sum() == 2000
    # The noise enters through the input: |f(x + e) - f(x)| <= |e| max|f'| with
    # max|f'| <= 1 + 4 + 13, and |e| < 5 standard deviations with overwhelming probability.
    residual = y - sinusoid_function(x)
    assert residual.abs().max() < 18 * 5 * SINUSOID_NOISE_STD
    assert residual.std() > SINUSOID_NOISE_STD


def test_sinusoid_function():
    x = torch.tensor([0.0, 0.25])
    expected = x + torch.sin(4 * x) + torch.sin(13 * x)
    assert torch.allclose(sinusoid_function(x), expected)


@pytest.mark.parametrize("make", [toy_cubic, toy_sinusoid], ids=["cubic", "sinusoid"])
def test_seeded_and_independent_of_global_rng(make):
    torch.manual_seed(1)
    first = make(seed=5).tensors
    torch.manual_seed(2)
    torch.rand(10)
    second = make(seed=5).tensors
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[1], make(seed=6).tensors[1])
    # Nor do they consume the global random state.
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    make(seed=5)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("make", [toy_cubic, toy_sinusoid], ids=["cubic", "sinusoid"])
def test_bad_num_points(make):
    with pytest.raises(ValueError, match="num_points"):
        make(num_points=0)
