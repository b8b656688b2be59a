import pytest
import scipy.stats
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from pyro_bnn.data.out_of_distribution import (
    FASHION_MNIST_PIXEL_MEAN,
    FASHION_MNIST_PIXEL_STD,
    noise_images,
    split_classes,
    upsampled_digits,
)


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_noise_images_are_laid_out_like_fashion_mnist(kind):
    images = noise_images(5, kind=kind)
    assert images.shape == (5, 1, 28, 28)
    assert images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert noise_images(3, shape=(3, 4, 5), kind=kind).shape == (3, 3, 4, 5)


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_noise_images_are_seeded_and_leave_the_global_state(kind):
    state = torch.random.get_rng_state()
    first = noise_images(4, kind=kind, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first, noise_images(4, kind=kind, seed=3))
    assert not torch.equal(first, noise_images(4, kind=kind, seed=4))


def test_gaussian_noise_takes_the_reference_statistics():
    # Pixels alternating 0.45 and 0.55: mean 0.5, standard deviation 0.05, so clipping to
    # [0, 1] (10 standard deviations away) does not matter.
    reference = torch.tensor([0.45, 0.55]).repeat(50).reshape(4, 1, 5, 5)
    images = noise_images(100, kind="gaussian", reference=reference)
    assert images.mean().item() == pytest.approx(0.5, abs=2e-3)
    assert images.std().item() == pytest.approx(0.05, rel=0.02)
    # A dataset is read through its first tensor.
    dataset = TensorDataset(reference, torch.zeros(4, dtype=torch.long))
    assert torch.equal(noise_images(3, reference=dataset), noise_images(3, reference=reference))


def test_gaussian_noise_defaults_to_fashion_mnist_statistics():
    # Clipping N(m, s^2) to [0, 1] puts a mass Phi(-m / s) at 0 and 1 - Phi((1 - m) / s) at 1.
    images = noise_images(40)
    mean, std = FASHION_MNIST_PIXEL_MEAN, FASHION_MNIST_PIXEL_STD
    at_zero = scipy.stats.norm.cdf(-mean / std)
    at_one = scipy.stats.norm.sf((1 - mean) / std)
    assert (images == 0).double().mean().item() == pytest.approx(at_zero, abs=0.01)
    assert (images == 1).double().mean().item() == pytest.approx(at_one, abs=0.005)
    # Between them the pixels are the unclipped normal's.
    inner = images[(images > 0) & (images < 1)].double()
    truncated = scipy.stats.truncnorm(-mean / std, (1 - mean) / std, loc=mean, scale=std)
    assert inner.mean().item() == pytest.approx(truncated.mean(), abs=0.005)


def test_uniform_noise_covers_the_pixel_range():
    images = noise_images(40, kind="uniform")
    # Uniform(0, 1): mean 1/2, variance 1/12.
    assert images.mean().item() == pytest.approx(0.5, abs=0.005)
    assert images.var().item() == pytest.approx(1 / 12, rel=0.02)
    # The reference only shapes Gaussian noise.
    reference = torch.full((2, 1, 28, 28), 0.9)
    reference[0] = 0.1
    assert torch.equal(noise_images(2, kind="uniform", reference=reference), images[:2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num": 0}, "num must be a positive integer"),
        ({"num": 2.5}, "num must be an integer"),
        ({"num": 2, "shape": (1, 0, 28)}, "shape must hold positive sizes"),
        ({"num": 2, "shape": 28}, "shape a tuple of integers"),
        ({"num": 2, "kind": "salt-and-pepper"}, "unknown kind 'salt-and-pepper'"),
        ({"num": 2, "reference": torch.tensor([0.5, float("nan")])}, "reference contains NaN"),
        ({"num": 2, "reference": torch.tensor([0.5])}, "at least two pixels"),
        ({"num": 2, "reference": [0.1, 0.2]}, "reference must be a tensor"),
    ],
)
def test_noise_images_reject_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        noise_images(**kwargs)


def test_upsampled_digits():
    images = upsampled_digits()
    assert images.shape == (1797, 1, 28, 28)
    assert images.dtype == torch.float32
    assert images.min() == 0 and images.max() <= 1
    assert images.max() > 0.99


def test_upsampled_digits_interpolate_the_scaled_digits():
    digits = torch.from_numpy(load_digits().images).double() / 16
    # At their own size the digits come back unchanged, scaled from 0..16 to [0, 1].
    same = upsampled_digits(size=8)
    assert torch.allclose(same.squeeze(1).double(), digits, atol=1e-7)
    # Doubling the size, output pixel 1 lies at input coordinate (1 + 0.5) / 2 - 0.5 = 0.25
    # (align_corners=False), so output (1, 1) mixes the input's top-left 2x2 block with
    # weights 0.75 and 0.25 along each axis.
    enlarged = upsampled_digits(size=16).squeeze(1).double()
    block = digits[:, :2, :2]
    weights = torch.tensor([0.75, 0.25], dtype=torch.float64)
    expected = torch.einsum("i,nij,j->n", weights, block, weights)
    assert torch.allclose(enlarged[:, 1, 1], expected, atol=1e-6)
    # Corner pixels clamp to the input's corner.
    assert torch.allclose(enlarged[:, 0, 0], digits[:, 0, 0], atol=1e-6)


@pytest.mark.parametrize("size, match", [(0, "positive integer"), (2.5, "positive integer")])
def test_upsampled_digits_reject_bad_size(size, match):
    with pytest.raises(ValueError, match=match):
        upsampled_digits(size=size)


def test_split_classes_by_hand():
    inputs = torch.arange(8.0)[:, None]
    labels = torch.tensor([3, 0, 1, 3, 2, 1, 0, 4])
    inside, rest = split_classes(TensorDataset(inputs, labels), [3, 1])
    # Labels 3 and 1 sit at positions 0, 2, 3 and 5; in sorted order 1 -> 0 and 3 -> 1.
    assert inside.tensors[0].squeeze(1).tolist() == [0.0, 2.0, 3.0, 5.0]
    assert inside.tensors[1].tolist() == [1, 0, 1, 0]
    assert inside.tensors[1].dtype == torch.int64
    # The rest keeps its labels.
    assert rest.tensors[0].squeeze(1).tolist() == [1.0, 4.0, 6.0, 7.0]
    assert rest.tensors[1].tolist() == [0, 2, 0, 4]


def test_split_classes_five_in_five_out():
    images = torch.rand(40, 1, 28, 28)
    labels = torch.arange(40) % 10
    inside, rest = split_classes(TensorDataset(images, labels), (8, 0, 4, 2, 6))
    assert len(inside) == len(rest) == 20
    assert sorted(set(inside.tensors[1].tolist())) == [0, 1, 2, 3, 4]
    # Class 2c of the original becomes class c.
    assert torch.equal(inside.tensors[1], labels[labels % 2 == 0] // 2)
    assert torch.equal(inside.tensors[0], images[labels % 2 == 0])
    assert set(rest.tensors[1].tolist()) == {1, 3, 5, 7, 9}
    assert torch.equal(rest.tensors[0], images[labels % 2 == 1])
    # A tensor of classes works too.
    again, _ = split_classes(TensorDataset(images, labels), torch.tensor([0, 2, 4, 6, 8]))
    assert torch.equal(again.tensors[1], inside.tensors[1])


@pytest.mark.parametrize(
    "dataset, classes, match",
    [
        (TensorDataset(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])), [], "classes is empty"),
        (
            TensorDataset(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])),
            [1, 1],
            "classes must not repeat",
        ),
        (
            TensorDataset(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])),
            [1, 5],
            r"classes \[5\] do not occur",
        ),
        (
            TensorDataset(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])),
            [0.5],
            "classes must be integers",
        ),
        (
            TensorDataset(torch.zeros(4, 2), torch.tensor([0.0, 1.0, 0.0, 1.0])),
            [0],
            r"labels must be integers of shape \(N,\)",
        ),
        (
            TensorDataset(torch.zeros(4, 2), torch.zeros(4, 1, dtype=torch.long)),
            [0],
            r"labels must be integers of shape \(N,\)",
        ),
        (
            TensorDataset(torch.zeros(4, 2), torch.tensor([0, -1, 0, 1])),
            [0],
            "labels must be non-negative",
        ),
        (TensorDataset(torch.zeros(4, 2)), [0], "TensorDataset of"),
        ([(torch.zeros(2), 0)], [0], "TensorDataset of"),
    ],
)
def test_split_classes_rejects_bad_input(dataset, classes, match):
    with pytest.raises(ValueError, match=match):
        split_classes(dataset, classes)
